"""`finsent run --stage`: classify, monitor, alerts, or all three in one process on one metrics endpoint.

Each stage is its own consumer group (``<group_id>``, ``<group_id>-monitor``, ``<group_id>-alerts``)
and runs the same code whether alone or together, so scaling out is only a matter of starting
processes with a different ``--stage``. Only the classify stage loads the ONNX model.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry

from finsent.config import ServiceConfig
from finsent.errors import UsageError
from finsent.metrics import MetricsServer

log = logging.getLogger("finsent.stages")


def prepare_state_dir(path: Path) -> None:
    """Create the state folder and check that it takes a new file; UsageError naming state_dir if not.

    Checked at start, so a read-only or missing mount fails here with one line, not at the first
    checkpoint after records were already read.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        raise UsageError(f"state_dir {path}: cannot write there: {error.strerror or error}") from None


@dataclass
class _Part:
    """One running stage: how to run, stop and probe it."""

    name: str
    run: Callable[[], object]
    stop: Callable[[], None]
    ready: Callable[[], bool]
    failed: Callable[[], bool]


class StageRunner:
    """Builds the stages the configuration names, serves /metrics, /healthz, /readyz for all of them."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.registry = CollectorRegistry()
        self.parts: list[_Part] = []
        stage = config.stage
        run_alerts = stage in ("all", "alerts")
        run_monitor = stage in ("all", "monitor")
        if run_alerts:
            # Bad rule or subscription files stop the process before anything starts (exit 2).
            from finsent.alerts_stage import AlertsStage, load_alert_files

            rules, subscriptions = load_alert_files(config)
        else:
            config.monitor_config()
        if run_monitor or run_alerts:
            prepare_state_dir(config.state_dir)
        if stage in ("all", "classify"):
            from finsent.classify_stage import ClassifyStage  # loads the ONNX model: only for this stage

            classify = ClassifyStage(config, registry=self.registry)
            self.parts.append(
                _Part(
                    "classify",
                    classify.run,
                    classify.stop,
                    lambda: classify.loop.ready,
                    lambda: classify.failed,
                )
            )
        if run_monitor:
            from finsent.monitor_stage import MonitorStage

            try:
                monitor = MonitorStage(config, self.registry)
            except RuntimeError as error:
                raise UsageError(f"state_dir: {error}") from None
            self.parts.append(
                _Part(
                    "monitor",
                    monitor.run,
                    monitor.request_stop,
                    lambda: monitor.ready,
                    lambda: monitor.failed,
                )
            )
        if run_alerts:
            try:
                alerts = AlertsStage(config, self.registry, rules, subscriptions)
            except RuntimeError as error:
                raise UsageError(f"state_dir: {error}") from None
            self.parts.append(
                _Part("alerts", alerts.run, alerts.request_stop, lambda: alerts.ready, lambda: alerts.failed)
            )
        self._threads: list[threading.Thread] = []
        self._failed: dict[str, bool] = {}  # stage name -> whether its run failed
        try:
            self.server = MetricsServer(
                self.registry,
                config.metrics_host,
                config.metrics_port,
                healthy=self.healthy,
                ready=self.ready,
            )
        except OSError as error:
            raise UsageError(
                f"metrics_port: cannot listen on {config.metrics_host}:{config.metrics_port}: {error.strerror}"
            ) from None

    @property
    def metrics_url(self) -> str:
        """Where /metrics is served."""
        return f"http://{self.config.metrics_host}:{self.server.port}/metrics"

    def healthy(self) -> bool:
        """No stage has died."""
        return not any(part.failed() or self._failed.get(part.name) for part in self.parts)

    def ready(self) -> bool:
        """Every stage of this process is ready."""
        return all(part.ready() for part in self.parts)

    def stop(self) -> None:
        """Ask every stage to finish, persist, commit and return."""
        for part in self.parts:
            part.stop()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop every stage cleanly (main thread only)."""

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("received %s; stopping stages", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _run_part(self, part: _Part) -> None:
        try:
            code = part.run()
            failed = code not in (None, 0)
        except Exception:
            log.exception("%s stage failed", part.name)
            failed = True
        self._failed[part.name] = failed
        if failed:
            # One dead stage takes the process down so a supervisor restarts all of it.
            self.stop()

    def run(self) -> int:
        """Run every stage in its own thread until stopped; 0 after a clean stop, 1 if a stage died."""
        self.server.start()
        log.info(
            "stage %s (%s); metrics on %s",
            self.config.stage,
            ", ".join(part.name for part in self.parts),
            self.metrics_url,
        )
        try:
            for part in self.parts:
                thread = threading.Thread(target=self._run_part, args=(part,), name=f"stage-{part.name}")
                thread.start()
                self._threads.append(thread)
            for thread in self._threads:
                while thread.is_alive():
                    thread.join(timeout=0.5)  # short joins keep the main thread responsive to signals
        finally:
            self.server.stop()
        return 1 if any(self._failed.values()) else 0
