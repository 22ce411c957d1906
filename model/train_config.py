"""TrainConfig: every setting that decides a training run's weights."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.data import DEFAULT_EXCLUDED_SOURCES, recorded_data_dir


class TrainSetupError(ValueError):
    """A training setting or input that cannot work; the message names it. Raised before any training."""


# (field, smallest allowed value, whether the smallest itself is allowed); None fields are not checked.
_LOWER_BOUNDS = (
    ("epochs", 0.0, False),
    ("batch_size", 1, True),
    ("learning_rate", 0.0, False),
    ("max_tokens", 8, True),
    ("sentiment_weight", 0.0, True),
    ("weight_decay", 0.0, True),
    ("max_rows", 1, True),
    ("max_steps", 1, True),
)


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

    def check(self) -> None:
        """Raise TrainSetupError naming the first setting (as its command-line flag) that cannot work."""
        for name, lowest, allowed in _LOWER_BOUNDS:
            value, flag = getattr(self, name), "--" + name.replace("_", "-")
            if value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise TrainSetupError(f"{flag} must be a finite number, got {value}")
            if value < lowest or (value == lowest and not allowed):
                relation = "at least" if allowed else "above"
                raise TrainSetupError(f"{flag} must be {relation} {lowest}, got {value}")
        if not 0 < self.layer_decay <= 1:
            raise TrainSetupError(f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise TrainSetupError(f"--out {self.out_dir}: exists and is not a folder")

    def as_json(self) -> dict[str, Any]:
        """JSON-friendly view (paths as strings, the data folder as recorded_data_dir gives it)."""
        view = {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}
        return {**view, "data_dir": recorded_data_dir(self.data_dir)}
