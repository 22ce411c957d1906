"""Hot model swap and drift signals for the classify stage.

`EngineHolder` holds the engine that scores the next micro-batch. The classifier built by
`holder_classifier` takes ONE engine reference per batch, so a batch is never split across
versions, and every result carries the `model_version` it was scored with. `RegistryWatcher`
polls the registry's CURRENT pointer in its own thread; a new version is loaded completely
(every file hash verified, ONNX session built) off the hot path and only then swapped in. A
version that fails to load is logged and counted, and the old engine keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from finsent.metrics import ServiceMetrics
from ingest import Classifier
from model import SENTIMENT_LABELS, TOPIC_LABELS, Engine
from model.drift import DriftTracker, reference_from_data, reference_from_manifest
from model.registry import ModelRegistry

log = logging.getLogger("finsent.hotswap")
_TOPIC_INDEX = {name: index for index, name in enumerate(TOPIC_LABELS)}
_SENTIMENT_INDEX = {name: index for index, name in enumerate(SENTIMENT_LABELS)}


class EngineHolder:
    """The engine for the next batch; swap() replaces it atomically between batches."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine to score the next batch with."""
        with self._lock:
            return self._engine

    def swap(self, engine: Engine) -> Engine:
        """Install a new engine; returns the old one (batches already running keep using it)."""
        with self._lock:
            old, self._engine = self._engine, engine
        return old


class DriftMonitor:
    """Feeds predictions into a DriftTracker, exports its gauges, and requests a retrain past a threshold.

    One request per serving version: after a request (or finding one already waiting), the next
    needs a newly swapped-in version with a full window of its own, or REQUEST_COOLDOWN_SECONDS.
    A run that rejects its challenger leaves the same model and the same drift; asking again at
    once would retrain back to back for as long as the drift lasts.
    """

    REQUEST_COOLDOWN_SECONDS = 6 * 3600.0

    def __init__(
        self,
        metrics: ServiceMetrics,
        window: int,
        low_confidence: float,
        threshold: float | None = None,
        registry: ModelRegistry | None = None,
        data_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.window = window
        self.low_confidence = low_confidence
        self.threshold = threshold
        self.registry = registry
        self.data_dir = data_dir
        self.clock = clock
        self._lock = threading.Lock()
        self.tracker = DriftTracker(None, window, low_confidence)
        self._requested_at: float | None = None  # when this serving version last asked for a retrain

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
            self._requested_at = None

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
                written = self.registry.request_retrain(f"{snapshot.task} prediction drift", details)
                with self._lock:
                    self._requested_at = self.clock()  # a request already waiting speaks for us too
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
            return (
                self._requested_at is None
                or self.clock() - self._requested_at >= self.REQUEST_COOLDOWN_SECONDS
            )


def holder_classifier(holder: EngineHolder, drift: DriftMonitor | None = None) -> Classifier:
    """ingest's classifier contract over the holder: one engine per batch, model_version per result."""

    def classify(texts: Sequence[str]) -> list[Mapping[str, Any]]:
        engine = holder.engine  # one reference for the whole batch
        results: list[Mapping[str, Any]] = [
            {
                "topic": prediction.topic,
                "topic_score": prediction.topic_score,
                "sentiment": prediction.sentiment,
                "sentiment_scores": prediction.sentiment_scores,
                "model_version": engine.version,
            }
            for prediction in engine.predict(list(texts))
        ]
        if drift is not None and results:
            drift.observe(results)
        return results

    return classify


class RegistryWatcher:
    """Polls the registry's CURRENT pointer and swaps in a new version once it is fully loaded."""

    def __init__(
        self,
        registry: ModelRegistry,
        holder: EngineHolder,
        load: Callable[[Path], Engine],
        metrics: ServiceMetrics,
        interval: float,
        on_swap: Callable[[Engine], None] | None = None,
    ) -> None:
        self.registry = registry
        self.holder = holder
        self.load = load
        self.metrics = metrics
        self.interval = interval
        self.on_swap = on_swap
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> None:
        """Start polling in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (does not wait for a load in progress)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watcher must outlive any surprise
                log.exception("model watcher check failed")

    def check(self) -> bool:
        """Swap if CURRENT names another version than the one serving; True when it swapped."""
        version = self.registry.current_version()
        serving = self.holder.engine.version
        if version == serving:
            self._failed = None  # CURRENT came back: promoting the failed version again is a new attempt
        if version is None or version == serving or version == self._failed:
            return False
        try:
            engine = self.load(self.registry.version_dir(version))
            if engine.version != version:
                raise ValueError(f"manifest version {engine.version!r} does not match folder {version!r}")
        except Exception as error:
            self._failed = version
            self.metrics.model_load_failures_total.inc()
            log.error("cannot load model version %s (%s); still serving %s", version, error, serving)
            return False
        self._failed = None
        self.holder.swap(engine)
        self.metrics.set_model(engine.version, engine.variant, engine.providers[0])
        self.metrics.model_swaps_total.inc()
        if self.on_swap is not None:
            self.on_swap(engine)
        log.info("model swapped: %s -> %s (between batches)", serving, version)
        return True
