"""Drift signals: Jensen-Shannon divergence properties and the rolling tracker."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.drift import DriftTracker, js_divergence, reference_from_manifest

counts = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=3, max_size=3).filter(
    lambda values: sum(values) > 0
)


@given(counts, counts)
@settings(max_examples=200, deadline=None)
def test_js_is_bounded_and_symmetric(p: list[float], q: list[float]) -> None:
    value = js_divergence(p, q)
    assert 0.0 <= value <= math.log(2) + 1e-12
    assert value == pytest.approx(js_divergence(q, p), abs=1e-12)


@given(counts, st.floats(min_value=1e-3, max_value=1e3))
@settings(max_examples=100, deadline=None)
def test_js_is_zero_for_identical_distributions(p: list[float], scale: float) -> None:
    assert js_divergence(p, [value * scale for value in p]) == pytest.approx(0.0, abs=1e-9)


def test_js_of_disjoint_distributions_is_ln2() -> None:
    assert js_divergence([1, 0, 0], [0, 0, 5]) == pytest.approx(math.log(2))
    with pytest.raises(ValueError):
        js_divergence([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        js_divergence([-1, 2, 3], [1, 2, 3])


def test_tracker_window_confidence_and_divergence() -> None:
    reference = {"topic": [1.0] * 20, "sentiment": [1.0, 2.0, 1.0]}
    tracker = DriftTracker(reference, window=4, low_confidence=0.5)
    tracker.observe("sentiment", [0, 1, 2, 1], [0.9, 0.4, 0.8, 0.3])
    snapshot = tracker.snapshot("sentiment")
    assert snapshot.count == 4
    assert snapshot.divergence == pytest.approx(0.0)
    assert snapshot.confidence_mean == pytest.approx(0.6)
    assert snapshot.low_confidence_share == pytest.approx(0.5)
    tracker.observe("sentiment", [0, 0, 0, 0], [0.95] * 4)  # the window slides: only these remain
    slid = tracker.snapshot("sentiment")
    assert slid.count == 4 and slid.low_confidence_share == 0.0
    assert slid.confidence_mean == pytest.approx(0.95)
    assert slid.divergence == pytest.approx(js_divergence([1, 0, 0], [1, 2, 1]))
    assert tracker.snapshot("topic").count == 0 and tracker.snapshot("topic").divergence is None


def test_tracker_without_reference_reports_no_divergence() -> None:
    tracker = DriftTracker(None, window=10)
    tracker.observe("topic", [3, 3], [0.7, 0.9])
    assert tracker.snapshot("topic").divergence is None
    assert tracker.snapshot("topic").confidence_mean == pytest.approx(0.8)
    with pytest.raises(ValueError):
        DriftTracker({"topic": [1.0, 2.0], "sentiment": [1, 1, 1]})


def test_reference_from_manifest() -> None:
    manifest = {
        "training": {"data": {"label_distribution": {"topic": list(range(20)), "sentiment": [1, 2, 3]}}}
    }
    reference = reference_from_manifest(manifest)
    assert reference is not None and reference["sentiment"] == [1.0, 2.0, 3.0]
    assert reference_from_manifest({"training": {"data": {}}}) is None
    assert np.isclose(sum(DriftTracker(reference).reference["topic"]), 1.0)
