"""Training checkpoints on disk: the network's weights, its encoder config and its tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModel

from model.network import MultiTaskClassifier
from model.tokenization import TOKENIZER_FILE

CHECKPOINT_WEIGHTS = "model.pt"
REPORT_FILE = "training_report.json"


def load_checkpoint(checkpoint_dir: Path, attention: str = "sdpa") -> MultiTaskClassifier:
    """Rebuild the trained network from a checkpoint directory written by save_checkpoint().

    attention="eager" gives the classic attention graph that ONNX Runtime's fusions recognise.
    """
    config = AutoConfig.from_pretrained(str(checkpoint_dir), local_files_only=True)
    encoder = AutoModel.from_config(config, attn_implementation=attention)
    network = MultiTaskClassifier(encoder, int(config.hidden_size))
    state = torch.load(checkpoint_dir / CHECKPOINT_WEIGHTS, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return network.eval()


def save_checkpoint(network: MultiTaskClassifier, tokenizer: Tokenizer, out_dir: Path) -> Path:
    """Write OUT/checkpoint (encoder config, weights, tokenizer) as load_checkpoint() reads it."""
    checkpoint_dir = out_dir / "checkpoint"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    network.encoder_config.save_pretrained(str(checkpoint_dir))
    torch.save(network.state_dict(), checkpoint_dir / CHECKPOINT_WEIGHTS)
    tokenizer.save(str(checkpoint_dir / TOKENIZER_FILE))
    return checkpoint_dir


def earlier_stages(*checkpoints: Path | None) -> list[dict[str, Any]]:
    """Training runs behind finsent checkpoints used as teacher or base, oldest first.

    A plain base (the bundled MiniLM) has none; the model card turns them into rebuild commands.
    """
    stages: list[dict[str, Any]] = []
    for checkpoint in checkpoints:
        if checkpoint is None:
            continue
        report_path = checkpoint.parent / REPORT_FILE
        if not (checkpoint / CHECKPOINT_WEIGHTS).is_file() or not report_path.is_file():
            continue
        report = json.loads(report_path.read_text())
        stage = {key: report[key] for key in ("config", "history", "steps", "train_seconds", "environment")}
        stage["data"] = {
            key: value for key, value in report["data"].items() if key.endswith("_pseudo_labels")
        }
        known = {known_stage["config"]["out_dir"] for known_stage in stages}
        stages += [
            earlier
            for earlier in [*report.get("earlier_stages", []), stage]
            if earlier["config"]["out_dir"] not in known
        ]
    return stages
