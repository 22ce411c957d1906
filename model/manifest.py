"""The model directory's manifest: version, labels, calibration, metrics and file hashes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.labels import SENTIMENT_LABELS, TOPIC_LABELS

MANIFEST_FILE = "manifest.json"
VARIANT_FILES = {"fp32": "model.fp32.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"


class ModelIntegrityError(RuntimeError):
    """A model file is missing or its hash does not match the manifest."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(
    model_dir: Path,
    *,
    version: str,
    max_tokens: int,
    temperatures: dict[str, float],
    training_report: dict[str, Any],
    parity: dict[str, Any],
) -> dict[str, Any]:
    """Hash every model file present in model_dir and write manifest.json."""
    variants = {v: name for v, name in VARIANT_FILES.items() if (model_dir / name).is_file()}
    files = sorted([*variants.values(), "tokenizer.json"])
    manifest = {
        "name": "finsent-minilm-multitask",
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "max_tokens": max_tokens,
        "labels": {"topic": list(TOPIC_LABELS), "sentiment": list(SENTIMENT_LABELS)},
        "temperatures": temperatures,
        "variants": variants,
        "files": {name: sha256_file(model_dir / name) for name in files},
        "sizes_bytes": {name: (model_dir / name).stat().st_size for name in files},
        "parity": parity,
        "training": training_report,
    }
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


def read_manifest(model_dir: Path, verify: bool = True) -> dict[str, Any]:
    """Load manifest.json and (by default) check every listed file's SHA-256."""
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise ModelIntegrityError(f"{model_dir} is not a finsent model directory (no {MANIFEST_FILE})")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if verify:
        for name, expected in manifest["files"].items():
            file_path = model_dir / name
            if not file_path.is_file():
                raise ModelIntegrityError(f"model file {file_path} listed in the manifest is missing")
            actual = sha256_file(file_path)
            if actual != expected:
                raise ModelIntegrityError(
                    f"model file {file_path} has sha256 {actual}, manifest says {expected}"
                )
    return manifest
