"""Errors the CLI reports as one line and exit code 2 (bad input or bad config)."""


class UsageError(Exception):
    """A problem with the user's input or configuration; the message names it."""
