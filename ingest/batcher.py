"""A pure micro-batcher: a batch is ready at `max_batch` items or `max_wait_ms` after its oldest item."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
Clock = Callable[[], float]


class MicroBatcher(Generic[T]):
    """FIFO buffer that says when to flush; the clock is injectable so tests need no sleeping."""

    def __init__(self, max_batch: int, max_wait_ms: float, clock: Clock = time.monotonic) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._clock = clock
        self._items: deque[tuple[float, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> None:
        """Buffer one item, stamped with the clock's current time."""
        self._items.append((self._clock(), item))

    def extend(self, items: Iterable[T]) -> None:
        """Buffer several items at the same instant."""
        now = self._clock()
        self._items.extend((now, item) for item in items)

    def seconds_until_ready(self) -> float | None:
        """0 when a batch is ready, the wait left for the oldest item, or None when empty."""
        if not self._items:
            return None
        if len(self._items) >= self.max_batch:
            return 0.0
        return max(0.0, self._items[0][0] + self.max_wait - self._clock())

    def ready(self) -> bool:
        """True when a batch should be flushed now."""
        wait = self.seconds_until_ready()
        return wait is not None and wait <= 0.0

    def take(self) -> list[T]:
        """Remove and return up to `max_batch` of the oldest items (whether or not ready)."""
        count = min(self.max_batch, len(self._items))
        return [self._items.popleft()[1] for _ in range(count)]

    def items(self) -> list[T]:
        """Everything buffered, oldest first, without removing it."""
        return [item for _, item in self._items]

    def discard(self, drop: Callable[[T], bool]) -> int:
        """Remove every item for which `drop` is true; returns how many were removed."""
        kept = deque(entry for entry in self._items if not drop(entry[1]))
        removed = len(self._items) - len(kept)
        self._items = kept
        return removed
