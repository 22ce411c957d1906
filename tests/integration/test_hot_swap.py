"""Hot swap under load against a real broker: promote mid-stream, then roll back, nothing lost."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from finsent.broker import EmbeddedBroker
from finsent.hotswap import EngineHolder, RegistryWatcher, holder_classifier
from finsent.metrics import ClassifyMetrics
from model import Engine
from model.registry import ModelRegistry
from tests.integration.conftest import ROOT, ServiceProcess, TopicReader, model_dir, valid_message

pytestmark = pytest.mark.integration

TOTAL = 2400
RATE = 60.0  # messages per second: about 40 s of steady load
SECOND = "swap-b"


def metrics_text(service: ServiceProcess) -> str:
    """GET /metrics from the port the service logged."""
    match = re.search(r"metrics on http://[\d.]+:(\d+)/metrics", service.log())
    assert match, service.log()
    with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/metrics", timeout=5) as response:
        return str(response.read().decode())


def model_info_version(text: str) -> str | None:
    """The version label of finsent_model_info."""
    match = re.search(r'finsent_model_info\{[^}]*version="([^"]+)"', text)
    return match.group(1) if match else None


def cli(*args: str) -> str:
    """Run `python -m finsent ...` and return its stdout (fails the test on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "-m", "finsent", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def steady_producer(bootstrap: str, ids: list[tuple[str, bytes]], rate: float, sent: list[str]) -> None:
    """Produce at a steady rate (the list `sent` grows as messages go out)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    started = time.monotonic()
    for index, (message_id, payload) in enumerate(ids):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.send("news.raw", value=payload)
        sent.append(message_id)
    producer.flush(60)
    producer.close()


@pytest.fixture
def two_version_registry(tmp_path: Path) -> tuple[Path, str]:
    """A registry with the shipped model current and a copy of it registered as SECOND."""
    registry = ModelRegistry(tmp_path / "registry")
    first = registry.init_from(model_dir())
    assert first is not None
    registry.add(model_dir(), version=SECOND)  # same weights, new version name: hashes stay valid
    return registry.root, first


def test_promote_mid_stream_swaps_between_batches_and_rollback_returns(
    broker: EmbeddedBroker,
    start_service: Callable[..., ServiceProcess],
    reader: Callable[[EmbeddedBroker, str], TopicReader],
    two_version_registry: tuple[Path, str],
) -> None:
    root, first = two_version_registry
    service = start_service(
        broker, "--registry", str(root), "--swap-poll-interval", "0.5", "--stage", "classify"
    )
    scored = reader(broker, "news.scored")
    messages = [valid_message(index, prefix="hs") for index in range(TOTAL)]
    sent: list[str] = []
    producer = threading.Thread(target=steady_producer, args=(broker.bootstrap, messages, RATE, sent))
    producer.start()

    # Promote once the service is scoring with the first version and a third of the load is out.
    scored.until(
        lambda records: len(records) >= 200 and len(sent) >= TOTAL // 3, timeout=180, what="first third"
    )
    assert {json.loads(r.value)["model_version"] for r in scored.records} == {first}
    cli("model", "--registry", str(root), "promote", SECOND)
    promoted_at = len(sent)
    producer.join(timeout=300)
    assert not producer.is_alive()
    ids = [message_id for message_id, _ in messages]
    scored.until(
        lambda records: {json.loads(r.value)["id"] for r in records} >= set(ids), timeout=240, what="all ids"
    )
    assert service.alive(), service.log()
    values = scored.values()

    counts = Counter(value["id"] for value in values)
    assert set(ids) - set(counts) == set(), "no message lost"
    versions = Counter(value["model_version"] for value in values)
    assert set(versions) == {first, SECOND}, versions
    assert versions[SECOND] > 0.3 * TOTAL, (
        f"the swap came late: {versions} (promoted after {promoted_at} sent)"
    )
    by_batch: dict[str, set[str]] = defaultdict(set)
    for value in values:
        by_batch[value["scored_at"]].add(value["model_version"])
    mixed = {at: found for at, found in by_batch.items() if len(found) > 1}
    assert not mixed, f"batches scored by two versions: {mixed}"
    duplicates = sum(count - 1 for count in counts.values())
    print(
        f"hot swap: {len(ids)} ids, {len(values)} scored records, {duplicates} duplicates, versions {dict(versions)}, {len(by_batch)} batches, none mixed"
    )
    text = metrics_text(service)
    assert model_info_version(text) == SECOND
    assert "finsent_model_swaps_total 1.0" in text
    assert re.search(r'finsent_prediction_drift\{task="topic"\} [0-9.e-]+', text), text
    assert re.search(r'finsent_low_confidence_share\{task="sentiment"\} [0-9.e-]+', text)
    assert "model swapped: " in service.log()

    # Rollback: the running service returns to the first version, and new messages are scored with it.
    cli("model", "--registry", str(root), "rollback")
    deadline = time.monotonic() + 30
    while model_info_version(metrics_text(service)) != first:
        assert time.monotonic() < deadline, "the service did not return to the previous version"
        time.sleep(0.2)
    late = [valid_message(index, prefix="after-rollback") for index in range(200)]
    steady_producer(broker.bootstrap, late, 200.0, [])
    late_ids = {message_id for message_id, _ in late}
    scored.until(
        lambda records: {json.loads(r.value)["id"] for r in records} >= late_ids, timeout=120, what="late ids"
    )
    late_versions = {value["model_version"] for value in scored.values() if value["id"] in late_ids}
    assert late_versions == {first}
    assert "finsent_model_swaps_total 2.0" in metrics_text(service)


def test_a_version_that_fails_to_load_is_counted_and_the_old_engine_keeps_serving(
    two_version_registry: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    if not (model_dir() / "manifest.json").is_file():
        pytest.skip("no shipped model")
    root, first = two_version_registry
    registry = ModelRegistry(root)
    engine = Engine(registry.version_dir(first), device="cpu")
    holder, metrics = EngineHolder(engine), ClassifyMetrics()
    watcher = RegistryWatcher(registry, holder, lambda path: Engine(path, device="cpu"), metrics, interval=60)
    (registry.version_dir(SECOND) / "tokenizer.json").write_text("{}")  # corrupt after registration
    _point_at(root, SECOND)
    with caplog.at_level(logging.ERROR, logger="finsent.hotswap"):
        assert watcher.check() is False
        assert watcher.check() is False, "a failed version is not retried until the pointer changes"
    assert holder.engine is engine
    assert metrics.model_load_failures_total._value.get() == 1.0
    assert "cannot load model version swap-b" in caplog.text
    results = holder_classifier(holder)(["Shares of Acme plunge after guidance cut"])
    assert results[0]["model_version"] == first


def _point_at(root: Path, version: str) -> None:
    """Move CURRENT without the registry's checks (promote verifies hashes and would refuse)."""
    (root / "CURRENT").write_text(version + "\n")
