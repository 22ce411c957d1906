"""Progress lines of the long model jobs (train, soup, export, retrain)."""

from __future__ import annotations

import sys


def log_to_stderr(message: str) -> None:
    """Default progress sink: one flushed line on stderr, so stdout stays for results."""
    print(message, file=sys.stderr, flush=True)
