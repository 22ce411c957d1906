"""Monitor configuration: window horizons, bucket width, lateness, baseline and surge settings."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

OTHER_TOPIC = "other"
"""Label that unknown topics (or topics past the cap) are folded into, keeping label cardinality bounded."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float) -> float:
    """Seconds in a duration like ``"90s"``, ``"5m"``, ``"1h30m"`` or a plain number of seconds."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        spec = text.strip().lower()
        try:
            seconds = float(spec)
        except ValueError:
            parts = _DURATION.findall(spec)
            if not parts or "".join(number + unit for number, unit in parts) != spec:
                raise ValueError(f"invalid duration {text!r}; expected e.g. '30s', '5m', '1h30m'") from None
            seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {text!r}; must be finite and not negative")
    return seconds


def window_label(seconds: int) -> str:
    """Short label for a window horizon: 300 -> "5m", 3600 -> "1h", 5400 -> "90m", 45 -> "45s"."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@dataclass(frozen=True)
class MonitorConfig:
    """Everything the monitor core needs; times are in seconds of event time."""

    horizons: tuple[int, ...] = (300, 900, 3600)
    bucket_seconds: int = 10
    allowed_lateness: float = 120.0
    # Events stamped further than this ahead of processing time are counted at the latest event time
    # seen instead, so one bad published_at cannot push the watermark ahead and make later events "late".
    max_future_skew: float | None = None
    """At most allowed_lateness, or an accepted event could still make live ones late; None: half of it."""
    dedupe_retention: float | None = None
    """How long ids are remembered (event time); None means the longest horizon plus the lateness."""
    dedupe_max_ids: int = 1_000_000
    baseline_half_life: float = 6 * 3600.0
    baseline_window: int | None = None
    """Horizon whose rate feeds the baseline; None means the shortest horizon."""
    baseline_min_samples: int = 30
    baseline_clip_z: float | None = 3.0
    """Once warmed up, baseline samples are clipped to this many standard errors; None disables."""
    min_volume: int = 20
    """Windows below this volume get no surge statistic and do not feed the baseline."""
    top_k: int = 5
    headline_max_chars: int = 300
    topics: tuple[str, ...] | None = None
    """Known topic labels; anything else is counted as ``other``. None accepts up to ``max_topics``."""
    max_topics: int = 64

    def __post_init__(self) -> None:
        self._check_windows()
        self._check_baseline()
        self._check_limits()

    def _check_windows(self) -> None:
        if self.bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be positive")
        if not self.horizons:
            raise ValueError("horizons must name at least one window")
        if len(set(self.horizons)) != len(self.horizons):
            raise ValueError(f"horizons must be distinct, got {self.horizons}")
        for horizon in self.horizons:
            if horizon <= 0 or horizon % self.bucket_seconds:
                raise ValueError(
                    f"horizon {horizon}s must be a positive multiple of bucket_seconds={self.bucket_seconds}"
                )
        for name in ("allowed_lateness", "future_skew"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and not negative, got {value!r}")
        if self.future_skew > self.allowed_lateness:
            raise ValueError(
                f"max_future_skew ({self.future_skew}) must not exceed allowed_lateness ({self.allowed_lateness})"
            )

    def _check_baseline(self) -> None:
        if self.baseline_window is not None and self.baseline_window not in self.horizons:
            raise ValueError(
                f"baseline_window {self.baseline_window}s is not one of horizons {self.horizons}"
            )
        if not math.isfinite(self.baseline_half_life) or self.baseline_half_life < 0:
            raise ValueError(
                f"baseline_half_life must be finite and not negative, got {self.baseline_half_life!r}"
            )
        if self.baseline_half_life == 0:
            raise ValueError("baseline_half_life must be positive")
        if self.baseline_clip_z is not None and not (
            math.isfinite(self.baseline_clip_z) and self.baseline_clip_z > 0
        ):
            raise ValueError("baseline_clip_z must be positive (or None)")
        if self.baseline_min_samples < 1 or self.min_volume < 1:
            raise ValueError("baseline_min_samples and min_volume must be at least 1")

    def _check_limits(self) -> None:
        # A message is accepted while it is within its topic's lateness and not older than every window
        # (the longest horizon plus the lateness behind the stream): its id must be remembered that long.
        if self.dedupe_retention is not None and (
            not math.isfinite(self.dedupe_retention)
            or self.dedupe_retention < self.longest_horizon + self.allowed_lateness
        ):
            raise ValueError(
                "dedupe_retention must be finite and at least the longest horizon plus allowed_lateness"
            )
        for name in ("dedupe_max_ids", "top_k", "headline_max_chars", "max_topics"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.topics is not None and OTHER_TOPIC in self.topics:
            raise ValueError(f"topics must not include the reserved label {OTHER_TOPIC!r}")

    @property
    def longest_horizon(self) -> int:
        """Longest window in seconds."""
        return max(self.horizons)

    @property
    def reference_horizon(self) -> int:
        """Window whose rate the baseline learns from."""
        return self.baseline_window if self.baseline_window is not None else min(self.horizons)

    @property
    def future_skew(self) -> float:
        """Effective max_future_skew: how far ahead of processing time an event time may move the watermark."""
        return self.max_future_skew if self.max_future_skew is not None else self.allowed_lateness / 2

    @property
    def dedupe_seconds(self) -> float:
        """Effective id retention in seconds of event time."""
        if self.dedupe_retention is not None:
            return self.dedupe_retention
        return self.longest_horizon + self.allowed_lateness
