"""`finsent demo`: embedded broker + `finsent run` (all stages) + a replayed stream with a negative surge.

The bundled stream (finsent/demo/surge_stream.csv) is stock tweets with a burst of negative oil
headlines about 12 s in; the shipped rules (finsent/demo/rules.yaml) fire on it within about a
minute of start and resolve about a minute after the surge has passed. The live table shows per-topic
volume and negative share, and the alerts as they fire and resolve (read back from the `alerts` topic,
where the demo's Kafka subscription delivers them). `--webhook-url` adds a signed webhook subscription.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from finsent.broker import BrokerError, EmbeddedBroker
from finsent.commands.common import Subparsers, configure_logging
from finsent.errors import UsageError
from finsent.live_view import show
from finsent.replay import (
    MAX_RATE,
    MIN_RATE,
    Headline,
    check_rate,
    load_headlines,
    replay,
    stop_on_first_signal,
)

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"
BUNDLED_STREAM = "surge_stream.csv"
DEFAULT_RULES = DEMO_DIR / "rules.yaml"
DEFAULT_WEBHOOK_SECRET = "finsent-demo-secret"
# Short windows and buckets so the demo shows a surge within a minute (production: 5m/15m/1h, 10 s).
DEMO_MONITOR = [
    "--windows",
    "1m,5m",
    "--bucket-seconds",
    "5",
    "--min-volume",
    "10",
    "--baseline-min-samples",
    "10",
    "--baseline-half-life",
    "10m",
    "--allowed-lateness",
    "30s",
    "--eval-interval",
    "2",
    "--checkpoint-interval",
    "5",
]


def bundled_stream() -> Path:
    """The bundled replay stream with the injected surge (finsent/demo/surge_stream.csv)."""
    path = DEMO_DIR / BUNDLED_STREAM
    if not path.is_file():
        raise UsageError(f"bundled stream {path} not found; pass --file")
    return path


def register(subparsers: Subparsers) -> None:
    """Add the demo subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="embedded broker + all stages + a replayed stream with a negative surge, with a live table",
        description="Start the embedded broker, `finsent run` (classify, monitor and alerts) with the demo "
        "rules, and a replay of the bundled stream: stock tweets with a burst of negative oil news about "
        "12 s in, repeated every ~3 minutes. Shows per topic volume and negative share, and alerts as they "
        "fire and resolve. Runs until Ctrl-C or --duration. Without a terminal (or with CI=true) the table "
        "is printed periodically instead.",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--rate",
        type=float,
        default=25.0,
        help=f"replayed messages per second, {MIN_RATE:g} to {MAX_RATE:g} (default 25)",
    )
    parser.add_argument(
        "--file", type=Path, default=None, help="replay this CSV/JSONL instead of the bundled stream"
    )
    parser.add_argument(
        "--rules", type=Path, default=None, help="alert rules YAML (default: finsent/demo/rules.yaml)"
    )
    parser.add_argument(
        "--webhook-url", default=None, help="also deliver alerts to this URL (signed webhook subscription)"
    )
    parser.add_argument(
        "--webhook-secret",
        default=None,
        help=f"HMAC secret of the webhook subscription (default {DEFAULT_WEBHOOK_SECRET!r})",
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="model directory (default: settings, shipped)"
    )
    parser.add_argument("--metrics-port", type=int, default=0, help="metrics port (default: any free port)")
    parser.add_argument(
        "--refresh", type=float, default=None, help="seconds between tables (default 1 live, 5 plain)"
    )
    parser.set_defaults(handler=run)


def _live_terminal() -> bool:
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return sys.stdout.isatty() and not ci


def write_subscriptions(path: Path, webhook_url: str | None, webhook_secret: str | None) -> None:
    """The demo's subscriptions: the `alerts` Kafka topic (read back by the table), plus a webhook."""
    subscriptions: list[dict[str, Any]] = [{"name": "demo-kafka", "kind": "kafka", "topic": "alerts"}]
    if webhook_url is not None:
        subscriptions.append(
            {
                "name": "demo-webhook",
                "kind": "webhook",
                "url": webhook_url,
                "secret": webhook_secret or DEFAULT_WEBHOOK_SECRET,
                "backoff_max": "10s",
            }
        )
    # JSON is YAML: no quoting surprises for URLs or secrets.
    path.write_text(json.dumps({"subscriptions": subscriptions}, indent=2), encoding="utf-8")


def _positive(value: float | None, option: str) -> None:
    """Reject a value that is not a finite number above 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{option} must be a finite number above 0, got {value}")


def check_args(args: argparse.Namespace) -> None:
    """Reject a duration or refresh that is not a finite positive number, or a rate out of range, up front."""
    _positive(args.duration, "--duration")
    check_rate(args.rate)
    _positive(args.refresh, "--refresh")


def run(args: argparse.Namespace) -> int:
    """Run everything until --duration, Ctrl-C or SIGTERM; exit 0."""
    check_args(args)
    headlines = load_headlines(args.file or bundled_stream())
    configure_logging("WARNING")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # connection chatter would tear the table
    with tempfile.TemporaryDirectory(prefix="finsent-demo-") as scratch:
        work = Path(scratch)
        subscriptions = work / "subscriptions.yaml"
        write_subscriptions(subscriptions, args.webhook_url, args.webhook_secret)
        broker = EmbeddedBroker()
        running = Running()
        # SIGTERM stops the demo as Ctrl-C does: feeder, service and broker are stopped, exit 0.
        with stop_on_first_signal() as stop:
            try:
                _serve(args, broker, _service_command(args, work, subscriptions), headlines, stop, running)
            except KeyboardInterrupt:  # a second Ctrl-C/SIGTERM (the first sets stop)
                pass
            finally:
                _shut_down(running, broker, stop)
    return 0


def _shut_down(running: Running, broker: EmbeddedBroker, stop: threading.Event) -> None:
    """Stop the replay, the service and the broker; another Ctrl-C/SIGTERM meanwhile kills the service."""
    stop.set()
    try:
        if running.feeder is not None:
            running.feeder.join(timeout=5)
        if running.service is not None:
            _stop_service(running.service)
    except KeyboardInterrupt:  # impatient: kill the service instead of waiting for its clean stop
        if running.service is not None and running.service.poll() is None:
            running.service.kill()
            running.service.wait()
    finally:
        # Whatever the signals, the broker must not outlive the demo.
        ignored = {
            signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            broker.stop()
        finally:
            for signum, handler in ignored.items():
                signal.signal(signum, handler)


@dataclass
class Running:
    """What the demo started besides the broker, for the shutdown to stop."""

    feeder: threading.Thread | None = None
    service: subprocess.Popen[bytes] | None = None


def _service_command(args: argparse.Namespace, work: Path, subscriptions: Path) -> list[str]:
    """`python -m finsent run` with the demo's settings, less the broker address (appended by _serve)."""
    command = [sys.executable, "-m", "finsent", "run"]
    command += ["--group-id", "finsent-demo", "--metrics-host", "127.0.0.1", "--log-level", "WARNING"]
    command += ["--metrics-port", str(args.metrics_port)]
    # Short group timings: the embedded broker holds a join for a good part of the session timeout.
    command += ["--session-timeout-ms", "6000", "--heartbeat-interval-ms", "1000"]
    command += ["--rules", str(args.rules or DEFAULT_RULES), "--subscriptions", str(subscriptions)]
    command += ["--state-dir", str(work / "state"), *DEMO_MONITOR]
    if args.model is not None:
        command += ["--model-dir", str(args.model)]
    return command


def _serve(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    command: list[str],
    headlines: list[Headline],
    stop: threading.Event,
    running: Running,
) -> None:
    """Start the broker, the service and the replay; show the table until --duration."""
    try:
        broker.start()
    except BrokerError as error:
        raise UsageError(str(error)) from None
    # The service runs as its own process, exactly as `finsent run` would.
    service = running.service = subprocess.Popen([*command, "--bootstrap-servers", broker.bootstrap])
    running.feeder = threading.Thread(
        target=_feed, args=(broker.bootstrap, headlines, args.rate, stop), name="demo-replay", daemon=True
    )
    running.feeder.start()
    print(
        f"finsent demo: broker {broker.bootstrap}, service pid {service.pid}, replaying "
        f"{len(headlines)} headlines at {args.rate:g}/s"
        + ("" if args.duration is None else f" for {args.duration:g}s")
        + ("" if args.webhook_url is None else f"; alerts also to {args.webhook_url}"),
        flush=True,
    )
    live = _live_terminal()
    show(service, broker.bootstrap, args.duration, args.refresh or (1.0 if live else 5.0), live, stop)


def _feed(bootstrap: str, headlines: list[Headline], rate: float, stop: threading.Event) -> None:
    """Replay the stream in a loop until stopped (the producer lives in this thread)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        replay(
            lambda message: producer.send("news.raw", value=json.dumps(message).encode("utf-8")),
            headlines,
            source="demo-replay",
            rate=rate,
            loop=True,
            stop=stop,
        )
    finally:
        producer.close(timeout=5)


def _stop_service(service: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the service finishes its batch, checkpoints and commits), SIGKILL if it hangs."""
    if service.poll() is None:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
