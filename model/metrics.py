"""Classification metrics: accuracy, macro-F1 and a per-class report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_report(
    labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support as a plain dict."""
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    per_class: dict[str, dict[str, float]] = {}
    f1_scores = []
    for index, name in enumerate(class_names):
        true_positive = float(np.sum((predictions == index) & (labels == index)))
        predicted = float(np.sum(predictions == index))
        support = float(np.sum(labels == index))
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(support),
        }
        if support:
            f1_scores.append(f1)
    accuracy = float(np.mean(labels == predictions)) if len(labels) else 0.0
    return {
        "accuracy": accuracy,
        "macro_f1": float(np.mean(f1_scores)) if f1_scores else 0.0,
        "support": len(labels),
        "per_class": per_class,
    }


def format_report(report: dict[str, Any]) -> str:
    """Human-readable table of a classification_report."""
    lines = [f"{'class':<30}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for name, row in report["per_class"].items():
        lines.append(
            f"{name:<30}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>9d}"
        )
    lines.append(
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   n={report['support']}"
    )
    return "\n".join(lines)
