"""Fixtures for streaming tests: a real tansu broker on a free loopback port, the service as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from finsent.broker import EmbeddedBroker
from ingest import KafkaSettings, StreamLoop
from model import DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]

# The topic label the shipped model gives finsent.demo.make_surge_stream.SURGE_HEADLINES.
SURGE_TOPIC = "Energy | Oil"
CALM_HEADLINES: tuple[str, ...] = (
    "Oil prices steady as traders await the OPEC meeting",
    "Oil edges higher as OPEC+ agrees to extend output cuts",
    "Crude oil rises after a larger-than-expected draw in U.S. inventories",
    "Oil rallies as producers cut output and demand recovers",
    "Crude rises as China's fuel demand rebounds",
    "Oil advances as OPEC+ compliance with cuts improves",
    "Oil prices rise as the U.S. rig count drops",
)
"""Headlines the shipped model labels Energy | Oil, not negative (calm traffic)."""

# Short group timings: with Kafka's defaults a group join or a dead member's expiry takes 10-45 s.
FAST_GROUP = [
    "--session-timeout-ms",
    "6000",
    "--heartbeat-interval-ms",
    "1000",
    "--max-poll-interval-ms",
    "20000",
]


def model_dir() -> Path:
    """The model the service loads: FINSENT_MODEL_DIR when set, else the shipped model."""
    return Path(os.environ.get("FINSENT_MODEL_DIR") or DEFAULT_MODEL_DIR)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A fresh in-memory broker with the finsent topics, stopped (and un-frozen) afterwards."""
    if not (model_dir() / "manifest.json").is_file():
        pytest.skip(f"no model at {model_dir()} (build it, or set FINSENT_MODEL_DIR)")
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as running:
        yield running


@dataclass
class ServiceProcess:
    """`python -m finsent run` as a child process."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Everything the service wrote to stderr/stdout so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send a signal to the service."""
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for exit; the exit code."""
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Kill if still running."""
        if self.alive():
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Factory: start the service against a broker; every started service is killed at teardown."""
    started: list[ServiceProcess] = []

    def start(
        broker: EmbeddedBroker, *extra: str, group: str = "finsent-test", state_dir: Path | None = None
    ) -> ServiceProcess:
        log_path = tmp_path / f"service-{len(started)}.log"
        # One state dir per test by default, so a restarted service finds its predecessor's checkpoints.
        state = state_dir or tmp_path / "state"
        command = [
            sys.executable,
            "-m",
            "finsent",
            "run",
            "--bootstrap-servers",
            broker.bootstrap,
            "--group-id",
            group,
            "--metrics-port",
            "0",
            "--metrics-host",
            "127.0.0.1",
            "--state-dir",
            str(state),
            *FAST_GROUP,
            *extra,
        ]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
        service = ServiceProcess(process, log_path)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def produce(bootstrap: str, payloads: list[bytes | None], topic: str = "news.raw") -> list[tuple[int, int]]:
    """Send raw payloads; (partition, offset) of each, in order, after the broker acknowledged all."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024)
    # A null value (tombstone) needs a key.
    futures = [
        producer.send(topic, key=b"null" if payload is None else None, value=payload) for payload in payloads
    ]
    producer.flush(60)
    placed = [(meta.partition, meta.offset) for meta in (future.get(10) for future in futures)]
    producer.close()
    return placed


def valid_message(index: int, prefix: str = "m") -> tuple[str, bytes]:
    """A contract-valid message with a unique id."""
    headlines = (
        "Shares of {n} plunge after the company cuts its outlook",
        "{n} beats estimates and raises full-year guidance",
        "{n} declares quarterly dividend of $0.46 per share",
        "Oil prices climb as {n} agrees to cut output",
    )
    message_id = f"{prefix}-{index}"
    body = {
        "id": message_id,
        "headline": headlines[index % len(headlines)].format(n=f"Company{index}"),
        "body": None,
        "published_at": None,
        "source": "test",
        "tickers": [f"T{index % 50}"],
    }
    return message_id, json.dumps(body).encode("utf-8")


@dataclass
class TopicReader:
    """Reads a whole topic from the beginning without a group; keeps everything it has seen."""

    bootstrap: str
    topic: str
    records: list[Any] = field(default_factory=list)
    _consumer: Any = None

    def __post_init__(self) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        # Every partition, or records keyed to the others go unseen: right after a broker (re)start
        # the metadata request can fail and return no partitions, so ask again rather than guess.
        deadline = time.monotonic() + 30
        while not (partitions := self._consumer.partitions_for_topic(self.topic)):
            if time.monotonic() > deadline:
                pytest.fail(f"no partition metadata for {self.topic} after 30s")
            time.sleep(0.2)
        self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        self._consumer.seek_to_beginning()

    def poll(self) -> list[Any]:
        """Read what is available now."""
        for batch in self._consumer.poll(timeout_ms=200).values():
            self.records.extend(batch)
        return self.records

    def until(self, done: Callable[[list[Any]], bool], timeout: float, what: str) -> list[Any]:
        """Poll until done(records) or fail after timeout seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.poll()):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} on {self.topic}")
        return self.records

    def values(self) -> list[dict[str, Any]]:
        """Decoded JSON values."""
        return [json.loads(record.value) for record in self.records]

    def close(self) -> None:
        """Release the consumer."""
        self._consumer.close()


@pytest.fixture
def reader() -> Iterator[Callable[[EmbeddedBroker, str], TopicReader]]:
    """Factory for topic readers, closed at teardown."""
    opened: list[TopicReader] = []

    def open_reader(broker: EmbeddedBroker, topic: str) -> TopicReader:
        topic_reader = TopicReader(broker.bootstrap, topic)
        opened.append(topic_reader)
        return topic_reader

    yield open_reader
    for topic_reader in opened:
        topic_reader.close()


def wait_for(
    condition: Callable[[], bool], timeout: float, what: Callable[[], str], interval: float = 0.1
) -> None:
    """Poll until condition() or fail, saying what() was awaited (and, if it says so, what was seen)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what()}")
        time.sleep(interval)


def scored_ids(records: list[Any]) -> list[str]:
    """The id of every scored record (duplicates kept)."""
    return [json.loads(record.value)["id"] for record in records]


def freeze(pid: int) -> None:
    """SIGSTOP a process."""
    os.kill(pid, signal.SIGSTOP)


def thaw(pid: int) -> None:
    """SIGCONT a process."""
    os.kill(pid, signal.SIGCONT)


def neutral_results(texts: Sequence[str]) -> list[dict[str, Any]]:
    """A stand-in classifier's results: neutral `Markets` for every text."""
    scores = {"negative": 0.1, "neutral": 0.8, "positive": 0.1}
    return [
        {"topic": "Markets", "topic_score": 0.9, "sentiment": "neutral", "sentiment_scores": scores}
        for _ in texts
    ]


def fast_group(bootstrap: str, group: str) -> KafkaSettings:
    """Client settings with short group timeouts, so joins and rebalances take seconds, not 20 s."""
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        group_id=group,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=20000,
    )


class LoopThread:
    """A StreamLoop running in a thread; remembers what ended it."""

    def __init__(self, loop: StreamLoop) -> None:
        self.loop = loop
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as error:  # the test inspects it
            self.error = error

    def stop(self, timeout: float = 60.0) -> float:
        """Request a clean stop, wait for it (at most timeout) and return the seconds it took."""
        started = time.monotonic()
        self.loop.request_stop()
        self.thread.join(timeout)
        return time.monotonic() - started
