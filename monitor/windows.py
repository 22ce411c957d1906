"""Fixed-width event-time buckets per topic, from which every window horizon is summed."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from monitor.snapshot import Headline

# p_negative is summed as an integer number of billionths: integer addition is exact and
# order-independent, so out-of-order arrival and restore from a checkpoint give identical sums.
P_SCALE = 1_000_000_000


def scaled_probability(p: float) -> int:
    """A probability as an integer number of billionths."""
    return round(p * P_SCALE)


@dataclass
class Bucket:
    """Counts for one topic over one bucket interval, plus its most negative headlines."""

    volume: int = 0
    negative: int = 0
    p_sum: int = 0
    top: list[Headline] = field(default_factory=list)
    """A min-heap of at most top_k headlines."""

    def consistent(self) -> bool:
        """The counts could have come from real messages (a check on restored state)."""
        return 0 <= self.negative <= self.volume and 0 <= self.p_sum <= self.volume * P_SCALE

    def add(self, negative: bool, p_negative: float, headline: Headline, top_k: int) -> None:
        """Count one message and keep its headline if it is among the k most negative."""
        self.volume += 1
        self.negative += int(negative)
        self.p_sum += scaled_probability(p_negative)
        if len(self.top) < top_k:
            heapq.heappush(self.top, headline)
        elif headline > self.top[0]:
            heapq.heapreplace(self.top, headline)


@dataclass(frozen=True)
class Totals:
    """Sums over a run of buckets."""

    volume: int
    negative: int
    p_sum: int

    @property
    def rate(self) -> float | None:
        """Fraction labelled negative, None when empty."""
        return self.negative / self.volume if self.volume else None

    @property
    def expected_rate(self) -> float | None:
        """Mean p_negative, None when empty."""
        return self.p_sum / P_SCALE / self.volume if self.volume else None


class WindowStore:
    """Buckets keyed by ``floor(event_time / bucket_seconds)`` for each topic."""

    def __init__(self, bucket_seconds: int, top_k: int) -> None:
        self.bucket_seconds = bucket_seconds
        self.top_k = top_k
        self._buckets: dict[str, dict[int, Bucket]] = {}
        self._expired_below = -math.inf  # skips rescans while the expiry bound has not moved

    def index(self, event_time: float) -> int:
        """Index of the bucket holding ``event_time``."""
        return math.floor(event_time / self.bucket_seconds)

    def add(
        self, topic: str, event_time: float, negative: bool, p_negative: float, headline: Headline
    ) -> None:
        """Count one message in its topic's bucket."""
        buckets = self._buckets.setdefault(topic, {})
        index = self.index(event_time)
        bucket = buckets.get(index)
        if bucket is None:
            bucket = buckets[index] = Bucket()
        bucket.add(negative, p_negative, headline, self.top_k)

    def _range(self, topic: str, first: int, last: int) -> Iterator[Bucket]:
        buckets = self._buckets.get(topic, {})
        if last - first + 1 < len(buckets):
            return (buckets[i] for i in range(first, last + 1) if i in buckets)
        return (bucket for i, bucket in buckets.items() if first <= i <= last)

    def totals(self, topic: str, first: int, last: int) -> Totals:
        """Sums over buckets ``first..last`` inclusive."""
        volume = negative = p_sum = 0
        for bucket in self._range(topic, first, last):
            volume += bucket.volume
            negative += bucket.negative
            p_sum += bucket.p_sum
        return Totals(volume, negative, p_sum)

    def top(self, topic: str, first: int, last: int, k: int) -> tuple[Headline, ...]:
        """The k most negative headlines in buckets ``first..last`` (highest p_negative first)."""
        # Each bucket keeps its own top k, so the window's top k is among their union.
        candidates = (h for bucket in self._range(topic, first, last) for h in bucket.top)
        return tuple(heapq.nlargest(k, candidates))

    def expired(self, event_time: float) -> bool:
        """Whether ``event_time`` falls in a bucket already forgotten (older than every window)."""
        return self.index(event_time) < self._expired_below

    def expire(self, before: int) -> None:
        """Forget buckets with index below ``before``."""
        if before <= self._expired_below:
            return
        self._expired_below = before
        for buckets in self._buckets.values():
            for index in [i for i in buckets if i < before]:
                del buckets[index]

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "bucket_seconds": self.bucket_seconds,
            "top_k": self.top_k,
            "topics": {
                topic: [
                    [index, b.volume, b.negative, b.p_sum, [h.to_state() for h in sorted(b.top)]]
                    for index, b in sorted(buckets.items())
                ]
                for topic, buckets in sorted(self._buckets.items())
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], top_k: int | None = None) -> WindowStore:
        """Rebuild from :meth:`to_state` output, optionally keeping fewer headlines per bucket.

        ValueError (or KeyError, TypeError) when the state is malformed.
        """
        store = cls(int(state["bucket_seconds"]), int(state["top_k"]) if top_k is None else top_k)
        for topic, rows in state["topics"].items():
            buckets = store._buckets.setdefault(str(topic), {})
            for index, volume, negative, p_sum, top in rows:
                bucket = Bucket(int(volume), int(negative), int(p_sum))
                if not bucket.consistent():
                    raise ValueError(f"bucket {index} of {topic!r} has inconsistent counts")
                # A sorted list is a valid min-heap.
                bucket.top = sorted(Headline.from_state(h) for h in top)[-store.top_k :]
                buckets[int(index)] = bucket
        return store
