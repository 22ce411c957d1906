"""Checks the benchmark scripts run on their arguments before measuring anything."""

from __future__ import annotations

from pathlib import Path

from finsent.errors import UsageError
from finsent.tables import check_output_path


def check_out(out: Path) -> None:
    """Fail before measuring when the results file could not be written (its folder is created)."""
    if not out.is_dir():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"--out {out}: cannot create its folder: {error.strerror}") from None
    check_output_path(out, "--out")
