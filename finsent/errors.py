"""Errors the CLI reports as one line and exit code 2 (bad input or bad config)."""


class UsageError(Exception):
    """A problem with the user's input or configuration; the message names it."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (libraries' messages can span lines), else its type name."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
