"""Hot model swap for the classify stage.

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from finsent.drift_monitor import DriftMonitor
from finsent.metrics import ClassifyMetrics
from ingest import Classifier
from model import Engine
from model.registry import ModelRegistry

log = logging.getLogger("finsent.hotswap")


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


def holder_classifier(
    holder: EngineHolder,
    drift: DriftMonitor | None = None,
    on_truncated: Callable[[int], None] | None = None,
) -> Classifier:
    """ingest's classifier contract over the holder: one engine per batch, model_version per result.

    ``on_truncated`` is told how many texts of each batch were longer than the token budget.
    """

    def classify(texts: Sequence[str]) -> list[Mapping[str, Any]]:
        engine = holder.engine  # one reference for the whole batch
        predictions = engine.predict(list(texts))
        results: list[Mapping[str, Any]] = [
            {
                "topic": prediction.topic,
                "topic_score": prediction.topic_score,
                "sentiment": prediction.sentiment,
                "sentiment_scores": prediction.sentiment_scores,
                "model_version": engine.version,
            }
            for prediction in predictions
        ]
        truncated = sum(prediction.truncated for prediction in predictions)
        if on_truncated is not None and truncated:
            on_truncated(truncated)
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
        metrics: ClassifyMetrics,
        interval: float,
        on_swap: Callable[[Engine], None] | None = None,
    ) -> None:
        self.registry = registry
        self.holder = holder
        self.load = load
        self.metrics = metrics
        self.interval = interval
        self.on_swap = on_swap
        self._failed_version: str | None = None
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
            self._failed_version = (
                None  # CURRENT came back: promoting the failed version again is a new attempt
            )
        if version is None or version == serving or version == self._failed_version:
            return False
        try:
            engine = self.load(self.registry.version_dir(version))
            if engine.version != version:
                raise ValueError(f"manifest version {engine.version!r} does not match folder {version!r}")
        except Exception as error:
            self._failed_version = version
            self.metrics.model_load_failures_total.inc()
            log.error("cannot load model version %s (%s); still serving %s", version, error, serving)
            return False
        self._failed_version = None
        self.holder.swap(engine)
        self.metrics.set_model(engine.version, engine.variant, engine.providers[0])
        self.metrics.model_swaps_total.inc()
        if self.on_swap is not None:
            self.on_swap(engine)
        log.info("model swapped: %s -> %s (between batches)", serving, version)
        return True
