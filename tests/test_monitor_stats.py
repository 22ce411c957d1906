"""Baseline statistics and the surge test, against direct computations and their defining properties."""

import itertools
import math
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from monitor import (
    BaselineEstimate,
    EwmaMeanVar,
    MeanVar,
    Monitor,
    MonitorConfig,
    RateBaseline,
    RunningMeanVar,
    Statistic,
    binomial_surge,
    wilson_lower_bound,
)

observations = st.lists(
    st.tuples(
        st.floats(-100, 100, allow_nan=False),  # value
        st.floats(0, 3600, allow_nan=False),  # seconds since the previous observation
        st.floats(0.1, 1000, allow_nan=False),  # weight
    ),
    min_size=1,
    max_size=40,
)


def direct_mean_var(values: list[float], weights: list[float]) -> tuple[float, float]:
    total = math.fsum(weights)
    mean = math.fsum(w * x for x, w in zip(values, weights, strict=True)) / total
    return mean, math.fsum(w * (x - mean) ** 2 for x, w in zip(values, weights, strict=True)) / total


@settings(max_examples=150, deadline=None)
@given(observations, st.floats(60, 86400))
def test_ewma_matches_direct_exponential_weighting(
    obs: list[tuple[float, float, float]], half_life: float
) -> None:
    times = [*itertools.accumulate(dt for _, dt, _ in obs)]
    latest = times[-1]
    weights = [w * 2 ** (-(latest - t) / half_life) for (_, _, w), t in zip(obs, times, strict=True)]
    mean, variance = direct_mean_var([x for x, _, _ in obs], weights)

    stat = EwmaMeanVar(half_life)
    for (x, _, w), t in zip(obs, times, strict=True):
        stat.update(x, t, w)
    got = stat.get()
    assert got.count == len(obs)
    assert got.mean == pytest.approx(mean, rel=1e-9, abs=1e-9)
    assert got.variance == pytest.approx(variance, rel=1e-7, abs=1e-7)
    assert got.weight == pytest.approx(math.fsum(weights), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(observations, st.floats(600, 86400), st.randoms(use_true_random=False))
def test_ewma_does_not_depend_on_arrival_order(
    obs: list[tuple[float, float, float]], half_life: float, rng: random.Random
) -> None:
    times = [*itertools.accumulate(dt for _, dt, _ in obs)]
    rows = [(x, t, w) for (x, _, w), t in zip(obs, times, strict=True)]
    in_order, shuffled = EwmaMeanVar(half_life), EwmaMeanVar(half_life)
    for x, t, w in rows:
        in_order.update(x, t, w)
    rng.shuffle(rows)
    for x, t, w in rows:
        shuffled.update(x, t, w)
    a, b = in_order.get(), shuffled.get()
    assert b.mean == pytest.approx(a.mean, rel=1e-9, abs=1e-9)
    assert b.variance == pytest.approx(a.variance, rel=1e-6, abs=1e-6)


@given(observations)
def test_running_mean_var_matches_direct_computation(obs: list[tuple[float, float, float]]) -> None:
    stat = RunningMeanVar()
    for x, _, w in obs:
        stat.update(x, 0.0, w)
    mean, variance = direct_mean_var([x for x, _, _ in obs], [w for _, _, w in obs])
    assert stat.get().mean == pytest.approx(mean, rel=1e-9, abs=1e-9)
    assert stat.get().variance == pytest.approx(variance, rel=1e-7, abs=1e-7)


def test_statistics_share_the_protocol() -> None:
    stats: list[Statistic[MeanVar]] = [EwmaMeanVar(60.0), RunningMeanVar()]
    for stat in stats:
        stat.update(1.0, 0.0)
        stat.update(3.0, 0.0)
        assert stat.get() == MeanVar(mean=2.0, variance=1.0, weight=2.0, count=2)
    baseline: Statistic[BaselineEstimate | None] = RateBaseline(60.0, min_samples=1)
    baseline.update(0.25, 0.0, 40.0)
    assert baseline.get() == BaselineEstimate(mean=0.25, std=0.0, extra_variance=0.0, samples=1)


@pytest.mark.parametrize(
    "bad", [(math.nan, 0.0, 1.0), (1.0, math.inf, 1.0), (1.0, 0.0, 0.0), (1.0, 0.0, -2.0)]
)
def test_non_finite_or_weightless_observations_are_rejected(bad: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        EwmaMeanVar(60.0).update(*bad)


def test_ewma_halves_the_weight_of_old_observations() -> None:
    stat = EwmaMeanVar(half_life=100.0)
    stat.update(0.0, at=0.0)
    stat.update(1.0, at=100.0)
    # Weights 0.5 and 1: mean 2/3.
    assert stat.get().mean == pytest.approx(2 / 3)
    assert stat.get().weight == pytest.approx(1.5)


def test_baseline_waits_for_its_warm_up() -> None:
    baseline = RateBaseline(3600.0, min_samples=3)
    for i in range(2):
        baseline.update(0.2, float(i), 50.0)
        assert baseline.get() is None
    baseline.update(0.2, 2.0, 50.0)
    assert baseline.get() is not None
    with pytest.raises(ValueError, match="rate"):
        baseline.update(1.5, 3.0, 10.0)


def test_baseline_separates_binomial_noise_from_real_drift() -> None:
    rng = random.Random(7)
    volume = 100

    def binomial(p: float) -> float:
        return sum(rng.random() < p for _ in range(volume)) / volume

    steady, drifting = RateBaseline(1e9, 30), RateBaseline(1e9, 30)
    for i in range(1500):
        steady.update(binomial(0.2), float(i), volume)
        drifting.update(binomial(0.1 if i % 2 else 0.3), float(i), volume)
    s, d = steady.get(), drifting.get()
    assert s is not None and d is not None
    assert s.mean == pytest.approx(0.2, abs=0.01)
    assert s.std == pytest.approx(math.sqrt(0.2 * 0.8 / volume), rel=0.1)
    assert s.extra_variance < 0.2 * 0.2 * 0.8 / volume
    # Rates alternating 0.1 / 0.3 have a real spread of 0.1 on top of sampling noise.
    assert d.extra_variance == pytest.approx(0.01, rel=0.2)


@given(st.integers(1, 2000), st.floats(0.0, 1.0), st.data())
def test_surge_grows_with_the_negative_count(volume: int, p0: float, data: st.DataObject) -> None:
    low = data.draw(st.integers(0, volume))
    high = data.draw(st.integers(low, volume))
    extra = data.draw(st.floats(0.0, 0.05))
    a, b = binomial_surge(low, volume, p0, 1, extra), binomial_surge(high, volume, p0, 1, extra)
    assert a is not None and b is not None
    assert b >= a
    if high > low:
        assert b > a


@given(st.integers(1, 50), st.integers(1, 50), st.floats(0.01, 0.95), st.integers(1, 20), st.integers(1, 20))
def test_same_excess_rate_on_more_volume_is_more_surprising(
    numerator: int, extra_denominator: int, p0: float, small: int, more: int
) -> None:
    denominator = numerator + extra_denominator - 1
    assume(numerator / denominator > p0 + 1e-6)
    a = binomial_surge(numerator * small, denominator * small, p0, 1)
    b = binomial_surge(numerator * (small + more), denominator * (small + more), p0, 1)
    assert a is not None and b is not None and 0 < a < b


def test_surge_is_none_below_the_minimum_volume() -> None:
    assert binomial_surge(9, 9, 0.1, min_volume=10) is None
    surge = binomial_surge(10, 10, 0.1, min_volume=10)
    assert surge is not None and surge > 5
    assert binomial_surge(0, 0, 0.1, min_volume=0) is None
    with pytest.raises(ValueError):
        binomial_surge(11, 10, 0.1, min_volume=1)


def test_surge_stays_finite_on_a_degenerate_baseline() -> None:
    surge = binomial_surge(1, 100, 0.0, min_volume=20)
    assert surge is not None and math.isfinite(surge)
    calm = binomial_surge(100, 100, 1.0, min_volume=20)
    assert calm is not None and calm < 1


@settings(max_examples=300)
@given(st.integers(1, 5000), st.data(), st.floats(0.01, 0.99), st.floats(0.5, 4.0))
def test_surge_above_z_is_the_wilson_lower_bound_above_baseline(
    volume: int, data: st.DataObject, p0: float, z: float
) -> None:
    negative = data.draw(st.integers(0, volume))
    surge = binomial_surge(negative, volume, p0, 1)
    assert surge is not None
    assume(abs(surge - z) > 1e-6)
    assert (surge > z) == (wilson_lower_bound(negative, volume, z) > p0)


@given(st.integers(0, 1000), st.integers(1, 1000), st.floats(0.0, 5.0))
def test_wilson_lower_bound_lies_below_the_observed_rate(negative: int, extra: int, z: float) -> None:
    volume = negative + extra
    bound = wilson_lower_bound(negative, volume, z)
    assert 0.0 <= bound <= negative / volume + 1e-12


def test_monitor_surge_flags_only_the_topic_that_turns_negative() -> None:
    config = MonitorConfig(horizons=(300, 900), bucket_seconds=10, allowed_lateness=0, min_volume=20)
    monitor = Monitor(config)
    t, n = 1_700_000_000.0, 0
    for phase_end, surging in ((7200, False), (7500, True)):
        while t < 1_700_000_000.0 + phase_end:
            for topic in ("Macro", "Earnings"):
                i = n // 2  # each topic's own message count
                negative = (i % 10 == 0) or (surging and topic == "Macro" and i % 10 < 6)
                monitor.observe(f"m{n}", topic, "negative" if negative else "neutral", 0.5, t, "h")
                n += 1
            t += 2.0
    snaps = {(s.topic, s.window): s for s in monitor.snapshot(t)}
    macro, earnings = snaps[("Macro", "5m")], snaps[("Earnings", "5m")]
    assert macro.baseline_mean is not None and macro.baseline_mean < 0.2
    assert earnings.baseline_mean == pytest.approx(0.1, abs=0.01)
    assert macro.surge is not None and macro.surge > 10
    assert earnings.surge is not None and abs(earnings.surge) < 3
    assert macro.rate is not None and macro.rate > 0.5


def test_a_warmed_up_baseline_is_not_dragged_by_a_surge() -> None:
    clipped, raw = RateBaseline(3600.0, 30), RateBaseline(3600.0, 30, clip_z=None)
    for i in range(200):
        rate = 0.1 if i < 150 else 0.9
        clipped.update(rate, float(i), 100.0)
        raw.update(rate, float(i), 100.0)
    c, r = clipped.get(), raw.get()
    assert c is not None and r is not None
    assert c.mean < 0.15 < r.mean
    assert c.std < r.std
