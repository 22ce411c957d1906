"""Engine holder, per-batch version binding and the drift monitor, with fake engines (no ONNX)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from finsent.config import load_config
from finsent.drift_monitor import FAILED_REQUEST_RETRY_S, DriftMonitor
from finsent.errors import UsageError
from finsent.hotswap import EngineHolder, RegistryWatcher, holder_classifier
from finsent.metrics import ClassifyMetrics
from model import Engine, Prediction
from model.drift import js_divergence
from model.registry import ModelRegistry
from tests.test_registry import fake_model


class FakeEngine:
    """Answers every text with one topic/sentiment; can run a hook in the middle of a batch."""

    def __init__(self, version: str, topic: str = "Earnings", hook: Any = None) -> None:
        self.version, self.variant, self.providers = version, "int8", ["CPUExecutionProvider"]
        self.manifest: dict[str, Any] = {"training": {"data": {}}}
        self.topic, self.hook = topic, hook

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        results = []
        for index, _ in enumerate(texts):
            if index == 1 and self.hook is not None:
                self.hook()  # e.g. a swap landing while this batch is being scored
            scores = {"negative": 0.1, "neutral": 0.3, "positive": 0.6}
            results.append(Prediction(self.topic, 0.4, "positive", scores))
        return results


def as_engine(fake: FakeEngine) -> Engine:
    return cast(Engine, fake)


def test_a_swap_during_a_batch_applies_from_the_next_batch() -> None:
    new = as_engine(FakeEngine("v2"))
    first_engine = FakeEngine("v1")
    holder = EngineHolder(as_engine(first_engine))
    first_engine.hook = lambda: holder.swap(new)
    classify = holder_classifier(holder)
    first = classify(["a", "b", "c"])
    assert [result["model_version"] for result in first] == ["v1", "v1", "v1"]
    assert holder.engine is new
    assert {result["model_version"] for result in classify(["d", "e"])} == {"v2"}


def test_texts_longer_than_the_budget_are_counted_per_batch() -> None:
    class Truncating(FakeEngine):
        def predict(self, texts: Sequence[str]) -> list[Prediction]:
            return [
                replace(p, truncated=len(t) > 5) for p, t in zip(super().predict(texts), texts, strict=True)
            ]

    counted: list[int] = []
    classify = holder_classifier(EngineHolder(as_engine(Truncating("v1"))), on_truncated=counted.append)
    classify(["short", "a long article", "another long one"])
    classify(["tiny"])  # nothing truncated: not reported
    assert counted == [2]
    metrics = ClassifyMetrics()
    holder_classifier(EngineHolder(as_engine(Truncating("v1"))), on_truncated=metrics.truncated_total.inc)(
        ["a long article"]
    )
    assert metrics.registry.get_sample_value("finsent_truncated_texts_total") == 1.0


def test_watcher_swaps_to_the_current_version_and_publishes_it(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    for name in ("v1", "v2"):
        registry.add(fake_model(tmp_path / name, name))
    registry.promote("v1")
    metrics = ClassifyMetrics()
    holder = EngineHolder(as_engine(FakeEngine("v1")))
    swapped: list[str] = []
    watcher = RegistryWatcher(
        registry,
        holder,
        lambda path: as_engine(FakeEngine(path.name)),
        metrics,
        interval=60,
        on_swap=lambda engine: swapped.append(engine.version),
    )
    assert watcher.check() is False, "already serving the current version"
    registry.promote("v2")
    assert watcher.check() is True
    assert holder.engine.version == "v2" and swapped == ["v2"]
    assert (
        metrics.registry.get_sample_value(
            "finsent_model_info", {"version": "v2", "variant": "int8", "provider": "CPUExecutionProvider"}
        )
        == 1.0
    )
    assert (
        metrics.registry.get_sample_value(
            "finsent_model_info", {"version": "v1", "variant": "int8", "provider": "CPUExecutionProvider"}
        )
        is None
    )
    assert metrics.registry.get_sample_value("finsent_model_swaps_total") == 1.0


def test_drift_past_the_threshold_requests_one_retrain(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    metrics = ClassifyMetrics()
    drift = DriftMonitor(metrics, window=20, low_confidence=0.5, threshold=0.2, registry=registry)
    engine = FakeEngine("v1", topic="Earnings")
    engine.manifest = {
        "training": {"data": {"label_distribution": {"topic": [1] * 20, "sentiment": [1, 1, 1]}}}
    }
    drift.reset(as_engine(engine))
    classify = holder_classifier(EngineHolder(as_engine(engine)), drift)
    classify(["x"] * 10)
    assert registry.pending_request() is None, "no request before the window is full"
    classify(["x"] * 10)
    request = registry.pending_request()
    assert request is not None and "prediction drift" in request["reason"]
    classify(["x"] * 10)
    assert metrics.registry.get_sample_value("finsent_retrain_requests_total") == 1.0, "one request at a time"
    topic_drift = metrics.registry.get_sample_value("finsent_prediction_drift", {"task": "topic"})
    assert topic_drift == pytest.approx(js_divergence([0, 0, 0, 0, 0, 20] + [0] * 14, [1] * 20))
    assert topic_drift is not None and topic_drift > 0.2
    assert metrics.registry.get_sample_value("finsent_low_confidence_share", {"task": "topic"}) == 1.0
    assert metrics.registry.get_sample_value(
        "finsent_prediction_confidence_mean", {"task": "sentiment"}
    ) == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"registry": "r", "swap_poll_interval": "0"}, "--swap-poll-interval: must be above 0"),
        ({"low_confidence_threshold": "1.5"}, "--low-confidence-threshold: must be at most 1"),
        ({"low_confidence_threshold": "-0.1"}, "--low-confidence-threshold: must be at least 0"),
        # Thresholds are plain numbers, not durations ("500ms" was read as 0.5).
        ({"low_confidence_threshold": "500ms"}, "--low-confidence-threshold: expected a number, got '500ms'"),
        ({"low_confidence_threshold": "nan"}, "--low-confidence-threshold: expected a finite number"),
        ({"registry": "r", "drift_retrain_threshold": "abc"}, "--drift-retrain-threshold: expected a number"),
        (
            {"registry": "r", "drift_retrain_threshold": "0.9"},
            "--drift-retrain-threshold: must be at most 0.69",
        ),
        ({"drift_retrain_threshold": "0.1"}, "drift_retrain_threshold needs registry"),
        ({"drift_request_cooldown": "-1"}, "--drift-request-cooldown: invalid duration '-1'"),
    ],
)
def test_hot_swap_and_drift_settings_are_validated(flags: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_config(flags, environ={})


def test_hot_swap_settings_defaults_and_values() -> None:
    config = load_config(
        {
            "registry": "reg",
            "swap_poll_interval": "500ms",
            "drift_retrain_threshold": "0.2",
            "drift_request_cooldown": "30m",
        },
        environ={},
    )
    assert config.registry == Path("reg")
    assert config.swap_poll_interval == pytest.approx(0.5)
    assert config.drift_request_cooldown == 1800.0
    assert config.drift_retrain_threshold == pytest.approx(0.2)
    at_most = load_config({"registry": "r", "drift_retrain_threshold": str(math.log(2))}, environ={})
    assert at_most.drift_retrain_threshold == pytest.approx(math.log(2))
    defaults = load_config({}, environ={})
    assert defaults.registry is None and defaults.swap_poll_interval == 5.0 and defaults.drift_window == 1000
    assert defaults.drift_request_cooldown == 6 * 3600.0


def test_persistent_drift_requests_once_per_serving_version_or_cooldown(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    metrics = ClassifyMetrics()
    now = [1000.0]
    drift = DriftMonitor(
        metrics,
        window=10,
        low_confidence=0.5,
        threshold=0.2,
        registry=registry,
        clock=lambda: now[0],
        request_cooldown=1800.0,
    )
    engine = FakeEngine("v1", topic="Earnings")
    engine.manifest = {
        "training": {"data": {"label_distribution": {"topic": [1] * 20, "sentiment": [1, 1, 1]}}}
    }
    drift.reset(as_engine(engine))
    classify = holder_classifier(EngineHolder(as_engine(engine)), drift)
    classify(["x"] * 10)
    assert registry.pending_request() is not None
    registry.clear_request()  # a retrain run consumed it and rejected its challenger: same model serving
    for _ in range(20):
        classify(["x"] * 10)
    assert registry.pending_request() is None, "the same drift does not request run after run"
    now[0] += 1799.0
    classify(["x"] * 10)
    assert registry.pending_request() is None, "not before the cooldown is over"
    now[0] += 1.0
    classify(["x"] * 10)
    assert registry.pending_request() is not None, "the cooldown is over: drift that persists asks again"
    registry.clear_request()
    classify(["x"] * 10)
    assert registry.pending_request() is None
    drift.reset(as_engine(engine))  # a new version is serving: its own full window may request
    classify(["x"] * 5)
    assert registry.pending_request() is None, "not before the new window is full"
    classify(["x"] * 5)
    assert registry.pending_request() is not None
    assert metrics.registry.get_sample_value("finsent_retrain_requests_total") == 3.0


def test_a_retrain_request_that_cannot_be_written_does_not_stop_scoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only registry or a full disk: the batch is still scored, the failure is counted and
    retried after FAILED_REQUEST_RETRY_S (it used to raise inside the classifier: every message of
    every batch went to the DLQ as classify_failed)."""
    registry = ModelRegistry(tmp_path / "registry")
    metrics = ClassifyMetrics()
    now = [1000.0]
    drift = DriftMonitor(
        metrics, window=10, low_confidence=0.5, threshold=0.2, registry=registry, clock=lambda: now[0]
    )
    engine = FakeEngine("v1", topic="Earnings")
    engine.manifest = {
        "training": {"data": {"label_distribution": {"topic": [1] * 20, "sentiment": [1, 1, 1]}}}
    }
    drift.reset(as_engine(engine))
    classify = holder_classifier(EngineHolder(as_engine(engine)), drift)
    attempts: list[str] = []

    def read_only(reason: str, details: dict[str, Any] | None = None) -> bool:
        attempts.append(reason)
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(registry, "request_retrain", read_only)
    for _ in range(5):
        assert [result["topic"] for result in classify(["x"] * 10)] == ["Earnings"] * 10
    assert len(attempts) == 1, "not retried on every batch"
    assert (
        metrics.registry.get_sample_value(
            "finsent_stream_errors_total", {"stage": "classify", "kind": "retrain_request"}
        )
        == 1.0
    )
    now[0] += FAILED_REQUEST_RETRY_S
    monkeypatch.undo()
    classify(["x"] * 10)
    assert registry.pending_request() is not None, "written once the registry takes writes again"
    assert metrics.registry.get_sample_value("finsent_retrain_requests_total") == 1.0


def test_a_version_that_failed_to_load_is_retried_once_current_went_back(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    for name in ("v1", "bad"):
        registry.add(fake_model(tmp_path / name, name))
    registry.promote("v1")
    metrics = ClassifyMetrics()
    holder = EngineHolder(as_engine(FakeEngine("v1")))
    loads: list[str] = []

    def load(path: Path) -> Engine:
        loads.append(path.name)
        if len(loads) == 1:
            raise ValueError("corrupt ONNX")  # e.g. a bad copy, fixed before it is promoted again
        return as_engine(FakeEngine(path.name))

    watcher = RegistryWatcher(registry, holder, load, metrics, interval=60)
    registry.promote("bad")
    assert watcher.check() is False and watcher.check() is False
    assert loads == ["bad"], "a failed version is not retried while CURRENT stays on it"
    registry.rollback()
    assert watcher.check() is False
    registry.promote("bad")
    assert watcher.check() is True, "promoting it again is a new attempt"
    assert holder.engine.version == "bad" and loads == ["bad", "bad"]


def test_a_model_without_a_drift_reference_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """Without one the drift gauge is silently absent; an operator must learn why from the log."""
    drift = DriftMonitor(ClassifyMetrics(), window=10, low_confidence=0.5, data_dir=None)
    engine = FakeEngine("v1", topic="Earnings")
    engine.manifest = {}
    with caplog.at_level(logging.WARNING):
        drift.reset(as_engine(engine))
    assert "v1 records no training label distribution" in caplog.text
