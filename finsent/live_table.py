"""Per-topic volume and negative share of the scored stream, rendered as a terminal table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
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
