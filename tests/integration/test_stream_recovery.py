"""Failures against a real broker: kill -9 and restart, a frozen broker, SIGTERM and restart."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from finsent.broker import EmbeddedBroker
from tests.integration.conftest import (
    ServiceProcess,
    TopicReader,
    freeze,
    produce,
    scored_ids,
    thaw,
    valid_message,
)

pytestmark = pytest.mark.integration

TOTAL = 4000
MAX_BATCH = 32


def fill(broker: EmbeddedBroker, prefix: str) -> set[str]:
    """Produce TOTAL valid messages; their ids."""
    messages = [valid_message(index, prefix) for index in range(TOTAL)]
    produce(broker.bootstrap, [payload for _, payload in messages])
    return {message_id for message_id, _ in messages}


def all_scored(ids: set[str]) -> Callable[[list[object]], bool]:
    """Predicate: every id in ids appears among the scored records."""
    return lambda records: ids <= set(scored_ids(records))


def test_kill_9_halfway_then_restart_loses_nothing(
    broker: EmbeddedBroker,
    start_service: Callable[..., ServiceProcess],
    reader: Callable[[EmbeddedBroker, str], TopicReader],
) -> None:
    ids = fill(broker, "k9")
    scored = reader(broker, "news.scored")
    first = start_service(broker, "--max-batch", str(MAX_BATCH))
    scored.until(lambda records: len(records) >= TOTAL // 2, timeout=120, what="half the stream")
    first.signal(signal.SIGKILL)
    first.wait(10)
    before_restart = len(scored.poll())
    assert before_restart < TOTAL, "the kill came too late to test anything"

    second = start_service(broker, "--max-batch", str(MAX_BATCH))
    scored.until(all_scored(ids), timeout=150, what="every id after the restart")
    assert second.alive(), second.log()
    counts = Counter(scored_ids(scored.poll()))
    assert set(counts) == ids
    duplicates = sum(counts.values()) - len(counts)
    print(f"kill -9 at {before_restart}/{TOTAL} scored: {duplicates} duplicates after restart")
    # At-least-once: replays are bounded by what was produced but not yet committed.
    assert duplicates <= before_restart


def test_broker_frozen_10s_service_survives_and_finishes(
    broker: EmbeddedBroker,
    start_service: Callable[..., ServiceProcess],
    reader: Callable[[EmbeddedBroker, str], TopicReader],
) -> None:
    ids = fill(broker, "stop")
    scored = reader(broker, "news.scored")
    service = start_service(broker, "--max-batch", str(MAX_BATCH))
    scored.until(lambda records: len(records) >= TOTAL // 4, timeout=120, what="a quarter of the stream")
    freeze(broker.pid)
    try:
        time.sleep(10)
        assert service.alive(), service.log()
    finally:
        thaw(broker.pid)
    scored.until(all_scored(ids), timeout=150, what="every id after the broker resumed")
    assert service.alive(), service.log()
    counts = Counter(scored_ids(scored.poll()))
    print(f"broker frozen 10 s: {sum(counts.values()) - len(counts)} duplicates")


def test_sigterm_exits_cleanly_and_restart_rereads_at_most_one_batch(
    broker: EmbeddedBroker,
    start_service: Callable[..., ServiceProcess],
    reader: Callable[[EmbeddedBroker, str], TopicReader],
) -> None:
    ids = fill(broker, "term")
    scored = reader(broker, "news.scored")
    first = start_service(broker, "--max-batch", str(MAX_BATCH))
    scored.until(lambda records: len(records) >= TOTAL // 4, timeout=120, what="a quarter of the stream")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.log()
    assert "stopped: consumed" in first.log()
    time.sleep(1)
    before_restart = len(scored.poll())
    assert before_restart < TOTAL, "SIGTERM came too late to test anything"

    second = start_service(broker, "--max-batch", str(MAX_BATCH))
    scored.until(all_scored(ids), timeout=150, what="every id after the restart")
    counts = Counter(scored_ids(scored.poll()))
    duplicates = sum(counts.values()) - len(counts)
    assert set(counts) == ids
    assert duplicates <= MAX_BATCH, f"restart re-read {duplicates} scored messages"
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0, second.log()
