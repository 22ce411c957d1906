"""Hooks the stream loop calls so the composition root can export metrics without ingest knowing how."""

from __future__ import annotations

from typing import Protocol

# Every kind the loop passes to Observer.error (a bounded set: it is a metric label).
STREAM_ERROR_KINDS = ("connect", "broker", "produce", "commit")


class Observer(Protocol):
    """What the loop reports; every method must be cheap and must not raise."""

    def consumed(self, count: int) -> None:
        """Records read from the input topic (each as it is accepted; re-reads after a rewind count again)."""

    def invalid(self, reason: str) -> None:
        """One record sent to the DLQ (after the broker acknowledged it)."""

    def scored(self, topic: str, sentiment: str, end_to_end_seconds: float | None) -> None:
        """One scored record acknowledged; latency from the input record's timestamp."""

    def batch(self, size: int, inference_seconds: float) -> None:
        """One micro-batch classified."""

    def lag(self, topic: str, partition: int, messages: int) -> None:
        """Consumer lag of one partition (high watermark minus committed offset)."""

    def forget_lag(self, topic: str, partition: int) -> None:
        """A partition moved away (revoked or lost): stop reporting its lag; its new owner does."""

    def committed(self, partitions: int) -> None:
        """An offset commit the broker accepted."""

    def error(self, kind: str) -> None:
        """A recoverable failure (kind: one of STREAM_ERROR_KINDS)."""

    def state(self, ready: bool, paused: bool, buffered: int) -> None:
        """Readiness (in the group, a recent broker round trip worked), backpressure and buffer size."""


class NullObserver:
    """An observer that ignores everything."""

    def consumed(self, count: int) -> None:
        """Ignore."""

    def invalid(self, reason: str) -> None:
        """Ignore."""

    def scored(self, topic: str, sentiment: str, end_to_end_seconds: float | None) -> None:
        """Ignore."""

    def batch(self, size: int, inference_seconds: float) -> None:
        """Ignore."""

    def lag(self, topic: str, partition: int, messages: int) -> None:
        """Ignore."""

    def forget_lag(self, topic: str, partition: int) -> None:
        """Ignore."""

    def committed(self, partitions: int) -> None:
        """Ignore."""

    def error(self, kind: str) -> None:
        """Ignore."""

    def state(self, ready: bool, paused: bool, buffered: int) -> None:
        """Ignore."""
