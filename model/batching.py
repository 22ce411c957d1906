"""Length-aware batching: group texts of similar length so padding costs little."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most batch_size, each of similar lengths.

    Used at inference: every index appears exactly once; callers restore input order.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def shuffled_length_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, pool_batches: int = 50
) -> Iterator[list[int]]:
    """Training batches: shuffle, sort within pools of pool_batches batches, shuffle batches."""
    permutation = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches: list[list[int]] = []
    for start in range(0, len(permutation), pool):
        chunk = sorted(permutation[start : start + pool].tolist(), key=lambda i: lengths[i])
        batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    for index in rng.permutation(len(batches)):
        yield batches[int(index)]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists into (input_ids, attention_mask) int64 arrays."""
    width = max((len(ids) for ids in sequences), default=1) or 1
    input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask
