"""Which offsets are safe to commit: everything polled, up to the first record not yet done."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Partition(NamedTuple):
    """A topic partition (structurally the same as kafka's TopicPartition)."""

    topic: str
    partition: int


class OffsetTracker:
    """Per partition: the next offset to read, and what was last committed."""

    def __init__(self) -> None:
        self._next: dict[Partition, int] = {}
        self._first: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def polled(self, partition: Partition, offset: int) -> None:
        """Record that `offset` was read from `partition`."""
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)
        self._first.setdefault(partition, offset)

    def safe_positions(self, pending: Iterable[tuple[Partition, int]]) -> dict[Partition, int]:
        """Commit positions: the lowest pending offset per partition, else one past the last polled."""
        positions = dict(self._next)
        for partition, offset in pending:
            if partition in positions:
                positions[partition] = min(positions[partition], offset)
        return positions

    def uncommitted(self, positions: dict[Partition, int]) -> dict[Partition, int]:
        """The subset of positions that moved past what was last committed."""
        return {tp: offset for tp, offset in positions.items() if self._committed.get(tp) != offset}

    def committed(self, positions: dict[Partition, int]) -> None:
        """Record positions the broker accepted."""
        self._committed.update(positions)

    def replay_position(self, partition: Partition) -> int | None:
        """Where a rewind would go: the last commit, else the first offset polled (the group's commit then)."""
        return self._committed.get(partition, self._first.get(partition))

    def rewind(self, partition: Partition) -> int | None:
        """Where to seek to replay everything not committed; resets the read position to it."""
        position = self.replay_position(partition)
        if position is not None:
            self._next[partition] = position
        return position

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop state for partitions this consumer no longer owns."""
        for partition in partitions:
            self._next.pop(partition, None)
            self._first.pop(partition, None)
            self._committed.pop(partition, None)
