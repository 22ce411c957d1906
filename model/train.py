"""`finsent train`: multi-task fine-tuning of a BERT-family encoder on the labelled data.

One run: pick the rows (model/train_rows.py), tokenise them, fine-tune both heads with a dev
score after each epoch, fit the heads' temperatures on dev (model/dev_eval.py), then save the
checkpoint (model/checkpoint.py) and a report that the model card is written from.
"""

from __future__ import annotations

import json
import platform
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from model.base import check_base_dir
from model.batching import pad_batch, shuffled_length_batches
from model.checkpoint import CHECKPOINT_WEIGHTS, REPORT_FILE, earlier_stages, load_checkpoint, save_checkpoint
from model.dev_eval import calibrate_on_dev, evaluate_heads, predict_logits
from model.labels import IGNORE_INDEX
from model.network import MultiTaskClassifier, multitask_loss
from model.progress import log_to_stderr
from model.tokenization import TOKENIZER_FILE, encode_texts, load_tokenizer
from model.train_config import TrainConfig, TrainSetupError
from model.train_rows import drop_cashtags, fill_with_teacher, label_distribution, select_rows, shuffle_labels

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class _EncodedRows:
    """Token ids of the train rows (as written and without cashtags) and of the dev rows."""

    plain: list[list[int]]
    no_cashtag: list[list[int]]
    dev: list[list[int]]


def set_seeds(seed: int) -> None:
    """Fix every random source training touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def base_tokenizer(base_dir: Path, max_tokens: int) -> Tokenizer:
    """The base checkpoint's fast tokenizer, from tokenizer.json or built from its vocab."""
    if (base_dir / TOKENIZER_FILE).is_file():
        return load_tokenizer(base_dir, max_tokens)
    backend: Tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True).backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length=max_tokens)
    return backend


def _device_name(device: torch.device) -> str:
    """'cpu', or the GPU's name as CUDA reports it."""
    return "cpu" if device.type == "cpu" else f"cuda: {torch.cuda.get_device_name(device)}"


def _format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def preflight(config: TrainConfig) -> None:
    """Raise TrainSetupError (FileNotFoundError for a missing file) for what cannot work, before any work."""
    config.check()
    check_base_dir(config.base_dir, config.max_tokens)
    teacher = config.teacher_dir
    if teacher is not None and not (teacher / CHECKPOINT_WEIGHTS).is_file():
        raise TrainSetupError(
            f"--teacher {teacher}: not a finsent checkpoint (no {CHECKPOINT_WEIGHTS}); "
            "pass the OUT/checkpoint folder of an earlier run"
        )


def training_device(requested: str = "auto") -> torch.device:
    """cuda when asked, or (auto) when PyTorch sees a usable GPU, else cpu; TrainSetupError for cuda without one."""
    if requested not in DEVICES:
        raise TrainSetupError(f"--device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise TrainSetupError(f"--device cuda: PyTorch {torch.__version__} ({build}) sees no usable GPU")
    return torch.device("cuda")


def train(
    config: TrainConfig, log: Callable[[str], None] = log_to_stderr, device: str = "auto"
) -> dict[str, Any]:
    """Fine-tune on ``device`` (auto: a CUDA GPU when usable), calibrate on dev, save, return the report."""
    started = time.time()
    preflight(config)
    where = training_device(device)
    set_seeds(config.seed)
    train_rows, dev_rows, extra_counts = select_rows(config, log)
    if train_rows.empty or dev_rows.empty:
        raise TrainSetupError(f"no rows to train on: {len(train_rows)} train, {len(dev_rows)} dev")
    distribution = label_distribution(train_rows)
    if config.shuffle_labels:
        train_rows = shuffle_labels(train_rows, config.seed)
        log("labels shuffled within each task (negative control)")
    log(f"data: {len(train_rows)} train rows, {len(dev_rows)} dev rows from {config.data_dir}")

    tokenizer = base_tokenizer(config.base_dir, config.max_tokens)
    texts = train_rows["text"].tolist()
    encoded = _EncodedRows(
        plain=encode_texts(tokenizer, texts),
        no_cashtag=encode_texts(tokenizer, [drop_cashtags(text) for text in texts]),
        dev=encode_texts(tokenizer, dev_rows["text"].tolist()),
    )
    pseudo_counts: dict[str, int] = {}
    if config.teacher_dir is not None:
        train_rows, pseudo_counts = fill_with_teacher(
            train_rows, encoded.plain, config.teacher_dir, config.teacher_threshold
        )
        log(f"teacher {config.teacher_dir}: added {pseudo_counts}")

    if (config.base_dir / CHECKPOINT_WEIGHTS).is_file():
        # A finsent checkpoint (e.g. the champion's): continue from its encoder and both heads.
        network = load_checkpoint(config.base_dir)
    else:
        network = MultiTaskClassifier.from_base(config.base_dir)
    network.to(where)
    log(f"device: {_device_name(where)}")
    train_started = time.time()
    steps, history = _fine_tune(network, config, train_rows, encoded, dev_rows, log)
    train_seconds = time.time() - train_started

    temperatures, uncalibrated, calibrated = calibrate_on_dev(network, encoded.dev, dev_rows)
    log(
        f"temperatures topic {temperatures[0]:.3f} sentiment {temperatures[1]:.3f}; ECE topic "
        f"{uncalibrated['topic']['ece']:.4f} -> {calibrated['topic']['ece']:.4f}, sentiment "
        f"{uncalibrated['sentiment']['ece']:.4f} -> {calibrated['sentiment']['ece']:.4f}"
    )
    checkpoint_dir = save_checkpoint(network.cpu(), tokenizer, config.out_dir)
    report = {
        "config": config.as_json(),
        "data": {
            "train_rows": len(train_rows),
            "dev_rows": len(dev_rows),
            "train_rows_by_source": train_rows.groupby("source").size().to_dict(),
            "dev_rows_by_source": dev_rows.groupby("source").size().to_dict(),
            "dev_topic_rows": int((dev_rows["topic"] != IGNORE_INDEX).sum()),
            "dev_sentiment_rows": int((dev_rows["sentiment"] != IGNORE_INDEX).sum()),
            **pseudo_counts,
            **extra_counts,
            "label_distribution": distribution,
        },
        "history": history,
        "earlier_stages": earlier_stages(config.teacher_dir, config.base_dir),
        "temperatures": {"topic": temperatures[0], "sentiment": temperatures[1]},
        "dev_uncalibrated": uncalibrated,
        "dev": calibrated,
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "device": _device_name(where),
        },
    }
    (config.out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    log(f"saved checkpoint to {checkpoint_dir} and report to {config.out_dir / REPORT_FILE}")
    return report


def _fine_tune(
    network: MultiTaskClassifier,
    config: TrainConfig,
    train_rows: pd.DataFrame,
    encoded: _EncodedRows,
    dev_rows: pd.DataFrame,
    log: Callable[[str], None],
) -> tuple[int, list[dict[str, Any]]]:
    """The optimisation loop: AdamW with linear warm-up and decay; (steps taken, dev scores per epoch)."""
    topic_labels = torch.tensor(train_rows["topic"].to_numpy(), dtype=torch.long)
    sentiment_labels = torch.tensor(train_rows["sentiment"].to_numpy(), dtype=torch.long)
    parameters = parameter_groups(network, config.learning_rate, config.weight_decay, config.layer_decay)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate)
    steps_per_epoch = -(-len(encoded.plain) // config.batch_size)
    total_steps = max(1, round(steps_per_epoch * config.epochs))
    if config.max_steps is not None:
        total_steps = max(1, config.max_steps)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(total_steps * config.warmup_fraction), total_steps
    )
    # Seeded after the heads are initialised, so runs differing only in order_seed start alike.
    if config.order_seed is not None:
        torch.manual_seed(config.order_seed)
    rng = np.random.default_rng(config.seed if config.order_seed is None else config.order_seed)
    lengths = [len(ids) for ids in encoded.plain]
    log(
        f"training: {total_steps} steps ({config.epochs} epochs x {steps_per_epoch}), batch {config.batch_size}"
    )

    step, rows_seen, smoothed_loss = 0, 0, 0.0
    history: list[dict[str, Any]] = []
    started = time.time()
    while step < total_steps:
        network.train()
        for batch in shuffled_length_batches(lengths, config.batch_size, rng):
            if step >= total_steps:
                break
            # Cashtag dropout: news sentences rarely carry $TICKERs, so the model must not lean on them.
            drop = rng.random(len(batch)) < config.cashtag_drop
            sequences = [
                encoded.no_cashtag[i] if d else encoded.plain[i] for i, d in zip(batch, drop, strict=True)
            ]
            value = _train_step(
                network, sequences, (topic_labels[batch], sentiment_labels[batch]), config.sentiment_weight
            )
            optimizer.step()
            scheduler.step()
            step += 1
            rows_seen += len(batch)
            smoothed_loss = value if step == 1 else 0.95 * smoothed_loss + 0.05 * value
            if step % 25 == 0 or step == total_steps:
                elapsed = time.time() - started
                eta = elapsed / step * (total_steps - step)
                log(
                    f"step {step}/{total_steps} epoch {len(history) + 1} loss {smoothed_loss:.4f} "
                    f"{rows_seen / elapsed:.1f} rows/s elapsed {_format_seconds(elapsed)} "
                    f"ETA {_format_seconds(eta)}"
                )
        history.append(_dev_scores(network, encoded.dev, dev_rows, len(history) + 1, step))
        log(f"dev after epoch {len(history)}: " + json.dumps(history[-1]))
    return step, history


def _train_step(
    network: MultiTaskClassifier,
    sequences: list[list[int]],
    labels: tuple[torch.Tensor, torch.Tensor],
    sentiment_weight: float,
) -> float:
    """Forward and backward pass of one batch, gradients clipped to norm 1; returns the loss."""
    device = next(network.parameters()).device
    input_ids, attention_mask = (torch.from_numpy(array).to(device) for array in pad_batch(sequences))
    topic_logits, sentiment_logits = network(input_ids, attention_mask)
    topic_labels, sentiment_labels = (tensor.to(device) for tensor in labels)
    loss = multitask_loss(topic_logits, sentiment_logits, topic_labels, sentiment_labels, sentiment_weight)
    network.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
    return float(loss.detach())


def _dev_scores(
    network: MultiTaskClassifier, dev_ids: list[list[int]], dev_rows: pd.DataFrame, epoch: int, step: int
) -> dict[str, Any]:
    topic_dev, sentiment_dev = predict_logits(network, dev_ids)
    scores = evaluate_heads(topic_dev, sentiment_dev, dev_rows)
    return {
        "epoch": epoch,
        "step": step,
        "topic_accuracy": scores["topic"]["accuracy"],
        "topic_macro_f1": scores["topic"]["macro_f1"],
        "sentiment_accuracy": scores["sentiment"]["accuracy"],
        "sentiment_macro_f1": scores["sentiment"]["macro_f1"],
    }


def parameter_groups(
    network: MultiTaskClassifier, learning_rate: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and LayerNorms, learning rate decayed by depth."""
    layers = int(network.encoder_config.num_hidden_layers)
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, parameter in network.named_parameters():
        depth = _depth(name, layers)
        rate = learning_rate * layer_decay ** (layers + 1 - depth)
        decay = (
            0.0 if any(key in name for key in ("bias", "LayerNorm.weight", "layer_norm")) else weight_decay
        )
        groups.setdefault((rate, decay), []).append(parameter)
    return [{"params": params, "lr": rate, "weight_decay": decay} for (rate, decay), params in groups.items()]


def _depth(name: str, layers: int) -> int:
    """0 for the embeddings, k + 1 for encoder layer k, layers + 1 for the pooler and the heads."""
    match = re.search(r"\.layer\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return 0 if ".embeddings." in f".{name}" else layers + 1
