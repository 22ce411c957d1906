"""Micro-batching with a fake clock: flush at max_batch items or max_wait_ms after the oldest item."""

from __future__ import annotations

import pytest

from ingest import MicroBatcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_empty_batcher_is_never_ready(clock: FakeClock) -> None:
    batcher: MicroBatcher[int] = MicroBatcher(4, 50, clock)
    clock.advance(10_000)
    assert not batcher.ready()
    assert batcher.seconds_until_ready() is None
    assert batcher.take() == []


def test_flushes_as_soon_as_max_batch_items_arrive(clock: FakeClock) -> None:
    batcher: MicroBatcher[int] = MicroBatcher(3, 1000, clock)
    batcher.extend([1, 2])
    assert not batcher.ready()
    batcher.add(3)
    assert batcher.ready()
    assert batcher.seconds_until_ready() == 0.0
    assert batcher.take() == [1, 2, 3]
    assert len(batcher) == 0


def test_flushes_a_partial_batch_after_max_wait_of_the_oldest_item(clock: FakeClock) -> None:
    batcher: MicroBatcher[str] = MicroBatcher(100, 50, clock)
    batcher.add("a")
    clock.advance(30)
    batcher.add("b")
    assert not batcher.ready()
    assert batcher.seconds_until_ready() == pytest.approx(0.020)
    clock.advance(20)
    assert batcher.ready()
    assert batcher.take() == ["a", "b"]


def test_take_returns_at_most_max_batch_oldest_first_and_keeps_the_rest_waiting(clock: FakeClock) -> None:
    batcher: MicroBatcher[int] = MicroBatcher(2, 50, clock)
    batcher.extend([1, 2, 3])
    assert batcher.take() == [1, 2]
    assert batcher.items() == [3]
    assert not batcher.ready()  # item 3 waits its own max_wait
    clock.advance(50)
    assert batcher.take() == [3]


def test_leftover_items_keep_their_arrival_time(clock: FakeClock) -> None:
    batcher: MicroBatcher[int] = MicroBatcher(2, 50, clock)
    batcher.add(1)
    clock.advance(40)
    batcher.extend([2, 3])
    assert batcher.take() == [1, 2]
    assert batcher.seconds_until_ready() == pytest.approx(0.050)


def test_zero_wait_flushes_immediately(clock: FakeClock) -> None:
    batcher: MicroBatcher[int] = MicroBatcher(10, 0, clock)
    batcher.add(1)
    assert batcher.ready()


def test_discard_removes_matching_items(clock: FakeClock) -> None:
    batcher: MicroBatcher[int] = MicroBatcher(10, 50, clock)
    batcher.extend(range(6))
    assert batcher.discard(lambda item: item % 2 == 0) == 3
    assert batcher.items() == [1, 3, 5]


@pytest.mark.parametrize(("max_batch", "max_wait"), [(0, 10), (1, -1)])
def test_rejects_bad_limits(max_batch: int, max_wait: int) -> None:
    with pytest.raises(ValueError):
        MicroBatcher(max_batch, max_wait)
