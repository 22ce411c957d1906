"""The demo's terminal table: per-topic volume and negative share of the scored stream, and the alerts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class TopicStats:
    """Running counts per topic label."""

    volume: Counter[str] = field(default_factory=Counter)
    negative: Counter[str] = field(default_factory=Counter)
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0

    def add(self, record: dict[str, Any]) -> None:
        """Count one scored record (a replayed duplicate id is counted once)."""
        message_id = str(record.get("id"))
        if message_id in self.ids:
            self.duplicates += 1
            return
        self.ids.add(message_id)
        topic = str(record.get("topic", "?"))
        self.volume[topic] += 1
        if record.get("sentiment") == "negative":
            self.negative[topic] += 1

    @property
    def total(self) -> int:
        """Distinct scored messages."""
        return sum(self.volume.values())


def render(stats: TopicStats, title: str, width: int = 20) -> str:
    """A fixed-width table: topic, volume, negative count, negative share with a bar."""
    lines = [title, f"{'topic':<28} {'volume':>7} {'negative':>8} {'neg share':>9}  "]
    lines.append("-" * (28 + 1 + 7 + 1 + 8 + 1 + 9 + 2 + width))
    for topic, volume in stats.volume.most_common():
        share = stats.negative[topic] / volume
        bar = "#" * round(share * width)
        lines.append(f"{topic[:28]:<28} {volume:>7} {stats.negative[topic]:>8} {share:>8.1%}  {bar}")
    total = stats.total
    negative = sum(stats.negative.values())
    share = negative / total if total else 0.0
    lines.append("-" * (28 + 1 + 7 + 1 + 8 + 1 + 9 + 2 + width))
    lines.append(f"{'all topics':<28} {total:>7} {negative:>8} {share:>8.1%}")
    return "\n".join(lines)


@dataclass
class AlertBoard:
    """Alerts read back from the `alerts` topic: what fires now, and the latest transitions."""

    firing: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    fired: int = 0
    resolved: int = 0
    seen: set[str] = field(default_factory=set)

    def add(self, event: dict[str, Any]) -> None:
        """Apply one alert event (an idempotency key seen before is ignored)."""
        key = str(event.get("notification_key"))
        if key in self.seen:
            return
        self.seen.add(key)
        fingerprint = str(event.get("fingerprint"))
        when = _clock(event.get("ends_at") or event.get("starts_at"))
        line = f"{when} {event.get('status', '?'):8} {event.get('rule')} on {event.get('topic')}"
        line += f": {event.get('annotations', {}).get('summary', '')}"
        if event.get("status") == "firing":
            self.firing[fingerprint] = event
            if not event.get("repeat"):
                self.fired += 1
        else:
            self.firing.pop(fingerprint, None)
            self.resolved += 1
        self.history = [*self.history, line][-6:]

    def render(self) -> str:
        """The alert section of the table."""
        lines = [f"alerts: {len(self.firing)} firing ({self.fired} fired, {self.resolved} resolved so far)"]
        for event in self.firing.values():
            lines.append(
                f"  FIRING  [{event.get('severity')}] {event.get('rule')} on {event.get('topic')} "
                f"since {_clock(event.get('starts_at'))}: {event.get('annotations', {}).get('summary', '')}"
            )
        if self.history:
            lines.append("recent:")
            lines += [f"  {line}" for line in self.history]
        return "\n".join(lines)


def _clock(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch)).strftime("%H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "--:--:--"
