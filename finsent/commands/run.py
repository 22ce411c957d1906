"""`finsent run`: the streaming classifier service."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from finsent.config import add_config_arguments, config_from_args
from finsent.pipeline import Service


def register(subparsers: Any) -> None:
    """Add the run subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="run the streaming service: news.raw -> classify -> news.scored / news.dlq",
        description="Consume the input topic in a consumer group, validate each message, classify valid ones "
        "in micro-batches, produce scored records (keyed by topic label) and DLQ records, and commit offsets "
        "only after the broker acknowledged them (at-least-once). Serves /metrics, /healthz and /readyz. "
        "SIGTERM finishes the in-flight batch, commits and exits 0.",
    )
    add_config_arguments(parser)
    parser.set_defaults(handler=run)


def configure_logging(level: str) -> None:
    """One line per event on stderr; kafka-python's own chatter only from WARNING up."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(max(logging.WARNING, getattr(logging, level)))


def run(args: argparse.Namespace) -> int:
    """Validate settings, load the model, serve until SIGTERM/SIGINT."""
    config = config_from_args(args)
    configure_logging(config.log_level)
    logging.getLogger("finsent.run").info("settings: %s", json.dumps(config.redacted(), sort_keys=True))
    service = Service(config)
    service.install_signal_handlers()
    return service.run()
