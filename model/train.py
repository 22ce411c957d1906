"""`finsent train`: multi-task fine-tuning of a BERT-family encoder on the labelled data."""

from __future__ import annotations

import json
import platform
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

from model.base import check_base_dir
from model.batching import length_sorted_batches, pad_batch, shuffled_length_batches
from model.calibration import expected_calibration_error, fit_temperature, softmax
from model.data import DEFAULT_EXCLUDED_SOURCES, recorded_data_dir, run_splits
from model.gold import is_gold
from model.labels import IGNORE_INDEX, SENTIMENT_LABELS, TOPIC_LABELS
from model.metrics import classification_report
from model.network import MultiTaskClassifier, multitask_loss
from model.text import dedupe_key
from model.tokenization import TOKENIZER_FILE, encode_texts, load_tokenizer

CHECKPOINT_WEIGHTS = "model.pt"
REPORT_FILE = "training_report.json"
_CASHTAG = re.compile(r"\$[A-Za-z][A-Za-z.]{0,5}\b[\s:,-]*")


@dataclass
class TrainConfig:
    """Everything that decides the trained weights; recorded in the model card."""

    base_dir: Path
    data_dir: Path
    out_dir: Path
    epochs: float = 4.0
    batch_size: int = 32
    learning_rate: float = 8e-5
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    max_tokens: int = 128
    seed: int = 13
    dev_percent: int = 10
    cashtag_drop: float = 0.3
    sentiment_weight: float = 1.0
    teacher_dir: Path | None = None
    teacher_threshold: float = 0.9
    max_rows: int | None = None
    # Retraining (model/retrain.py): a fixed step count, extra labelled rows (analyst feedback,
    # CSV with text/topic/sentiment/source, label indices), the share of the dev split held out
    # as the gold set (never trained or calibrated on), and shuffled labels (a negative control).
    max_steps: int | None = None
    extra_rows_file: Path | None = None
    gold_share: int = 0
    shuffle_labels: bool = False
    excluded_sources: tuple[str, ...] = field(default=DEFAULT_EXCLUDED_SOURCES)
    # Excluded sources to train on anyway; they never enter dev, so dev stays comparable across runs.
    train_only_sources: tuple[str, ...] = ()
    # Seed for the data order, cashtag drops and dropout only (None: `seed`). The split and the
    # heads' initial weights stay on `seed`, so runs differing only here can be souped.
    order_seed: int | None = None
    # Layer-wise learning-rate decay: layer k of L gets lr * layer_decay ** (L - k), the embeddings
    # lr * layer_decay ** (L + 1); the heads get lr. 1.0 is one rate for all.
    layer_decay: float = 1.0

    def as_json(self) -> dict[str, Any]:
        """JSON-friendly view (paths as strings, the data folder as recorded_data_dir gives it)."""
        view = {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}
        return {**view, "data_dir": recorded_data_dir(self.data_dir)}


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


def drop_cashtags(text: str) -> str:
    """The text without $TICKER tokens (augmentation: news sentences rarely have them)."""
    return _CASHTAG.sub("", text).strip() or text


def load_checkpoint(checkpoint_dir: Path, attention: str = "sdpa") -> MultiTaskClassifier:
    """Rebuild the trained network from a checkpoint directory written by train().

    attention="eager" gives the classic attention graph that ONNX Runtime's fusions recognise.
    """
    config = AutoConfig.from_pretrained(str(checkpoint_dir), local_files_only=True)
    encoder = AutoModel.from_config(config, attn_implementation=attention)
    network = MultiTaskClassifier(encoder, int(config.hidden_size))
    state = torch.load(checkpoint_dir / CHECKPOINT_WEIGHTS, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return network.eval()


@torch.inference_mode()
def predict_logits(
    network: MultiTaskClassifier, token_ids: list[list[int]], batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Both heads' logits for pre-tokenised texts, in input order."""
    network.eval()
    topic = np.zeros((len(token_ids), len(TOPIC_LABELS)), dtype=np.float32)
    sentiment = np.zeros((len(token_ids), len(SENTIMENT_LABELS)), dtype=np.float32)
    for batch in length_sorted_batches([len(ids) for ids in token_ids], batch_size):
        input_ids, attention_mask = pad_batch([token_ids[i] for i in batch])
        topic_logits, sentiment_logits = network(
            torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        )
        topic[batch] = topic_logits.numpy()
        sentiment[batch] = sentiment_logits.numpy()
    return topic, sentiment


def evaluate_heads(
    topic_logits: np.ndarray,
    sentiment_logits: np.ndarray,
    rows: pd.DataFrame,
    temperatures: tuple[float, float] = (1.0, 1.0),
) -> dict[str, Any]:
    """Per-task report and ECE on the rows that carry each task's label."""
    result: dict[str, Any] = {}
    for task, logits, names, temperature in (
        ("topic", topic_logits, TOPIC_LABELS, temperatures[0]),
        ("sentiment", sentiment_logits, SENTIMENT_LABELS, temperatures[1]),
    ):
        labelled = rows[task].to_numpy() != IGNORE_INDEX
        labels = rows[task].to_numpy()[labelled]
        probs = softmax(logits[labelled], temperature)
        report = classification_report(labels, probs.argmax(axis=1), names)
        report["ece"] = expected_calibration_error(probs, labels)
        result[task] = report
    return result


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def train(config: TrainConfig, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Fine-tune, calibrate on dev, save the checkpoint and return the training report."""
    started = time.time()
    set_seeds(config.seed)
    check_base_dir(config.base_dir)
    splits = run_splits(
        config.data_dir, config.excluded_sources, config.train_only_sources, config.dev_percent, config.seed
    )
    train_rows, dev_rows = splits.train, splits.dev
    if config.max_rows is not None:
        train_rows = train_rows.sample(n=min(config.max_rows, len(train_rows)), random_state=config.seed)
        dev_rows = dev_rows.sample(n=min(config.max_rows, len(dev_rows)), random_state=config.seed)
        train_rows, dev_rows = train_rows.reset_index(drop=True), dev_rows.reset_index(drop=True)
    extra_counts: dict[str, int] = {}
    if config.gold_share > 0:
        dev_rows = dev_rows[~dev_rows["text"].map(lambda t: _gold(t, config))].reset_index(drop=True)
    if config.extra_rows_file is not None:
        train_rows, extra_counts = _add_extra_rows(train_rows, config)
        log(f"extra rows from {config.extra_rows_file}: {extra_counts}")
    label_distribution = {
        task: [int((train_rows[task] == i).sum()) for i in range(len(names))]
        for task, names in (("topic", TOPIC_LABELS), ("sentiment", SENTIMENT_LABELS))
    }
    if config.shuffle_labels:
        train_rows = _shuffle_labels(train_rows, config.seed)
        log("labels shuffled within each task (negative control)")
    log(f"data: {len(train_rows)} train rows, {len(dev_rows)} dev rows from {config.data_dir}")

    tokenizer = base_tokenizer(config.base_dir, config.max_tokens)
    texts = train_rows["text"].tolist()
    plain_ids = encode_texts(tokenizer, texts)
    no_cashtag_ids = encode_texts(tokenizer, [drop_cashtags(text) for text in texts])
    dev_ids = encode_texts(tokenizer, dev_rows["text"].tolist())
    pseudo_counts: dict[str, int] = {}
    if config.teacher_dir is not None:
        train_rows, pseudo_counts = fill_with_teacher(
            train_rows, plain_ids, config.teacher_dir, config.teacher_threshold
        )
        log(f"teacher {config.teacher_dir}: added {pseudo_counts}")
    topic_labels = torch.tensor(train_rows["topic"].to_numpy(), dtype=torch.long)
    sentiment_labels = torch.tensor(train_rows["sentiment"].to_numpy(), dtype=torch.long)

    if (config.base_dir / CHECKPOINT_WEIGHTS).is_file():
        # A finsent checkpoint (e.g. the champion's): continue from its encoder and both heads.
        network = load_checkpoint(config.base_dir)
    else:
        network = MultiTaskClassifier.from_base(config.base_dir)
    parameters = parameter_groups(network, config.learning_rate, config.weight_decay, config.layer_decay)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate)
    steps_per_epoch = -(-len(plain_ids) // config.batch_size)
    total_steps = max(1, round(steps_per_epoch * config.epochs))
    if config.max_steps is not None:
        total_steps = max(1, config.max_steps)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(total_steps * config.warmup_fraction), total_steps
    )
    if config.order_seed is not None:
        torch.manual_seed(config.order_seed)
    rng = np.random.default_rng(config.seed if config.order_seed is None else config.order_seed)
    lengths = [len(ids) for ids in plain_ids]
    log(
        f"training: {total_steps} steps ({config.epochs} epochs x {steps_per_epoch}), batch {config.batch_size}"
    )

    step, rows_seen, smoothed_loss = 0, 0, None
    history: list[dict[str, Any]] = []
    train_started = time.time()
    epoch = 0
    while step < total_steps:
        network.train()
        for batch in shuffled_length_batches(lengths, config.batch_size, rng):
            if step >= total_steps:
                break
            drop = rng.random(len(batch)) < config.cashtag_drop
            sequences = [no_cashtag_ids[i] if d else plain_ids[i] for i, d in zip(batch, drop, strict=True)]
            input_ids, attention_mask = pad_batch(sequences)
            topic_logits, sentiment_logits = network(
                torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
            )
            loss = multitask_loss(
                topic_logits,
                sentiment_logits,
                topic_labels[batch],
                sentiment_labels[batch],
                config.sentiment_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            rows_seen += len(batch)
            value = float(loss.detach())
            smoothed_loss = value if smoothed_loss is None else 0.95 * smoothed_loss + 0.05 * value
            if step % 25 == 0 or step == total_steps:
                elapsed = time.time() - train_started
                eta = elapsed / step * (total_steps - step)
                log(
                    f"step {step}/{total_steps} epoch {epoch + 1} loss {smoothed_loss:.4f} "
                    f"{rows_seen / elapsed:.1f} rows/s elapsed {_format_seconds(elapsed)} "
                    f"ETA {_format_seconds(eta)}"
                )
        epoch += 1
        topic_dev, sentiment_dev = predict_logits(network, dev_ids)
        scores = evaluate_heads(topic_dev, sentiment_dev, dev_rows)
        history.append(
            {
                "epoch": epoch,
                "step": step,
                "topic_accuracy": scores["topic"]["accuracy"],
                "topic_macro_f1": scores["topic"]["macro_f1"],
                "sentiment_accuracy": scores["sentiment"]["accuracy"],
                "sentiment_macro_f1": scores["sentiment"]["macro_f1"],
            }
        )
        log(f"dev after epoch {epoch}: " + json.dumps(history[-1]))

    temperatures, uncalibrated, calibrated = calibrate_on_dev(network, dev_ids, dev_rows)
    log(
        f"temperatures topic {temperatures[0]:.3f} sentiment {temperatures[1]:.3f}; ECE topic "
        f"{uncalibrated['topic']['ece']:.4f} -> {calibrated['topic']['ece']:.4f}, sentiment "
        f"{uncalibrated['sentiment']['ece']:.4f} -> {calibrated['sentiment']['ece']:.4f}"
    )

    checkpoint_dir = save_checkpoint(network, tokenizer, config.out_dir)
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
            "label_distribution": label_distribution,
        },
        "history": history,
        "earlier_stages": earlier_stages(config.teacher_dir, config.base_dir),
        "temperatures": {"topic": temperatures[0], "sentiment": temperatures[1]},
        "dev_uncalibrated": uncalibrated,
        "dev": calibrated,
        "steps": step,
        "train_seconds": round(time.time() - train_started, 1),
        "total_seconds": round(time.time() - started, 1),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
    }
    (config.out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    log(f"saved checkpoint to {checkpoint_dir} and report to {config.out_dir / REPORT_FILE}")
    return report


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


def calibrate_on_dev(
    network: MultiTaskClassifier, dev_ids: list[list[int]], dev_rows: pd.DataFrame
) -> tuple[tuple[float, float], dict[str, Any], dict[str, Any]]:
    """Fit both heads' temperatures on dev; (temperatures, report before, report after)."""
    topic_dev, sentiment_dev = predict_logits(network, dev_ids)
    temperatures = fit_temperatures(topic_dev, sentiment_dev, dev_rows)
    uncalibrated = evaluate_heads(topic_dev, sentiment_dev, dev_rows)
    calibrated = evaluate_heads(topic_dev, sentiment_dev, dev_rows, temperatures)
    return temperatures, uncalibrated, calibrated


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


def _gold(text: str, config: TrainConfig) -> bool:
    return is_gold(text, config.dev_percent, config.seed, config.gold_share)


def _add_extra_rows(train_rows: pd.DataFrame, config: TrainConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """Append the extra labelled rows (minus any in the gold set); they replace base rows with the same text."""
    assert config.extra_rows_file is not None
    extra = pd.read_csv(config.extra_rows_file, keep_default_na=False, encoding="utf-8")
    extra = extra[["text", "topic", "sentiment", "source"]].astype(
        {"text": str, "topic": int, "sentiment": int, "source": str}
    )
    in_gold = extra["text"].map(lambda t: _gold(t, config)).astype(bool) if config.gold_share > 0 else None
    dropped = 0 if in_gold is None else int(in_gold.sum())
    if in_gold is not None:
        extra = extra[~in_gold]
    corrected = set(extra["text"].map(dedupe_key))
    replaced = train_rows["text"].map(dedupe_key).isin(corrected).to_numpy()
    combined = pd.concat([train_rows[~replaced], extra], ignore_index=True)
    return combined, {
        "extra_rows": len(extra),
        "extra_rows_dropped_gold": dropped,
        "base_rows_replaced": int(replaced.sum()),
    }


def _shuffle_labels(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Permute each task's labels among the rows that carry one (keeps the marginals, breaks the signal)."""
    shuffled = rows.copy()
    rng = np.random.default_rng(seed + 1)
    for task in ("topic", "sentiment"):
        labelled = shuffled[task].to_numpy() != IGNORE_INDEX
        values = shuffled.loc[labelled, task].to_numpy()
        shuffled.loc[labelled, task] = rng.permutation(values)
    return shuffled


def fill_with_teacher(
    rows: pd.DataFrame, token_ids: list[list[int]], teacher_dir: Path, threshold: float
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Self-training: give each row the label it lacks where a trained teacher is confident.

    Topic tweets carry no sentiment label and vice versa; a teacher trained on the same
    train split (never on dev) labels the missing head when its calibrated probability
    reaches threshold, so both heads learn from every row.
    """
    teacher = load_checkpoint(teacher_dir)
    report = json.loads((teacher_dir.parent / REPORT_FILE).read_text())
    topic_logits, sentiment_logits = predict_logits(teacher, token_ids)
    filled = rows.copy()
    counts: dict[str, int] = {}
    for task, logits in (("topic", topic_logits), ("sentiment", sentiment_logits)):
        probs = softmax(logits, report["temperatures"][task])
        missing = filled[task].to_numpy() == IGNORE_INDEX
        confident = probs.max(axis=1) >= threshold
        chosen = missing & confident
        filled.loc[chosen, task] = probs.argmax(axis=1)[chosen]
        counts[f"{task}_pseudo_labels"] = int(chosen.sum())
    return filled, counts


def fit_temperatures(
    topic_logits: np.ndarray, sentiment_logits: np.ndarray, rows: pd.DataFrame
) -> tuple[float, float]:
    """One temperature per head, fitted on the rows that carry that head's label."""
    fitted = []
    for task, logits in (("topic", topic_logits), ("sentiment", sentiment_logits)):
        labelled = rows[task].to_numpy() != IGNORE_INDEX
        fitted.append(fit_temperature(logits[labelled], rows[task].to_numpy()[labelled]))
    return fitted[0], fitted[1]
