"""The classify stage: news.raw -> model engine (hot-swappable) -> news.scored / news.dlq, with its metrics."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry

from finsent.config import ServiceConfig
from finsent.drift_monitor import DriftMonitor
from finsent.errors import UsageError
from finsent.hotswap import EngineHolder, RegistryWatcher, holder_classifier
from finsent.metrics import ClassifyMetrics
from ingest import StreamLoop
from model import SENTIMENT_LABELS, TOPIC_LABELS, Engine, ModelIntegrityError
from model.data import DEFAULT_DATA_DIR
from model.registry import ModelRegistry, RegistryError

log = logging.getLogger("finsent.classify_stage")


def load_engine(config: ServiceConfig, model_dir: Path | None = None) -> Engine:
    """The engine the configuration names (or model_dir); problems become usage errors naming the setting."""
    model_dir = model_dir or config.model_dir
    try:
        return Engine(
            model_dir,
            variant=config.variant,
            device=cast(Any, config.device),  # validated against the same choices
            threads=config.threads,
            max_tokens=config.max_tokens,
            # Idle ORT threads spin by default and then steal the core the Kafka loop needs
            # (e2e through tansu: 180-189 msg/s spinning, 188-215 not; bench/e2e_throughput.py).
            spin=False,
        )
    except (ModelIntegrityError, ValueError, RuntimeError, FileNotFoundError) as error:
        raise UsageError(f"model_dir {model_dir}: {error}") from None


class ClassifyStage:
    """The classify stage: engine (hot-swappable), stream loop and its metrics; HTTP is the stage runner's."""

    def __init__(
        self,
        config: ServiceConfig,
        engine: Engine | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.model_registry: ModelRegistry | None = None
        if engine is None and config.registry is not None:
            self.model_registry = ModelRegistry(config.registry)
            try:
                if self.model_registry.init_from(config.model_dir):
                    log.info("registry %s was empty: imported %s", config.registry, config.model_dir)
                current_dir = self.model_registry.current_dir()
            except (RegistryError, ModelIntegrityError, OSError) as error:
                raise UsageError(f"registry {config.registry}: {error}") from None
            engine = load_engine(config, current_dir)
        self.engine = engine or load_engine(config)
        # Hot swap: the classifier reads the holder once per batch; the watcher replaces its engine.
        self.holder = EngineHolder(self.engine)
        self.metrics = ClassifyMetrics(registry)
        self.metrics.set_model(self.engine.version, self.engine.variant, self.engine.providers[0])
        self.metrics.declare_labels(TOPIC_LABELS, SENTIMENT_LABELS)
        self.drift = DriftMonitor(
            self.metrics,
            config.drift_window,
            config.low_confidence_threshold,
            config.drift_retrain_threshold,
            self.model_registry,
            DEFAULT_DATA_DIR,
            request_cooldown=config.drift_request_cooldown,
        )
        self.drift.reset(self.engine)
        self.watcher: RegistryWatcher | None = None
        if self.model_registry is not None:
            self.watcher = RegistryWatcher(
                self.model_registry,
                self.holder,
                lambda path: load_engine(config, path),
                self.metrics,
                config.swap_poll_interval,
                on_swap=self._swapped,
            )
        self.loop = StreamLoop(
            config.loop_settings(self.engine.version),
            config.kafka_settings(),
            holder_classifier(self.holder, self.drift, self.metrics.truncated_total.inc),
            observer=self.metrics,
        )
        self._failed = False

    @property
    def failed(self) -> bool:
        """True once the stream loop died."""
        return self._failed

    def stop(self) -> None:
        """Ask the loop to finish the in-flight batch, commit and return."""
        self.loop.request_stop()

    def run(self) -> int:
        """Serve until stopped; 0 after a clean stop, 1 if the loop died."""
        log.info(
            "model %s (%s, %s); reading %s from %s as group %s",
            self.engine.version,
            self.engine.variant,
            self.engine.providers[0],
            self.config.input_topic,
            self.config.bootstrap_servers,
            self.config.group_id,
        )
        if self.watcher is not None:
            self.watcher.start()
        try:
            self.loop.run()
        except Exception:
            self._failed = True
            log.exception("stream loop failed")
            return 1
        finally:
            if self.watcher is not None:
                self.watcher.stop()
        return 0

    def _swapped(self, engine: Engine) -> None:
        """After a hot swap: remember the new engine and restart the drift window against its training data."""
        self.engine = engine
        self.drift.reset(engine)

    def start_thread(self) -> threading.Thread:
        """Run in a background thread (for benchmarks); stop() ends it."""
        thread = threading.Thread(target=self.run, name="finsent-service", daemon=True)
        thread.start()
        return thread
