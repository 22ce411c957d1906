"""Fast tokenizer loading with a token budget; long texts are truncated, never rejected."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from model.text import normalize_text

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_TOKENS = 128
MIN_MAX_TOKENS = 8  # [CLS] and [SEP] take two; below this nothing useful is left of a headline


def load_tokenizer(model_dir: Path, max_tokens: int = DEFAULT_MAX_TOKENS) -> Tokenizer:
    """Load tokenizer.json from a model directory, with truncation at max_tokens and no padding."""
    if max_tokens < MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS}, got {max_tokens}")
    path = Path(model_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in {model_dir}")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    # Keep the head of the text: a headline and a story's lead carry its gist.
    tokenizer.enable_truncation(max_length=max_tokens, strategy="longest_first")
    return tokenizer


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str]) -> list[Encoding]:
    """Normalise and tokenise texts (ids with [CLS]/[SEP], at most the budget; ``overflowing`` holds the rest)."""
    return list(tokenizer.encode_batch([normalize_text(text) for text in texts]))


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Normalise and tokenise texts into id lists (with [CLS]/[SEP], at most the budget)."""
    return [encoding.ids for encoding in encode_batch(tokenizer, texts)]
