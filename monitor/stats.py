"""Streaming statistics behind one update/get interface, and the surge test built on them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


class Statistic(Protocol[T_co]):
    """A streaming statistic: feed weighted observations stamped with a time, read the estimate."""

    def update(self, value: float, at: float, weight: float = 1.0) -> None:
        """Fold in one observation made at time ``at`` (seconds) with a positive weight."""
        ...

    def get(self) -> T_co:
        """The current estimate."""
        ...


@dataclass(frozen=True)
class MeanVar:
    """A weighted mean and (population) variance with the total weight behind them."""

    mean: float
    variance: float
    weight: float
    count: int

    @property
    def std(self) -> float:
        """Standard deviation."""
        return math.sqrt(self.variance)


def _check_observation(value: float, at: float, weight: float) -> None:
    if not (math.isfinite(value) and math.isfinite(at) and math.isfinite(weight)):
        raise ValueError(f"observation must be finite, got value={value!r} at={at!r} weight={weight!r}")
    if weight <= 0:
        raise ValueError(f"weight must be positive, got {weight!r}")


class RunningMeanVar:
    """Weighted mean and variance over every observation ever seen (no forgetting)."""

    def __init__(self) -> None:
        self._weight = 0.0
        self._mean = 0.0
        self._m2 = 0.0
        self._count = 0

    def update(self, value: float, at: float, weight: float = 1.0) -> None:
        """Fold in one observation (West's weighted incremental algorithm; ``at`` is unused)."""
        _check_observation(value, at, weight)
        self._fold(value, weight)

    def _fold(self, value: float, weight: float) -> None:
        total = self._weight + weight
        delta = value - self._mean
        self._mean += delta * weight / total
        self._m2 += weight * delta * (value - self._mean)
        self._weight = total
        self._count += 1

    def get(self) -> MeanVar:
        """Current mean and variance (zeros before the first observation)."""
        variance = max(self._m2 / self._weight, 0.0) if self._weight > 0 else 0.0
        return MeanVar(self._mean, variance, self._weight, self._count)


class EwmaMeanVar(RunningMeanVar):
    """Exponentially weighted mean and variance whose weights halve every ``half_life`` seconds.

    Equivalent to weighting observation i by ``w_i * 2 ** (-(T - t_i) / half_life)`` where T is the
    latest time seen, so observations may arrive out of time order. ``get().weight`` is the decayed
    total as of the latest observation.
    """

    def __init__(self, half_life: float) -> None:
        if not math.isfinite(half_life) or half_life <= 0:
            raise ValueError(f"half_life must be positive, got {half_life!r}")
        super().__init__()
        self.half_life = half_life
        self._last_at: float | None = None

    def _decay(self, seconds: float) -> float:
        return math.exp2(-seconds / self.half_life)

    def update(self, value: float, at: float, weight: float = 1.0) -> None:
        """Fold in one observation made at time ``at``."""
        _check_observation(value, at, weight)
        if self._last_at is None or at >= self._last_at:
            if self._last_at is not None:
                factor = self._decay(at - self._last_at)
                self._weight *= factor
                self._m2 *= factor
            self._last_at = at
        else:
            weight *= self._decay(self._last_at - at)
            if weight <= 0.0:  # so old it underflowed: it carries no information
                return
        self._fold(value, weight)

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "half_life": self.half_life,
            "weight": self._weight,
            "mean": self._mean,
            "m2": self._m2,
            "count": self._count,
            "last_at": self._last_at,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EwmaMeanVar:
        """Rebuild from :meth:`to_state` output."""
        stat = cls(float(state["half_life"]))
        stat._weight = float(state["weight"])
        stat._mean = float(state["mean"])
        stat._m2 = float(state["m2"])
        stat._count = int(state["count"])
        stat._last_at = None if state["last_at"] is None else float(state["last_at"])
        return stat


# Keeps the null rate off 0 and 1, where the binomial variance vanishes and any single event
# would look infinitely surprising.
_RATE_FLOOR = 1e-3


@dataclass(frozen=True)
class BaselineEstimate:
    """A topic's normal negative rate: mean, spread, and the spread beyond binomial sampling noise."""

    mean: float
    std: float
    extra_variance: float
    samples: int


class RateBaseline:
    """Baseline of one topic's negative rate: an EWMA of window rates, each weighted by window volume.

    Weighting by volume makes the mean the pooled rate (a quiet window counts less). The variance of
    those rates contains binomial sampling noise, about ``p(1-p) / mean volume``; what is left over is
    real drift of the topic (over-dispersion), which the surge test adds to its null variance.
    """

    def __init__(self, half_life: float, min_samples: int, clip_z: float | None = 3.0) -> None:
        self.min_samples = min_samples
        self.clip_z = clip_z
        self._rates = EwmaMeanVar(half_life)
        # Same decay, unit weight per sample: the decayed sample count, for the mean window volume.
        self._samples = EwmaMeanVar(half_life)

    @property
    def half_life(self) -> float:
        """Seconds over which a sample's weight halves."""
        return self._rates.half_life

    @half_life.setter
    def half_life(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"half_life must be positive, got {seconds!r}")
        self._rates.half_life = self._samples.half_life = seconds

    def update(self, value: float, at: float, weight: float = 1.0) -> None:
        """Fold in one window's negative rate ``value`` observed at ``at`` over ``weight`` messages."""
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"a rate must lie in [0, 1], got {value!r}")
        estimate = self.get()
        if estimate is not None and self.clip_z is not None:
            # Once warmed up, a surge is clipped to clip_z standard errors so it cannot drag the baseline
            # (and widen its spread) fast enough to hide itself; a lasting shift is still absorbed, slowly.
            p = min(max(estimate.mean, _RATE_FLOOR), 1.0 - _RATE_FLOOR)
            margin = self.clip_z * math.sqrt(p * (1.0 - p) / weight + estimate.extra_variance)
            value = min(max(value, estimate.mean - margin), estimate.mean + margin)
        self._rates.update(value, at, weight)
        self._samples.update(0.0, at, 1.0)

    def get(self) -> BaselineEstimate | None:
        """The estimate, or None until ``min_samples`` windows have been seen."""
        rates = self._rates.get()
        if rates.count < self.min_samples:
            return None
        samples = self._samples.get()
        mean_volume = rates.weight / samples.weight
        binomial = rates.mean * (1.0 - rates.mean) / mean_volume
        return BaselineEstimate(
            mean=rates.mean,
            std=rates.std,
            extra_variance=max(rates.variance - binomial, 0.0),
            samples=rates.count,
        )

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "min_samples": self.min_samples,
            "clip_z": self.clip_z,
            "rates": self._rates.to_state(),
            "samples": self._samples.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RateBaseline:
        """Rebuild from :meth:`to_state` output."""
        rates = EwmaMeanVar.from_state(state["rates"])
        samples = EwmaMeanVar.from_state(state["samples"])
        clip_z = state["clip_z"]
        baseline = cls(rates.half_life, int(state["min_samples"]), None if clip_z is None else float(clip_z))
        baseline._rates = rates
        baseline._samples = samples
        return baseline


def binomial_surge(
    negative: int, volume: int, baseline_rate: float, min_volume: int, extra_variance: float = 0.0
) -> float | None:
    """One-sided binomial score z of ``negative`` out of ``volume`` against ``baseline_rate``.

    None below ``min_volume``. With ``extra_variance`` 0 this is the score test that the Wilson
    interval inverts: ``z > c`` exactly when the Wilson lower bound at ``c`` exceeds the baseline.
    """
    if not 0 <= negative <= volume:
        raise ValueError(f"need 0 <= negative <= volume, got {negative} of {volume}")
    if volume < max(min_volume, 1):
        return None
    p0 = min(max(baseline_rate, _RATE_FLOOR), 1.0 - _RATE_FLOOR)
    variance = p0 * (1.0 - p0) / volume + max(extra_variance, 0.0)
    return (negative / volume - p0) / math.sqrt(variance)


def wilson_lower_bound(negative: int, volume: int, z: float) -> float:
    """Lower end of the Wilson score interval for a binomial proportion at ``z`` standard errors."""
    if volume <= 0:
        return 0.0
    if not 0 <= negative <= volume:
        raise ValueError(f"need 0 <= negative <= volume, got {negative} of {volume}")
    p = negative / volume
    z2 = z * z
    centre = p + z2 / (2 * volume)
    margin = z * math.sqrt(p * (1 - p) / volume + z2 / (4 * volume * volume))
    return max((centre - margin) / (1 + z2 / volume), 0.0)
