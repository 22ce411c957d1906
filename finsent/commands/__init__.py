"""Subcommands of the `finsent` CLI, one module each."""
