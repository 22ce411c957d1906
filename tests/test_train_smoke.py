"""A few training steps on a few rows, end to end through the CLI, so `finsent train` cannot rot."""

import json
from pathlib import Path

import pytest

from finsent.cli import main

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.xdist_group("torch-training")


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
    assert report["environment"]["device"] == "cpu"  # --device auto on a machine without a GPU

    from model.checkpoint import load_checkpoint

    network = load_checkpoint(out / "checkpoint")
    assert network.topic_head.out_features == 20

    # A soup of a run with itself is that run: same weights, same dev accuracy, rebuildable.
    soup_dir = tmp_path / "soup"
    assert main(["soup", "--out", str(soup_dir), str(out / "checkpoint"), str(out / "checkpoint")]) == 0
    soup_report = json.loads((soup_dir / "training_report.json").read_text())
    assert soup_report["config"]["soup_of"] == [str(out / "checkpoint")] * 2
    # Serving's drift reference: the ingredients' label counts, summed (an image has no data/ to recount).
    assert soup_report["data"]["label_distribution"] == {
        task: [2 * count for count in counts] for task, counts in report["data"]["label_distribution"].items()
    }
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


def _folder(path: Path, files: dict[str, str]) -> Path:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--epochs", "nan"], "--epochs must be a finite number"),
        (["--epochs", "inf"], "--epochs must be a finite number"),
        (["--learning-rate", "-1"], "--learning-rate must be above 0"),
        (["--max-rows", "0"], "--max-rows must be at least 1"),  # used to loop forever
        (["--max-rows", "-5"], "--max-rows must be at least 1"),
        (["--max-tokens", "0"], "--max-tokens must be at least 8"),
        (["--max-tokens", "100000"], "max_tokens 100000 is more than the 512 positions"),
        (["--teacher", "{tmp}/nowhere"], "not a finsent checkpoint"),
        (["--teacher", "{tmp}"], "not a finsent checkpoint"),
        (["--base", "{tmp}/config-only"], "no weights"),
        (["--base", "{tmp}/bad-config"], "not a JSON file"),
        (["--out", "{tmp}/a-file"], "exists and is not a folder"),
    ],
)
def test_train_settings_that_cannot_work_stop_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    _folder(tmp_path / "config-only", {"config.json": "{}"})
    _folder(tmp_path / "bad-config", {"config.json": "{not json", "model.safetensors": ""})
    (tmp_path / "a-file").write_text("x")
    options = [option.replace("{tmp}", str(tmp_path)) for option in options]
    out = [] if "--out" in options else ["--out", str(tmp_path / "out")]
    assert main(["train", *out, *options]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_train_only_source_must_be_an_excluded_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--out", str(tmp_path), "--train-only-source", "twitter_topic_train.csv"]) == 2
    assert "--train-only-source twitter_topic_train.csv: not an excluded source" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is usable here")
def test_train_on_cuda_without_a_gpu_stops_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--out", str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "--device cuda: PyTorch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_auto_trains_on_a_gpu_when_pytorch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from model.train import training_device
    from model.train_config import TrainSetupError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device("auto").type == "cuda" and training_device("cuda").type == "cuda"
    assert training_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto").type == "cpu"
    with pytest.raises(TrainSetupError, match="--device must be one of auto, cpu, cuda"):
        training_device("gpu")
