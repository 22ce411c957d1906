"""`finsent adapt`: masked-LM training reads train-split texts only and writes a usable base."""

import json
from pathlib import Path

import pytest

from finsent.cli import main

torch = pytest.importorskip("torch")


def test_adaptation_texts_are_train_side_and_distinct() -> None:
    from model.adapt import AdaptConfig, adaptation_texts
    from model.data import DEFAULT_DATA_DIR, is_dev
    from model.text import dedupe_key

    config = AdaptConfig(base_dir=Path("."), data_dir=DEFAULT_DATA_DIR, out_dir=Path("."))
    texts = adaptation_texts(config)
    assert len(texts) > 20_000
    assert not any(is_dev(text, config.dev_percent, config.seed) for text in texts)
    assert len({dedupe_key(text) for text in texts}) == len(texts)

    with_fragments = AdaptConfig(
        base_dir=Path("."),
        data_dir=DEFAULT_DATA_DIR,
        out_dir=Path("."),
        train_only_sources=("poojathakoor/twitter-stock-sentiment",),
    )
    assert len(adaptation_texts(with_fragments)) > len(texts)


def test_masked_lm_loss_equals_the_full_models_loss() -> None:
    from transformers import BertConfig, BertForMaskedLM

    from model.adapt import masked_lm_loss

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    model = BertForMaskedLM(config).eval()
    input_ids = torch.randint(5, 50, (3, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 5:] = 0
    labels = torch.full_like(input_ids, -100)
    labels[0, 1], labels[1, 4], labels[2, 2] = 7, 9, 11
    expected = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    assert abs(float(masked_lm_loss(model, input_ids, attention_mask, labels)) - float(expected)) < 1e-5


@pytest.mark.slow
def test_adapt_writes_a_base_that_train_accepts(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from model.base import default_base_dir

    out = tmp_path / "adapted"
    assert main(["adapt", "--out", str(out), "--max-rows", "40", "--epochs", "1", "--head-steps", "2"]) == 0
    report = json.loads((out / "adapt_report.json").read_text())
    assert report["texts"] == 40
    assert [entry["phase"] for entry in report["history"]] == ["head", "all"]
    assert (out / "tokenizer.json").is_file()

    base = load_file(str(default_base_dir() / "model.safetensors"))
    adapted = load_file(str(out / "model.safetensors"))
    # Every weight of the base's own class, pooler included (a position-id buffer may be left out).
    assert set(adapted) <= set(base)
    assert {name for name in base if "weight" in name or "bias" in name} <= set(adapted)
    name = "encoder.layer.0.attention.self.query.weight"
    assert (adapted[name] - base[name]).abs().max() > 0

    trained = tmp_path / "train"
    args = ["train", "--base", str(out), "--out", str(trained), "--max-rows", "48", "--epochs", "1"]
    assert main([*args, "--batch-size", "16"]) == 0
    assert (trained / "checkpoint" / "model.pt").is_file()


def test_adapt_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["adapt", "--out", str(tmp_path), "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["adapt", "--out", str(tmp_path), "--base", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
