"""Bounded memory of message ids already counted, so at-least-once replays count once."""

from __future__ import annotations

import math
from typing import Any


class DedupeMemory:
    """Ids grouped by event-time bucket; whole buckets expire by time, and a count cap bounds memory.

    The cap is a safety valve: if it evicts ids still inside the allowed lateness, a replay of those
    ids would be counted again, so ``evicted`` is exposed for a metric and the cap should be sized
    above the expected ids per retention period.
    """

    def __init__(self, bucket_seconds: int, max_ids: int) -> None:
        self.bucket_seconds = bucket_seconds
        self.max_ids = max_ids
        self.evicted = 0
        self._buckets: dict[int, set[str]] = {}
        self._bucket_of: dict[str, int] = {}
        self._expired_below = -math.inf  # skips rescans while the expiry bound has not moved

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._bucket_of

    def __len__(self) -> int:
        return len(self._bucket_of)

    def add(self, message_id: str, event_time: float) -> None:
        """Remember an id under its event time; evicts the oldest ids when over the cap."""
        if message_id in self._bucket_of:
            return
        index = math.floor(event_time / self.bucket_seconds)
        self._buckets.setdefault(index, set()).add(message_id)
        self._bucket_of[message_id] = index
        while len(self._bucket_of) > self.max_ids:
            oldest = min(self._buckets)
            self.evicted += len(self._buckets[oldest])
            self._drop(oldest)

    def expire(self, before: float) -> None:
        """Forget ids whose event time falls in buckets wholly before ``before``."""
        limit = math.floor(before / self.bucket_seconds)
        if limit <= self._expired_below:
            return
        self._expired_below = limit
        for index in [i for i in self._buckets if i < limit]:
            self._drop(index)

    def _drop(self, index: int) -> None:
        for message_id in self._buckets.pop(index):
            del self._bucket_of[message_id]

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable state (the eviction count is per process and not kept)."""
        # Ids stay in set order: sorting a million of them cost more than writing the file.
        return {
            "bucket_seconds": self.bucket_seconds,
            "buckets": [[index, list(ids)] for index, ids in sorted(self._buckets.items())],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], max_ids: int) -> DedupeMemory:
        """Rebuild from :meth:`to_state` output under the given cap."""
        memory = cls(int(state["bucket_seconds"]), max_ids)
        if memory.bucket_seconds <= 0:
            raise ValueError(f"dedupe bucket_seconds must be positive, got {memory.bucket_seconds}")
        for index, ids in state["buckets"]:
            for message_id in ids:
                if message_id in memory._bucket_of:
                    continue
                memory._buckets.setdefault(int(index), set()).add(str(message_id))
                memory._bucket_of[str(message_id)] = int(index)
        while len(memory._bucket_of) > max_ids:
            oldest = min(memory._buckets)
            memory._drop(oldest)
        return memory
