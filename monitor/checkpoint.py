"""Atomic JSON checkpoint files: a crash mid-write leaves the previous checkpoint intact."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Temporary files of a save sit beside the target as .NAME.<random>.tmp, so a cut-short one can be found.
_TEMP_SUFFIX = ".tmp"


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` as JSON to ``path`` via a temporary file in the same directory and os.replace."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN or infinity in the state is a bug, and would not be valid JSON anyway.
    payload = json.dumps(state, allow_nan=False, separators=(",", ":")).encode("utf-8")
    fd, temp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=_TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(path: str | Path) -> int:
    """Delete temporary files a killed save_checkpoint left beside ``path``; how many there were.

    Only safe while no other process saves to ``path``: one process owns a state folder.
    """
    target = Path(path)
    removed = 0
    for temp in target.parent.glob(f"{_temp_prefix(target)}*{_TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)
        removed += 1
    return removed


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The state saved at ``path``, or None when there is no checkpoint yet; ValueError if unreadable."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"checkpoint {target} is not valid JSON: {error}") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {target} does not hold a JSON object")
    return state
