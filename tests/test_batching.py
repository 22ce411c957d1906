import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from model.batching import length_sorted_batches, pad_batch, shuffled_length_batches


@given(
    st.lists(st.integers(min_value=1, max_value=512), max_size=300), st.integers(min_value=1, max_value=64)
)
def test_length_sorted_batches_cover_every_index_once(lengths: list[int], batch_size: int) -> None:
    batches = length_sorted_batches(lengths, batch_size)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    # Sorted by length, so a batch's padding is bounded by its neighbours' lengths.
    assert [lengths[i] for i in flat] == sorted(lengths)


@given(st.lists(st.integers(min_value=1, max_value=128), min_size=1, max_size=400), st.integers(1, 40))
def test_training_batches_cover_every_row_once(lengths: list[int], batch_size: int) -> None:
    batches = list(shuffled_length_batches(lengths, batch_size, np.random.default_rng(0)))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))


def test_sorting_cuts_padding() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 120, size=512).tolist()

    def padded_tokens(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    naive = [list(range(s, min(s + 32, 512))) for s in range(0, 512, 32)]
    assert padded_tokens(length_sorted_batches(lengths, 32)) < 0.7 * padded_tokens(naive)


def test_pad_batch_masks_padding() -> None:
    ids, mask = pad_batch([[101, 5, 102], [101, 102]])
    assert ids.tolist() == [[101, 5, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ids.dtype == np.int64
