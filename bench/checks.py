"""Checks the benchmark scripts run on their arguments before measuring anything."""

from __future__ import annotations

import os
from pathlib import Path

from finsent.errors import UsageError


def check_out(out: Path) -> None:
    """Fail before measuring when the results file could not be written."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot create its folder: {error.strerror}") from None
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"--out {out}: not writable")
