"""Scoring a PyTorch network on labelled rows: logits, per-task reports and temperature fits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from model.batching import length_sorted_batches, pad_batch
from model.calibration import expected_calibration_error, fit_temperature, softmax
from model.labels import IGNORE_INDEX, SENTIMENT_LABELS, TOPIC_LABELS
from model.metrics import classification_report
from model.network import MultiTaskClassifier


@torch.inference_mode()
def predict_logits(
    network: MultiTaskClassifier, token_ids: list[list[int]], batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Both heads' logits for pre-tokenised texts, in input order."""
    network.eval()
    device = next(network.parameters()).device
    topic = np.zeros((len(token_ids), len(TOPIC_LABELS)), dtype=np.float32)
    sentiment = np.zeros((len(token_ids), len(SENTIMENT_LABELS)), dtype=np.float32)
    for batch in length_sorted_batches([len(ids) for ids in token_ids], batch_size):
        input_ids, attention_mask = pad_batch([token_ids[i] for i in batch])
        topic_logits, sentiment_logits = network(
            torch.from_numpy(input_ids).to(device), torch.from_numpy(attention_mask).to(device)
        )
        topic[batch] = topic_logits.cpu().numpy()
        sentiment[batch] = sentiment_logits.cpu().numpy()
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


def fit_temperatures(
    topic_logits: np.ndarray, sentiment_logits: np.ndarray, rows: pd.DataFrame
) -> tuple[float, float]:
    """One temperature per head, fitted on the rows that carry that head's label."""
    fitted = []
    for task, logits in (("topic", topic_logits), ("sentiment", sentiment_logits)):
        labelled = rows[task].to_numpy() != IGNORE_INDEX
        fitted.append(fit_temperature(logits[labelled], rows[task].to_numpy()[labelled]))
    return fitted[0], fitted[1]


def calibrate_on_dev(
    network: MultiTaskClassifier, dev_ids: list[list[int]], dev_rows: pd.DataFrame
) -> tuple[tuple[float, float], dict[str, Any], dict[str, Any]]:
    """Fit both heads' temperatures on dev; (temperatures, report before, report after)."""
    topic_dev, sentiment_dev = predict_logits(network, dev_ids)
    temperatures = fit_temperatures(topic_dev, sentiment_dev, dev_rows)
    uncalibrated = evaluate_heads(topic_dev, sentiment_dev, dev_rows)
    calibrated = evaluate_heads(topic_dev, sentiment_dev, dev_rows, temperatures)
    return temperatures, uncalibrated, calibrated
