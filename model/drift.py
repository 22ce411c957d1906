"""Prediction drift: rolling predicted label distributions against the training distribution.

Pure NumPy. For each head the tracker keeps the last `window` predictions (label index and
top probability) and reports the Jensen-Shannon divergence (natural log, so in [0, ln 2])
between the predicted label distribution and the label distribution of the training rows,
the mean top probability, and the share of predictions whose top probability is below the
low-confidence threshold.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.labels import IGNORE_INDEX, SENTIMENT_LABELS, TOPIC_LABELS

TASK_SIZES = {"topic": len(TOPIC_LABELS), "sentiment": len(SENTIMENT_LABELS)}
JS_MAX = math.log(2.0)


def normalise(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts (or weights) as a probability vector; uniform when they sum to zero."""
    values = np.asarray(counts, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or np.any(values < 0) or not np.all(np.isfinite(values)):
        raise ValueError("expected a non-empty vector of finite, non-negative counts")
    total = values.sum()
    return np.full(values.size, 1.0 / values.size) if total <= 0 else values / total


def js_divergence(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon divergence (nats) of two distributions given as counts or probabilities."""
    a, b = normalise(p), normalise(q)
    if a.size != b.size:
        raise ValueError(f"distributions differ in size: {a.size} vs {b.size}")
    m = 0.5 * (a + b)

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log(x[mask] / m[mask])))

    return min(JS_MAX, max(0.0, 0.5 * kl(a) + 0.5 * kl(b)))


@dataclass(frozen=True)
class DriftSnapshot:
    """One head's drift signals over the current window."""

    task: str
    count: int
    divergence: float | None
    confidence_mean: float
    low_confidence_share: float


class _Window:
    def __init__(self, classes: int, size: int, low: float) -> None:
        self.counts = np.zeros(classes, dtype=np.int64)
        self.items: deque[tuple[int, float]] = deque()
        self.size, self.low = size, low
        self.confidence_sum = 0.0
        self.low_count = 0

    def push(self, label: int, confidence: float) -> None:
        self.items.append((label, confidence))
        self.counts[label] += 1
        self.confidence_sum += confidence
        self.low_count += confidence < self.low
        if len(self.items) > self.size:
            old_label, old_confidence = self.items.popleft()
            self.counts[old_label] -= 1
            self.confidence_sum -= old_confidence
            self.low_count -= old_confidence < self.low


class DriftTracker:
    """Rolling drift signals for both heads against a reference (training) label distribution."""

    def __init__(
        self,
        reference: Mapping[str, Sequence[float]] | None,
        window: int = 1000,
        low_confidence: float = 0.5,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.reference = {
            task: normalise(reference[task]) for task in TASK_SIZES if reference and task in reference
        }
        for task, values in self.reference.items():
            if values.size != TASK_SIZES[task]:
                raise ValueError(f"{task} reference has {values.size} classes, expected {TASK_SIZES[task]}")
        self.window = window
        self._windows = {task: _Window(size, window, low_confidence) for task, size in TASK_SIZES.items()}

    def observe(self, task: str, labels: Sequence[int], confidences: Sequence[float]) -> None:
        """Add one batch of a head's predicted label indices and top probabilities."""
        window = self._windows[task]
        for label, confidence in zip(labels, confidences, strict=True):
            window.push(int(label), float(confidence))

    def snapshot(self, task: str) -> DriftSnapshot:
        """The head's divergence (None without a reference or data), mean and low confidence."""
        window = self._windows[task]
        count = len(window.items)
        divergence = None
        if count and task in self.reference:
            divergence = js_divergence(window.counts, self.reference[task])
        return DriftSnapshot(
            task=task,
            count=count,
            divergence=divergence,
            confidence_mean=window.confidence_sum / count if count else 0.0,
            low_confidence_share=window.low_count / count if count else 0.0,
        )


def reference_from_manifest(manifest: Mapping[str, Any]) -> dict[str, list[float]] | None:
    """The training label distribution a model recorded (training report), or None for older models."""
    distribution = manifest.get("training", {}).get("data", {}).get("label_distribution")
    if not isinstance(distribution, Mapping) or not all(task in distribution for task in TASK_SIZES):
        return None
    return {task: [float(v) for v in distribution[task]] for task in TASK_SIZES}


def reference_from_data(data_dir: Path, dev_percent: int = 10, seed: int = 13) -> dict[str, list[float]]:
    """Label counts of the training split of data_dir (for models whose manifest lacks them)."""
    from model.data import load_training_table, split_train_dev

    train = split_train_dev(load_training_table(data_dir), dev_percent, seed).train
    return {
        task: [float((train[task] == index).sum()) for index in range(size)]
        for task, size in TASK_SIZES.items()
        if (train[task] != IGNORE_INDEX).any()
    }
