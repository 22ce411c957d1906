"""Scale-out: two classifier processes and one monitor process count exactly what one `all` process counts."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from finsent.broker import EmbeddedBroker, create_topics
from finsent.demo.make_surge_stream import SURGE_HEADLINES
from tests.integration.conftest import CALM_HEADLINES, ServiceProcess, produce, valid_message

pytestmark = pytest.mark.integration

TOTAL = 600
SPLIT_TOPICS = {"scored.split": 3, "dlq.split": 1, "windows.split": 3}


def metrics_url(service: ServiceProcess, timeout: float = 90) -> str:
    """The /metrics URL the process logged once its stages started."""
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(r"metrics on (http://[\d.]+:\d+)/metrics", service.log())
        if match:
            return match.group(1)
        if not service.alive() or time.monotonic() > deadline:
            pytest.fail(f"no metrics line in the log:\n{service.log()[-4000:]}")
        time.sleep(0.2)


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def samples(base: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of a metric, keyed by its sorted labels."""
    _, text = get(f"{base}/metrics")
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def wait_ready(services: list[ServiceProcess], timeout: float = 120) -> list[str]:
    """Metrics base URLs, once every process answers /readyz with 200."""
    bases = [metrics_url(service) for service in services]
    deadline = time.monotonic() + timeout
    for service, base in zip(services, bases, strict=True):
        while get(f"{base}/readyz")[0] != 200:
            if time.monotonic() > deadline:
                pytest.fail(f"not ready within {timeout:.0f}s:\n{service.log()[-4000:]}")
            time.sleep(0.3)
    return bases


def wait_total(
    base: str, name: str, total: float, service: ServiceProcess, timeout: float
) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of metric name once they add up to at least total."""
    deadline = time.monotonic() + timeout
    while True:
        values = samples(base, name)
        if sum(values.values()) >= total:
            return values
        if time.monotonic() > deadline:
            pytest.fail(f"{name} reached {sum(values.values())} of {total}:\n{service.log()[-4000:]}")
        time.sleep(0.5)


def wait_counted(base: str, total: int, service: ServiceProcess, timeout: float = 150) -> dict[str, float]:
    """Per (topic, sentiment) counts of the monitor once they add up to total."""
    counts = wait_total(base, "finsent_classified_messages_total", total, service, timeout)
    return {json.dumps(dict(labels), sort_keys=True): value for labels, value in counts.items()}


def mixed_input() -> list[bytes | None]:
    """Company news of four kinds plus oil news both ways, each id unique."""
    payloads: list[bytes | None] = []
    for index in range(TOTAL):
        if index % 3:
            payloads.append(valid_message(index, "scale")[1])
        else:
            pool = SURGE_HEADLINES if index % 2 else CALM_HEADLINES
            body = {"id": f"scale-oil-{index}", "headline": pool[index % len(pool)], "published_at": None}
            payloads.append(json.dumps(body).encode())
    return payloads


def test_two_classifiers_and_a_monitor_count_like_one_all_process(
    broker: EmbeddedBroker, start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    create_topics(broker.bootstrap, SPLIT_TOPICS)
    solo = start_service(broker, "--threads", "1", group="solo", state_dir=tmp_path / "solo")
    split_out = ["--output-topic", "scored.split", "--dlq-topic", "dlq.split"]
    classifiers = [
        start_service(broker, "--stage", "classify", "--threads", "1", *split_out, group="split")
        for _ in range(2)
    ]
    monitor = start_service(
        broker,
        "--stage",
        "monitor",
        "--output-topic",
        "scored.split",
        "--windows-topic",
        "windows.split",
        group="split",
        state_dir=tmp_path / "split",
    )
    solo_base, *classifier_bases, monitor_base = wait_ready([solo, *classifiers, monitor])
    produce(broker.bootstrap, mixed_input())

    expected = wait_counted(solo_base, TOTAL, solo)
    counted = wait_counted(monitor_base, TOTAL, monitor)
    time.sleep(2)  # a late duplicate count would show up now
    assert wait_counted(monitor_base, TOTAL, monitor) == counted
    assert counted == expected
    assert sum(expected.values()) == TOTAL
    assert len(expected) >= 4, expected  # several topics and sentiments, not one bucket
    # Both replicas did part of the work (the group split news.raw's three partitions between them).
    consumed = [sum(samples(base, "finsent_messages_consumed_total").values()) for base in classifier_bases]
    assert all(count > 0 for count in consumed), consumed
    assert sum(consumed) >= TOTAL
    # The monitor-only process never loaded the model, and wrote its windows where it was told to.
    assert "model minilm" not in monitor.log() and "stage monitor (monitor)" in monitor.log()
    assert samples(monitor_base, "finsent_model_info") == {}
    # Windows go out at each evaluation (every eval_interval, 5 s): the last records can beat the next one.
    wait_total(monitor_base, "finsent_monitor_window_records_total", 1, monitor, timeout=30)
    print(f"scale-out: {TOTAL} messages, replicas consumed {consumed}, counts equal: {counted}")
