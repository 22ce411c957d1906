"""A few training steps on a few rows, end to end through the CLI, so `finsent train` cannot rot."""

import json
from pathlib import Path

import pytest

from finsent.cli import main

pytest.importorskip("torch")


@pytest.mark.slow
def test_train_a_few_steps_writes_checkpoint_and_report(tmp_path: Path) -> None:
    out = tmp_path / "train"
    code = main(["train", "--out", str(out), "--max-rows", "48", "--epochs", "1", "--batch-size", "16"])
    assert code == 0
    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 3
    assert report["data"]["train_rows"] == 48
    assert report["temperatures"]["topic"] > 0
    assert set(report["dev"]) == {"topic", "sentiment"}
    assert (out / "checkpoint" / "model.pt").stat().st_size > 1_000_000
    assert (out / "checkpoint" / "tokenizer.json").is_file()

    from model.train import load_checkpoint

    network = load_checkpoint(out / "checkpoint")
    assert network.topic_head.out_features == 20


def test_train_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path), "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path), "--base", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
