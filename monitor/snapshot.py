"""Immutable views of the monitor's state that metrics and alerts consume."""

from __future__ import annotations

from collections.abc import Mapping
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable mapping with named fields (for records on a topic)."""
        return {
            "p_negative": self.p_negative,
            "id": self.id,
            "text": self.text,
            "event_time": self.event_time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Headline:
        """Rebuild from :meth:`to_dict` output; KeyError/TypeError/ValueError when malformed."""
        return cls(float(data["p_negative"]), str(data["id"]), str(data["text"]), float(data["event_time"]))


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable mapping of every field, headlines as dicts."""
        return {
            "topic": self.topic,
            "window": self.window,
            "window_seconds": self.window_seconds,
            "end": self.end,
            "volume": self.volume,
            "negative": self.negative,
            "rate": self.rate,
            "expected_rate": self.expected_rate,
            "baseline_mean": self.baseline_mean,
            "baseline_std": self.baseline_std,
            "surge": self.surge,
            "headlines": [headline.to_dict() for headline in self.headlines],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowSnapshot:
        """Rebuild from :meth:`to_dict` output; KeyError/TypeError/ValueError when malformed."""

        def optional(name: str) -> float | None:
            value = data[name]
            return None if value is None else float(value)

        return cls(
            topic=str(data["topic"]),
            window=str(data["window"]),
            window_seconds=int(data["window_seconds"]),
            end=float(data["end"]),
            volume=int(data["volume"]),
            negative=int(data["negative"]),
            rate=optional("rate"),
            expected_rate=optional("expected_rate"),
            baseline_mean=optional("baseline_mean"),
            baseline_std=optional("baseline_std"),
            surge=optional("surge"),
            headlines=tuple(Headline.from_dict(item) for item in data["headlines"]),
        )
