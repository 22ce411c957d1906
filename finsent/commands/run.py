"""`finsent run`: the classify, monitor and alerts stages (all three, or one with --stage)."""

from __future__ import annotations

import argparse
import json
import logging

from finsent.commands.common import Subparsers, configure_logging
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


def run(args: argparse.Namespace) -> int:
    """Validate settings and rule files, start the stages, serve until SIGTERM/SIGINT."""
    config = config_from_args(args)
    configure_logging(config.log_level)
    logging.getLogger("finsent.run").info("settings: %s", json.dumps(config.redacted(), sort_keys=True))
    runner = StageRunner(config)
    runner.install_signal_handlers()
    return runner.run()
