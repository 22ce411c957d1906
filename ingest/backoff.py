"""Exponential backoff with jitter, for reconnecting and retrying after a broker error."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential backoff with jitter, reset after a success."""

    initial: float
    maximum: float
    current: float = field(default=0.0)

    def next_delay(self) -> float:
        """The next delay to wait, doubling up to the maximum."""
        self.current = self.initial if self.current == 0.0 else min(self.maximum, self.current * 2)
        return self.current * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        """Start again from the initial delay."""
        self.current = 0.0
