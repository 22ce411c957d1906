"""Drift signals of the classify stage: rolling prediction distributions, their gauges, retrain requests."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from finsent.metrics import ClassifyMetrics
from model import SENTIMENT_LABELS, TOPIC_LABELS, Engine
from model.drift import DriftTracker, reference_from_data, reference_from_manifest
from model.registry import ModelRegistry

log = logging.getLogger("finsent.drift_monitor")
_TOPIC_INDEX = {name: index for index, name in enumerate(TOPIC_LABELS)}
_SENTIMENT_INDEX = {name: index for index, name in enumerate(SENTIMENT_LABELS)}
# After a request that could not be written (read-only registry, full disk): when to try again.
FAILED_REQUEST_RETRY_S = 300.0


class DriftMonitor:
    """Feeds predictions into a DriftTracker, exports its gauges, and requests a retrain past a threshold.

    One request per serving version: after a request (or finding one already waiting), the next
    needs a newly swapped-in version with a full window of its own, or ``request_cooldown`` seconds.
    A run that rejects its challenger leaves the same model and the same drift; asking again at
    once would retrain back to back for as long as the drift lasts.
    """

    def __init__(
        self,
        metrics: ClassifyMetrics,
        window: int,
        low_confidence: float,
        threshold: float | None = None,
        registry: ModelRegistry | None = None,
        data_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        request_cooldown: float = 6 * 3600.0,
    ) -> None:
        self.metrics = metrics
        self.window = window
        self.low_confidence = low_confidence
        self.threshold = threshold
        self.registry = registry
        self.data_dir = data_dir
        self.clock = clock
        self.request_cooldown = request_cooldown
        self._lock = threading.Lock()
        self.tracker = DriftTracker(None, window, low_confidence)
        self._next_request_at: float | None = None  # None: this serving version may ask now

    def reset(self, engine: Engine) -> None:
        """Start a fresh window against the training distribution of engine's model."""
        reference = reference_from_manifest(engine.manifest)
        if reference is None and self.data_dir is not None and self.data_dir.is_dir():
            try:
                reference = reference_from_data(self.data_dir)
            except (OSError, ValueError, KeyError) as error:
                log.warning("no training label distribution for drift (%s)", error)
        if reference is None:
            log.warning(
                "model %s records no training label distribution and no data/ folder is here: "
                "finsent_prediction_drift is not exported and drift cannot request a retrain",
                engine.version,
            )
        with self._lock:
            self.tracker = DriftTracker(reference, self.window, self.low_confidence)
            self._next_request_at = None

    def observe(self, results: Sequence[Mapping[str, Any]]) -> None:
        """Add one batch's results and refresh the gauges."""
        with self._lock:
            tracker = self.tracker
            tracker.observe(
                "topic",
                [_TOPIC_INDEX[r["topic"]] for r in results],
                [float(r["topic_score"]) for r in results],
            )
            tracker.observe(
                "sentiment",
                [_SENTIMENT_INDEX[r["sentiment"]] for r in results],
                [max(r["sentiment_scores"].values()) for r in results],
            )
            snapshots = [tracker.snapshot(task) for task in ("topic", "sentiment")]
        for snapshot in snapshots:
            self.metrics.set_drift(
                snapshot.task, snapshot.divergence, snapshot.confidence_mean, snapshot.low_confidence_share
            )
            if (
                self.threshold is not None
                and self.registry is not None
                and snapshot.divergence is not None
                and snapshot.count >= self.window
                and snapshot.divergence > self.threshold
                and self._may_request()
            ):
                details = {"task": snapshot.task, "divergence": snapshot.divergence, "window": snapshot.count}
                try:
                    written = self.registry.request_retrain(f"{snapshot.task} prediction drift", details)
                except OSError as error:
                    # Runs inside the classifier: raising here would dead-letter the batch it scored.
                    self._request_failed(self.registry.root, error)
                    continue
                with self._lock:
                    # Also when one was already waiting: it speaks for this version too.
                    self._next_request_at = self.clock() + self.request_cooldown
                if written:
                    self.metrics.retrain_requests_total.inc()
                    log.warning(
                        "%s prediction drift %.4f > %.4f over %d predictions: retrain requested in %s",
                        snapshot.task,
                        snapshot.divergence,
                        self.threshold,
                        snapshot.count,
                        self.registry.root,
                    )

    def _may_request(self) -> bool:
        with self._lock:
            return self._next_request_at is None or self.clock() >= self._next_request_at

    def _request_failed(self, registry_root: Path, error: OSError) -> None:
        """Count and log a request that could not be written; try again after FAILED_REQUEST_RETRY_S."""
        self.metrics.health.stream_errors.labels(stage="classify", kind="retrain_request").inc()
        log.warning(
            "cannot write the retrain request in %s (%s); scoring goes on, retrying in %.0fs",
            registry_root,
            error,
            FAILED_REQUEST_RETRY_S,
        )
        with self._lock:
            self._next_request_at = self.clock() + FAILED_REQUEST_RETRY_S
