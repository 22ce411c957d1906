"""The model directory's manifest: version, labels, calibration, metrics and file hashes."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from model.labels import SENTIMENT_LABELS, TOPIC_LABELS
from model.tokenization import TOKENIZER_FILE

MANIFEST_FILE = "manifest.json"
VARIANT_FILES = {"fp32": "model.fp32.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelIntegrityError(RuntimeError):
    """A model directory is unusable: manifest unreadable or ill-formed, a file missing or altered."""


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
    max_positions: int | None = None,
) -> dict[str, Any]:
    """Hash every model file present in model_dir and write manifest.json.

    max_positions is the encoder's position-table size: the longest input the graph accepts.
    """
    variants = {v: name for v, name in VARIANT_FILES.items() if (model_dir / name).is_file()}
    files = sorted([*variants.values(), TOKENIZER_FILE])
    manifest = {
        "name": "finsent-minilm-multitask",
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "max_tokens": max_tokens,
        **({} if max_positions is None else {"max_positions": max_positions}),
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
    """Load manifest.json, check its shape and (by default) every listed file's SHA-256."""
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise ModelIntegrityError(f"{model_dir} is not a finsent model directory (no {MANIFEST_FILE})")
    manifest = _load_object(path)
    check_manifest(manifest, path)
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


def is_plain_file_name(name: object) -> bool:
    """True for a bare file name: no folder part, not '.' or '..', not absolute."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(mark in name for mark in ("/", "\\", "\0"))
    )


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Raise ModelIntegrityError naming path and the field unless the manifest has the shape loaders use."""
    version = manifest.get("version")
    if not isinstance(version, str) or not version:
        _bad_field(path, "version", "a non-empty string")
    _check_files(manifest.get("files"), path)
    _check_variants(manifest.get("variants"), manifest["files"], path)
    labels = manifest.get("labels")
    if not isinstance(labels, dict) or not all(
        isinstance(names, list) and all(isinstance(n, str) for n in names) for names in labels.values()
    ):
        _bad_field(path, "labels", "an object of label-name lists")
    for name in ("max_tokens", "max_positions"):
        count = manifest.get(name)
        if (count is not None or name == "max_tokens") and not _is_positive_int(count):
            _bad_field(path, name, "a positive whole number")
    temperatures = manifest.get("temperatures")
    if not isinstance(temperatures, dict) or not all(_is_number(t) for t in temperatures.values()):
        _bad_field(path, "temperatures", "an object of numbers")


def _check_files(files: object, path: Path) -> None:
    if not isinstance(files, dict) or not files:
        _bad_field(path, "files", "an object of file name to SHA-256")
    for name, digest in files.items():
        if not is_plain_file_name(name):
            _bad_field(path, "files", f"plain file names, not {name!r}")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            _bad_field(path, "files", f"hex SHA-256 values, not {digest!r} for {name}")
    if TOKENIZER_FILE not in files:
        _bad_field(path, "files", f"an object that lists {TOKENIZER_FILE}")


def _check_variants(variants: object, files: dict[str, str], path: Path) -> None:
    if not isinstance(variants, dict) or not variants:
        _bad_field(path, "variants", "a non-empty object of variant to ONNX file")
    for variant, name in variants.items():
        if not isinstance(name, str) or name not in files:
            _bad_field(path, "variants", f"files listed under 'files', not {name!r} for {variant}")


def _bad_field(path: Path, field: str, expected: str) -> NoReturn:
    raise ModelIntegrityError(f"manifest {path}: field {field!r} must be {expected}")


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _load_object(path: Path) -> dict[str, Any]:
    """The JSON object in path; anything else is a ModelIntegrityError naming the file."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelIntegrityError(f"manifest {path} is not readable JSON: {error}") from None
    if not isinstance(loaded, dict):
        found = type(loaded).__name__
        raise ModelIntegrityError(f"manifest {path} must hold a JSON object (found a {found})")
    return loaded
