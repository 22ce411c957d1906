"""Errors the CLI reports as one line and exit code 2 (bad input or bad config)."""

from pathlib import Path


class UsageError(Exception):
    """A problem with the user's input or configuration; the message names it."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (libraries' messages can span lines), else its type name."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def check_folder_path(path: Path, what: str) -> None:
    """Raise a UsageError unless path is a folder or can become one (its nearest existing part is a folder)."""
    existing = next((part for part in (path, *path.parents) if part.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"{what} {path}: {existing} is not a folder")
