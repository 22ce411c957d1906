"""Immutable views of the monitor's state that metrics and alerts consume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Headline:
    """One scored message kept as evidence; ordering is by p_negative, then id."""

    p_negative: float
    id: str
    text: str
    event_time: float

    def to_state(self) -> list[Any]:
        """JSON-serialisable form."""
        return [self.p_negative, self.id, self.text, self.event_time]

    @classmethod
    def from_state(cls, state: list[Any]) -> Headline:
        """Rebuild from :meth:`to_state` output."""
        p_negative, message_id, text, event_time = state
        return cls(float(p_negative), str(message_id), str(text), float(event_time))


@dataclass(frozen=True)
class WindowSnapshot:
    """One topic over one window ending at ``end``: counts, rates, baseline and surge statistic.

    ``rate`` and ``expected_rate`` are None when the window is empty; ``baseline_*`` are None until the
    baseline has warmed up; ``surge`` is None below the minimum volume or without a baseline.
    """

    topic: str
    window: str
    window_seconds: int
    end: float
    volume: int
    negative: int
    rate: float | None
    expected_rate: float | None
    baseline_mean: float | None
    baseline_std: float | None
    surge: float | None
    headlines: tuple[Headline, ...]
    """The most negative messages in the window (highest p_negative first)."""
