"""`finsent adapt`: masked-language-model training on the training split's texts.

Task-adaptive pretraining (Gururangan et al. 2020, "Don't Stop Pretraining"): before fine-tuning,
continue the base's pretraining objective on the unlabelled texts of the task, so the encoder
learns the vocabulary of financial tweets and headlines. Only the train side of the same split
`finsent train` uses is read; dev texts never enter. The result is a plain Hugging Face BERT
checkpoint for `finsent train --base`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, BertForMaskedLM, get_linear_schedule_with_warmup
from transformers.data.data_collator import DataCollatorForLanguageModeling

from model.base import check_base_dir
from model.batching import pad_batch, shuffled_length_batches
from model.data import DEFAULT_EXCLUDED_SOURCES, recorded_data_dir, run_splits
from model.text import dedupe_key
from model.tokenization import encode_texts
from model.train import base_tokenizer, set_seeds

ADAPT_REPORT = "adapt_report.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass
class AdaptConfig:
    """Everything that decides the adapted weights; recorded in OUT/adapt_report.json."""

    base_dir: Path
    data_dir: Path
    out_dir: Path
    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    max_tokens: int = 128
    mask_probability: float = 0.15
    # The base ships without a masked-LM head, so a fresh one is first fitted alone (encoder
    # frozen): its random early gradients would otherwise distort the pretrained encoder.
    head_steps: int = 500
    head_learning_rate: float = 1e-3
    seed: int = 13
    dev_percent: int = 10
    excluded_sources: tuple[str, ...] = field(default=DEFAULT_EXCLUDED_SOURCES)
    train_only_sources: tuple[str, ...] = ()
    max_rows: int | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON-friendly view (paths as strings)."""
        view = {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}
        return {**view, "data_dir": recorded_data_dir(self.data_dir)}


def adaptation_texts(config: AdaptConfig) -> list[str]:
    """The train split's texts (both tasks), one per near-duplicate group, in file order."""
    splits = run_splits(
        config.data_dir, config.excluded_sources, config.train_only_sources, config.dev_percent, config.seed
    )
    seen: set[str] = set()
    texts: list[str] = []
    for text in splits.train["text"]:
        key = dedupe_key(text)
        if key not in seen:
            seen.add(key)
            texts.append(text)
    return texts[: config.max_rows] if config.max_rows is not None else texts


def masked_lm_loss(
    model: BertForMaskedLM, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy at the masked positions only (the vocabulary projection is most of the cost)."""
    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    masked = labels != -100
    logits = model.cls(hidden[masked])
    return torch.nn.functional.cross_entropy(logits, labels[masked])


def adapt(config: AdaptConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Run masked-LM training and save OUT as a BERT checkpoint plus the base's tokenizer files."""
    started = time.time()
    set_seeds(config.seed)
    check_base_dir(config.base_dir)
    texts = adaptation_texts(config)
    tokenizer = base_tokenizer(config.base_dir, config.max_tokens)
    token_ids = encode_texts(tokenizer, texts)
    lengths = [len(ids) for ids in token_ids]
    log(f"data: {len(texts)} distinct train-split texts, {sum(lengths)} tokens")

    masker = DataCollatorForLanguageModeling(
        AutoTokenizer.from_pretrained(str(config.base_dir), local_files_only=True),
        mlm_probability=config.mask_probability,
    )
    special_ids = torch.tensor(sorted(masker.tokenizer.all_special_ids))
    model = BertForMaskedLM.from_pretrained(str(config.base_dir), local_files_only=True)
    rng = np.random.default_rng(config.seed)

    def masked_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        while True:
            for batch in shuffled_length_batches(lengths, config.batch_size, rng):
                input_ids, attention_mask = (
                    torch.from_numpy(a) for a in pad_batch([token_ids[i] for i in batch])
                )
                special = torch.isin(input_ids, special_ids) | (attention_mask == 0)
                inputs, labels = masker.torch_mask_tokens(input_ids.clone(), special_tokens_mask=special)
                yield inputs, attention_mask, labels

    batches = masked_batches()
    model.train()
    log(f"masked-LM head alone: {config.head_steps} steps")
    for parameter in model.bert.parameters():
        parameter.requires_grad_(False)
    head_optimizer = torch.optim.AdamW(model.cls.parameters(), lr=config.head_learning_rate)
    head_history = _train_steps(model, head_optimizer, None, batches, config.head_steps, "head", log)
    for parameter in model.bert.parameters():
        parameter.requires_grad_(True)

    total_steps = max(1, round(-(-len(texts) // config.batch_size) * config.epochs))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(total_steps * config.warmup_fraction), total_steps
    )
    log(f"whole model: {total_steps} steps ({config.epochs} epochs), batch {config.batch_size}")
    history = _train_steps(model, optimizer, scheduler, batches, total_steps, "all", log)

    save_encoder(model, config.base_dir, config.out_dir)
    report = {
        "config": config.as_json(),
        "texts": len(texts),
        "tokens": sum(lengths),
        "history": head_history + history,
        "total_seconds": round(time.time() - started, 1),
    }
    (config.out_dir / ADAPT_REPORT).write_text(json.dumps(report, indent=2))
    log(f"saved the adapted encoder to {config.out_dir}")
    return report


def save_encoder(model: BertForMaskedLM, base_dir: Path, out_dir: Path) -> None:
    """Write the adapted encoder as the base's own model class (pooler kept) with its tokenizer."""
    encoder = AutoModel.from_pretrained(str(base_dir), local_files_only=True)
    missing, unexpected = encoder.load_state_dict(model.bert.state_dict(), strict=False)
    if unexpected or any(not name.startswith("pooler.") for name in missing):
        raise RuntimeError(
            f"encoder weights do not match the base: missing {missing}, unexpected {unexpected}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(str(out_dir))
    for name in TOKENIZER_FILES:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, out_dir / name)


def _train_steps(
    model: BertForMaskedLM,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR | None,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    steps: int,
    phase: str,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Run `steps` optimiser steps, logging progress; returns the loss history."""
    started = time.time()
    smoothed_loss: float | None = None
    history: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        inputs, attention_mask, labels = next(batches)
        loss = masked_lm_loss(model, inputs, attention_mask, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        value = float(loss.detach())
        smoothed_loss = value if smoothed_loss is None else 0.98 * smoothed_loss + 0.02 * value
        if step % 50 == 0 or step == steps:
            elapsed = time.time() - started
            log(
                f"{phase} step {step}/{steps} masked-LM loss {smoothed_loss:.3f} "
                f"elapsed {elapsed / 60:.1f} min ETA {elapsed / step * (steps - step) / 60:.1f} min"
            )
            history.append({"phase": phase, "step": step, "loss": round(smoothed_loss, 4)})
    return history
