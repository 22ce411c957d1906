"""`finsent run`: the classify, monitor and alerts stages (all three, or one with --stage)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from finsent.commands.common import Subparsers
from finsent.config import add_config_arguments, config_from_args
from finsent.stages import StageRunner


def register(subparsers: Subparsers) -> None:
    """Add the run subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="run the streaming service: classify -> monitor -> alerts (all stages, or one with --stage)",
        description="Stage classify consumes the input topic in a consumer group, validates each message, "
        "classifies valid ones in micro-batches, produces scored records (keyed by topic label) and DLQ records, "
        "and commits offsets only after the broker acknowledged them (at-least-once). Stage monitor keeps "
        "per-topic windows and baselines from the scored topic (checkpointed in --state-dir) and writes window "
        "snapshots to --windows-topic; stage alerts evaluates --rules on them and delivers to --subscriptions. "
        "--stage all (the default) runs the three in one process. Serves /metrics, /healthz and /readyz. "
        "SIGTERM finishes in-flight work, persists state, commits and exits 0.",
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
    """Validate settings and rule files, start the stages, serve until SIGTERM/SIGINT."""
    config = config_from_args(args)
    configure_logging(config.log_level)
    logging.getLogger("finsent.run").info("settings: %s", json.dumps(config.redacted(), sort_keys=True))
    runner = StageRunner(config)
    runner.install_signal_handlers()
    return runner.run()
