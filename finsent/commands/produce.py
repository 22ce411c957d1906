"""`finsent produce`: replay a CSV/JSONL of headlines into a topic as live news."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from tqdm import tqdm

from finsent.config import load_config
from finsent.errors import UsageError
from finsent.replay import load_headlines, replay
from ingest import producer_config


def register(subparsers: Any) -> None:
    """Add the produce subcommand."""
    parser = subparsers.add_parser(
        "produce",
        help="replay a CSV/JSONL of headlines into a Kafka topic",
        description="Send each row's 'text' (or 'headline') as a news.raw message with a fresh id and "
        "published_at = now. Shows a progress bar and prints the final count.",
    )
    parser.add_argument("--file", type=Path, required=True, help="CSV or JSONL with a text/headline column")
    parser.add_argument("--topic", default="news.raw", help="topic to write to (default news.raw)")
    parser.add_argument(
        "--rate", type=float, default=None, help="messages per second (default: as fast as possible)"
    )
    parser.add_argument(
        "--loop", action="store_true", help="start over at the end of the file (until Ctrl-C)"
    )
    parser.add_argument("--count", type=int, default=None, help="stop after this many messages")
    parser.add_argument(
        "--bootstrap-servers", default=None, help="Kafka bootstrap servers (default: settings)"
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML settings file (security settings)")
    parser.set_defaults(handler=run)


def _progress(bar: tqdm[Any]) -> Callable[[int], None]:
    def update(count: int) -> None:
        bar.update(count)

    return update


def run(args: argparse.Namespace) -> int:
    """Replay the file; Ctrl-C stops early and still reports the count."""
    if args.rate is not None and args.rate <= 0:
        raise UsageError(f"--rate must be positive, got {args.rate}")
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    config = load_config({"bootstrap_servers": args.bootstrap_servers}, args.config)
    headlines = load_headlines(args.file)
    if not headlines:
        raise UsageError(f"{args.file}: no rows with text")
    try:
        producer = KafkaProducer(**producer_config(config.kafka_settings()))
    except KafkaError as error:
        raise UsageError(f"bootstrap_servers {config.bootstrap_servers}: cannot connect: {error}") from None
    total = args.count or (None if args.loop else len(headlines))
    started = time.monotonic()
    sent = 0

    def send(message: dict[str, Any]) -> None:
        producer.send(args.topic, value=json.dumps(message, ensure_ascii=False).encode("utf-8"))

    with tqdm(total=total, unit="msg", desc=f"produce {args.topic}", file=sys.stderr) as bar:
        try:
            sent = replay(
                send,
                headlines,
                source=f"replay:{args.file.name}",
                rate=args.rate,
                loop=args.loop,
                progress=_progress(bar),
                limit=args.count,
            )
        except KeyboardInterrupt:
            sent = int(bar.n)
        finally:
            producer.flush(timeout=60)
            producer.close(timeout=10)
    elapsed = max(time.monotonic() - started, 1e-9)
    print(
        f"produced {sent} messages to {args.topic} at {config.bootstrap_servers} ({sent / elapsed:.0f} msg/s)"
    )
    return 0
