"""A few training steps on a few rows, end to end through the CLI, so `finsent train` cannot rot."""

import json
from pathlib import Path

import pytest

from finsent.cli import main

pytest.importorskip("torch")


def smoke_args(out: Path) -> list[str]:
    return ["train", "--out", str(out), "--max-rows", "48", "--epochs", "1", "--batch-size", "16"]


@pytest.mark.slow
def test_train_a_few_steps_writes_checkpoint_and_report(tmp_path: Path) -> None:
    out = tmp_path / "train"
    code = main(smoke_args(out))
    assert code == 0
    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 3
    assert report["data"]["train_rows"] == 48
    assert report["temperatures"]["topic"] > 0
    assert set(report["dev"]) == {"topic", "sentiment"}
    assert (out / "checkpoint" / "model.pt").stat().st_size > 1_000_000
    assert (out / "checkpoint" / "tokenizer.json").is_file()

    from model.checkpoint import load_checkpoint

    network = load_checkpoint(out / "checkpoint")
    assert network.topic_head.out_features == 20

    # A soup of a run with itself is that run: same weights, same dev accuracy, rebuildable.
    soup_dir = tmp_path / "soup"
    assert main(["soup", "--out", str(soup_dir), str(out / "checkpoint"), str(out / "checkpoint")]) == 0
    soup_report = json.loads((soup_dir / "training_report.json").read_text())
    assert soup_report["config"]["soup_of"] == [str(out / "checkpoint")] * 2
    souped = load_checkpoint(soup_dir / "checkpoint").state_dict()
    for name, tensor in network.state_dict().items():
        assert (souped[name] - tensor).abs().max() < 1e-6, name

    # Another data order (--order-seed) keeps the split, so the two runs can be souped together.
    reordered = tmp_path / "reordered"
    assert main([*smoke_args(reordered), "--order-seed", "14"]) == 0
    reordered_report = json.loads((reordered / "training_report.json").read_text())
    assert reordered_report["config"]["order_seed"] == 14
    assert reordered_report["data"] == report["data"]
    reordered_weights = load_checkpoint(reordered / "checkpoint").state_dict()
    assert any((reordered_weights[n] - t).abs().max() > 1e-4 for n, t in network.state_dict().items())
    mixed = tmp_path / "mixed"
    assert main(["soup", "--out", str(mixed), str(out / "checkpoint"), str(reordered / "checkpoint")]) == 0


def test_soup_needs_two_training_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["soup", "--out", str(tmp_path / "soup"), str(tmp_path)]) == 2
    assert "not a `finsent train` checkpoint" in capsys.readouterr().err


def test_train_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path), "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path), "--layer-decay", "1.5"]) == 2
    assert "--layer-decay must be in (0, 1]" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path), "--base", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_train_only_source_must_be_an_excluded_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--out", str(tmp_path), "--train-only-source", "twitter_topic_train.csv"]) == 2
    assert "--train-only-source twitter_topic_train.csv: not an excluded source" in capsys.readouterr().err
