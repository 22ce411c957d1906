"""Temperature scaling and expected calibration error, in NumPy so serving code can use them."""

from __future__ import annotations

import math

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits divided by temperature, numerically stable."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean NLL of the true labels under softmax(logits / temperature)."""
    probs = softmax(logits, temperature)
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising dev NLL (golden-section search over log T in [-3, 3])."""
    if len(labels) == 0:
        return 1.0
    low, high = -3.0, 3.0
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa = negative_log_likelihood(logits, labels, math.exp(a))
    fb = negative_log_likelihood(logits, labels, math.exp(b))
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = negative_log_likelihood(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = negative_log_likelihood(logits, labels, math.exp(b))
    return math.exp((low + high) / 2)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: confidence-vs-accuracy gap averaged over equal-width confidence bins."""
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_of = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for index in range(bins):
        members = bin_of == index
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            total += members.mean() * gap
    return float(total)
