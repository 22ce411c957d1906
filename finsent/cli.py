"""The `finsent` command: one entry point with a subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from finsent import __version__
from finsent.errors import UsageError

# Each module has register(subparsers) that adds its parser and sets `handler`.
COMMAND_MODULES = (
    "finsent.commands.classify",
    "finsent.commands.evaluate",
    "finsent.commands.train",
    "finsent.commands.soup",
    "finsent.commands.export",
    "finsent.commands.run",
    "finsent.commands.demo",
    "finsent.commands.broker",
    "finsent.commands.produce",
    "finsent.commands.retrain",
    "finsent.commands.model_registry",
    "finsent.commands.bench",
)


def build_parser() -> argparse.ArgumentParser:
    """Parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="finsent",
        description="Streaming financial sentiment monitor: topic + sentiment for news, "
        "rolling per-topic negative rates, Prometheus metrics and alerts.",
    )
    parser.add_argument("--version", action="version", version=f"finsent {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for bad input or config)."""
    name = "finsent"
    try:
        # Inside the try: a Ctrl-C while the commands' modules load is "interrupted", not a traceback.
        args = build_parser().parse_args(argv)
        name = f"finsent {args.command}"
        code: int = args.handler(args)
    except UsageError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
