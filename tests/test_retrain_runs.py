"""Retrain runs with training, export and gold scoring stubbed: locking, promotion races, reports, cleanup."""

from __future__ import annotations

import errno
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from finsent.cli import main
from model.registry import ModelRegistry
from tests.test_registry import fake_model

pytest.importorskip("torch")  # retrain() imports model.export (the `train` extra)

TASKS = ("topic", "sentiment")


class Stubs:
    """Fake training/export/evaluation; gold macro-F1 per version comes from `scores`."""

    def __init__(self) -> None:
        self.scores: dict[str, float] = {"v1": 0.5}
        self.challenger_score = 0.9
        self.on_train: Callable[[], None] | None = None
        self.on_evaluate_challenger: Callable[[], None] | None = None
        self.feedback_texts: list[str] = []

    def train(self, settings: Any, init_dir: Path, feedback_file: Path, train_dir: Path, log: Any) -> Any:
        self.feedback_texts = list(pd.read_csv(feedback_file, dtype=str, keep_default_na=False)["text"])
        if self.on_train is not None:
            self.on_train()
        (train_dir / "checkpoint").mkdir(parents=True)
        (train_dir / "checkpoint" / "config.json").write_text("{}")
        return {"data": {"train_rows": 1, "dev_rows": 1}, "steps": 1}

    def export(
        self, settings: Any, train_dir: Path, work: Path, version: str, provenance: str, log: Any
    ) -> Path:
        self.scores[version] = self.challenger_score
        return fake_model(work / "candidate", version)

    def evaluate(self, model_dir: Path, gold: pd.DataFrame) -> dict[str, dict[str, float]]:
        version = json.loads((model_dir / "manifest.json").read_text())["version"]
        if model_dir.name == "candidate" and self.on_evaluate_challenger is not None:
            self.on_evaluate_challenger()
        score = self.scores[version]
        return {task: {"accuracy": score, "macro_f1": score, "rows": 100} for task in TASKS}


@pytest.fixture
def stubs(monkeypatch: pytest.MonkeyPatch) -> Stubs:
    import model.retrain as retrain_module

    fake = Stubs()
    monkeypatch.setattr(retrain_module, "_train_challenger", fake.train)
    monkeypatch.setattr(retrain_module, "_export_candidate", fake.export)
    monkeypatch.setattr(retrain_module, "evaluate_on_gold", fake.evaluate)
    gold = pd.DataFrame({"text": ["x"], "topic": [0], "sentiment": [0]})
    monkeypatch.setattr(retrain_module, "gold_rows", lambda *args, **kwargs: gold)
    return fake


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    """A registry serving v1."""
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(fake_model(tmp_path / "src" / "v1", "v1"))
    registry.promote("v1")
    return registry


def run(registry: ModelRegistry, **settings: Any) -> Any:
    from model.retrain import RetrainSettings, retrain

    return retrain(RetrainSettings(registry=registry.root, **settings), log=lambda _: None)


def reports(registry: ModelRegistry) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(registry.runs_dir.glob("*.json"))]


def test_a_second_run_is_refused_while_one_holds_the_registry(stubs: Stubs, registry: ModelRegistry) -> None:
    training, release = threading.Event(), threading.Event()

    def hold_the_run() -> None:
        training.set()
        release.wait(10)

    stubs.on_train = hold_the_run
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(run(registry)))
    first.start()
    try:
        assert training.wait(10)
        stubs.on_train = None
        with pytest.raises(Exception, match="another retrain run holds") as refused:
            run(registry)
    finally:
        release.set()
        first.join()
    assert type(refused.value).__name__ == "RetrainBusy"
    assert str(registry.root / "retrain.lock") in str(refused.value)
    assert [result.promoted for result in results] == [True]
    assert len(reports(registry)) == 1, "the refused run did not run"


def test_a_challenger_is_not_promoted_over_a_champion_that_changed_meanwhile(
    stubs: Stubs, registry: ModelRegistry, tmp_path: Path
) -> None:
    def someone_promotes_v2() -> None:
        stubs.scores["v2"] = 0.95
        registry.add(fake_model(tmp_path / "src" / "v2", "v2"))
        registry.promote("v2", reason="finsent model promote")

    stubs.on_evaluate_challenger = someone_promotes_v2
    result = run(registry)
    assert not result.promoted and result.champion == "v1"
    assert registry.current_version() == "v2"
    assert [info.version for info in registry.versions()] == ["v1", "v2"], "the challenger was not added"
    (report,) = reports(registry)
    assert report["decision"] == "rejected" and report["current_after"] == "v2"
    assert "champion changed: compared with v1, but v2 is current now" in report["reasons"][-1]


def test_run_ids_started_in_the_same_second_differ(registry: ModelRegistry) -> None:
    from model.retrain import new_version_name

    names = {new_version_name(registry, "minilm-mt") for _ in range(20)}
    assert len(names) == 20


def test_a_failure_while_storing_the_promoted_version_still_writes_a_report(
    stubs: Stubs, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(source: Any, target: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run(registry)
    (report,) = reports(registry)
    assert report["decision"] == "failed" and report["current_after"] == "v1"
    assert "No space left on device" in report["reasons"][0]
    assert not list((registry.root / ".work").iterdir()), "the run's work folder is removed"


def test_a_run_removes_what_dead_runs_left_and_reports_them(stubs: Stubs, registry: ModelRegistry) -> None:
    dead = registry.root / ".work" / "minilm-mt-20260101T030000Z-dead"
    (dead / "train").mkdir(parents=True)
    (dead / "train" / "weights.bin").write_bytes(b"0" * 1024)
    staging = registry.root / ".staging" / "minilm-mt-20260101T030000Z-dead.4242"
    staging.mkdir(parents=True)
    (staging / "model.int8.onnx").write_bytes(b"half")
    stubs.challenger_score = 0.1
    run(registry)
    assert not list((registry.root / ".work").iterdir())
    assert not list((registry.root / ".staging").iterdir())
    interrupted = json.loads((registry.runs_dir / f"{dead.name}.json").read_text())
    assert interrupted["decision"] == "interrupted"
    assert [report["decision"] for report in reports(registry)] == ["interrupted", "rejected"]


def test_an_unreadable_feedback_store_fails_the_run_with_a_report(
    stubs: Stubs, registry: ModelRegistry
) -> None:
    (registry.root / "feedback").mkdir()
    (registry.root / "feedback" / "feedback.csv").write_bytes(b"id,text\n\xff\xfe\n")
    with pytest.raises(UnicodeDecodeError):
        run(registry)
    (report,) = reports(registry)
    assert report["decision"] == "failed" and "UnicodeDecodeError" in report["reasons"][0]
    assert not list((registry.root / ".work").iterdir())


def test_broken_rows_in_the_feedback_store_are_skipped_and_reported(
    stubs: Stubs, registry: ModelRegistry
) -> None:
    (registry.root / "feedback").mkdir()
    (registry.root / "feedback" / "feedback.csv").write_text(
        "id,text,topic,sentiment,source,received_at\n"
        "a1,Acme beats\restimates,Earnings,positive,kafka,2026-01-01T00:00:00Z\n"
        "a2,Fed holds rates,Fed | Central Banks,neutral,kafka,2026-01-01T00:00:00Z\n",
        newline="",
    )
    assert run(registry).promoted
    assert stubs.feedback_texts == ["Fed holds rates"]
    (report,) = reports(registry)
    assert report["data"]["feedback_rows_stored"] == 1
    assert report["data"]["feedback_store"]["bad"] == {"no_label": 1, "unknown_topic": 1}


def test_keep_set_by_retrain_holds_for_finsent_model(
    stubs: Stubs, registry: ModelRegistry, tmp_path: Path
) -> None:
    keeping_ten = ModelRegistry(registry.root, keep=10)  # what earlier `retrain --keep 10` runs made
    for index in range(2, 9):
        keeping_ten.add(fake_model(tmp_path / "src" / f"v{index}", f"v{index}"))
        keeping_ten.promote(f"v{index}")
    stubs.scores["v8"] = 0.5
    stubs.challenger_score = 0.1
    assert not run(registry, keep=10).promoted
    assert main(["model", "--registry", str(registry.root), "promote", "v7"]) == 0
    assert len(ModelRegistry(registry.root).versions()) == 8, "finsent model pruned what --keep 10 kept"


def test_a_registry_without_a_current_version_is_a_clear_error(
    stubs: Stubs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model.registry import RegistryError

    monkeypatch.setattr(ModelRegistry, "init_from", lambda self, shipped: None)
    with pytest.raises(RegistryError, match="has no current version"):
        run(ModelRegistry(tmp_path / "empty"))
