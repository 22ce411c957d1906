"""Wiring of the streaming service: model engine -> ingest loop, with metrics and health endpoints."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any, cast

from finsent.config import ServiceConfig
from finsent.errors import UsageError
from finsent.metrics import MetricsServer, ServiceMetrics
from ingest import Classifier, StreamLoop
from model import Engine, ModelIntegrityError

log = logging.getLogger("finsent.pipeline")


def load_engine(config: ServiceConfig) -> Engine:
    """The engine the configuration names; problems become usage errors naming the setting."""
    try:
        return Engine(
            config.model_dir,
            variant=config.variant,
            device=cast(Any, config.device),  # validated against the same choices
            batch_size=min(64, config.max_batch),
            threads=config.threads,
        )
    except (ModelIntegrityError, ValueError, RuntimeError, FileNotFoundError) as error:
        raise UsageError(f"model_dir {config.model_dir}: {error}") from None


def engine_classifier(engine: Engine) -> Classifier:
    """Adapt Engine.predict to ingest's classifier contract (plain dicts)."""

    def classify(texts: Sequence[str]) -> list[Mapping[str, Any]]:
        return [
            {
                "topic": prediction.topic,
                "topic_score": prediction.topic_score,
                "sentiment": prediction.sentiment,
                "sentiment_scores": prediction.sentiment_scores,
            }
            for prediction in engine.predict(list(texts))
        ]

    return classify


class Service:
    """One `finsent run` instance: engine, stream loop, private metrics registry, HTTP endpoints."""

    def __init__(self, config: ServiceConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or load_engine(config)
        self.metrics = ServiceMetrics()
        self.metrics.set_model(self.engine.version, self.engine.variant, self.engine.providers[0])
        self.loop = StreamLoop(
            config.loop_settings(self.engine.version),
            config.kafka_settings(),
            engine_classifier(self.engine),
            observer=self.metrics,
        )
        self._failed = False
        try:
            self.server = MetricsServer(
                self.metrics.registry,
                config.metrics_host,
                config.metrics_port,
                healthy=lambda: not self._failed,
                ready=lambda: self.loop.ready,
            )
        except OSError as error:
            raise UsageError(
                f"metrics_port: cannot listen on {config.metrics_host}:{config.metrics_port}: {error.strerror}"
            ) from None

    @property
    def metrics_url(self) -> str:
        """Where /metrics is served."""
        return f"http://{self.config.metrics_host}:{self.server.port}/metrics"

    def stop(self) -> None:
        """Ask the loop to finish the in-flight batch, commit and return."""
        self.loop.request_stop()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the service cleanly (main thread only)."""

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("received %s; finishing the in-flight batch", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> int:
        """Serve until stopped; 0 after a clean stop, 1 if the loop died."""
        self.server.start()
        log.info(
            "model %s (%s, %s); reading %s from %s as group %s; metrics on %s",
            self.engine.version,
            self.engine.variant,
            self.engine.providers[0],
            self.config.input_topic,
            self.config.bootstrap_servers,
            self.config.group_id,
            self.metrics_url,
        )
        try:
            self.loop.run()
        except Exception:
            self._failed = True
            log.exception("stream loop failed")
            return 1
        finally:
            self.server.stop()
        return 0

    def start_thread(self) -> threading.Thread:
        """Run in a background thread (for the demo); stop() ends it."""
        thread = threading.Thread(target=self.run, name="finsent-service", daemon=True)
        thread.start()
        return thread
