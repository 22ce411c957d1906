"""`finsent produce`: replay a CSV/JSONL of headlines into a topic as live news."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from tqdm import tqdm

from finsent.commands.common import Subparsers
from finsent.config import load_client_settings
from finsent.errors import UsageError
from finsent.replay import (
    MAX_RATE,
    MIN_RATE,
    Headline,
    check_rate,
    load_headlines,
    replay,
    stop_on_first_signal,
)
from ingest import producer_config, topic_name_problem

DEFAULT_FLUSH_TIMEOUT = 30.0
MAX_FLUSH_TIMEOUT = 3600.0


def register(subparsers: Subparsers) -> None:
    """Add the produce subcommand."""
    parser = subparsers.add_parser(
        "produce",
        help="replay a CSV/JSONL of headlines into a Kafka topic",
        description="Send each row's 'headline' (else its 'text') as a news.raw message with a fresh id and "
        "published_at = now. Shows a progress bar of the messages the broker acknowledged and prints the "
        "final count. Ctrl-C or SIGTERM stops early, waits up to --flush-timeout for the acknowledgements "
        "(a second Ctrl-C stops waiting) and still reports the count; exits 1 when the broker did not "
        "acknowledge every message sent.",
    )
    parser.add_argument("--file", type=Path, required=True, help="CSV or JSONL with a text/headline column")
    parser.add_argument("--topic", default="news.raw", help="topic to write to (default news.raw)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help=f"messages per second, {MIN_RATE:g} to {MAX_RATE:g} (default: as fast as possible)",
    )
    parser.add_argument(
        "--loop", action="store_true", help="start over at the end of the file (until Ctrl-C)"
    )
    parser.add_argument("--count", type=int, default=None, help="stop after this many messages")
    parser.add_argument(
        "--flush-timeout",
        type=float,
        default=DEFAULT_FLUSH_TIMEOUT,
        help=f"seconds to wait in all at the end for the broker's acknowledgements (default {DEFAULT_FLUSH_TIMEOUT:g})",
    )
    parser.add_argument(
        "--bootstrap-servers", default=None, help="Kafka bootstrap servers (default: settings)"
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML settings file (security settings)")
    parser.set_defaults(handler=run)


class Delivery:
    """Messages queued, acknowledged and refused; the callbacks run on the producer's I/O thread."""

    def __init__(self) -> None:
        self.queued = 0
        self.acked = 0
        self.failed = 0
        self.error: str | None = None
        self._answered = threading.Condition()

    def track(self, future: Any) -> None:
        """Count a send's future when the broker acknowledges or refuses it."""
        with self._answered:
            self.queued += 1
        future.add_callback(self._acknowledged)
        future.add_errback(self._refused)

    def wait_answered(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds in all for an answer to every queued message.

        False when some are still unanswered then, or on a second Ctrl-C/SIGTERM. (kafka-python's
        `flush(timeout)` applies the timeout to each pending batch in turn, so it can wait far longer.)
        """
        try:
            with self._answered:
                return self._answered.wait_for(lambda: self.acked + self.failed >= self.queued, timeout)
        except KeyboardInterrupt:
            return False

    def _acknowledged(self, _metadata: Any) -> None:
        with self._answered:
            self.acked += 1
            self._answered.notify_all()

    def _refused(self, error: BaseException) -> None:
        with self._answered:
            self.failed += 1
            self.error = f"{type(error).__name__}: {error}"
            self._answered.notify_all()


def check_args(args: argparse.Namespace) -> None:
    """Reject a bad topic, rate, count or flush timeout before anything connects."""
    problem = topic_name_problem(args.topic)
    if problem is not None:
        raise UsageError(f"--topic {problem}")
    check_rate(args.rate)
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    timeout = args.flush_timeout
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_FLUSH_TIMEOUT):
        raise UsageError(
            f"--flush-timeout must be more than 0 and at most {MAX_FLUSH_TIMEOUT:g}, got {timeout}"
        )


def _close(producer: KafkaProducer, drained: bool) -> None:
    """Close the producer; abandon undelivered messages rather than hang or raise at exit."""
    if not drained:
        # kafka-python's close() flushes first and raises (also later, from atexit and __del__) while
        # records are pending: stop its I/O thread without sending them, which fails their futures.
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
            sender.join(5)
    with contextlib.suppress(KafkaError):
        producer.close(timeout=5 if drained else 1)


def _send_all(
    args: argparse.Namespace,
    headlines: list[Headline],
    producer: KafkaProducer,
    delivery: Delivery,
    bar: tqdm[Any],
    stop: threading.Event,
) -> None:
    """Replay the file until done, --count, `stop` (Ctrl-C or SIGTERM), or a send the client refuses."""

    def send(message: dict[str, Any]) -> None:
        value = json.dumps(message, ensure_ascii=False).encode("utf-8")
        delivery.track(producer.send(args.topic, value=value))

    def progress(_count: int) -> None:
        bar.update(delivery.acked - bar.n)

    try:
        replay(
            send,
            headlines,
            source=f"replay:{args.file.name}",
            rate=args.rate,
            loop=args.loop,
            progress=progress,
            limit=args.count,
            stop=stop,
        )
    except KeyboardInterrupt:  # a second Ctrl-C/SIGTERM, to get out of a send that blocks
        pass
    except KafkaError as error:
        delivery.error = f"{type(error).__name__}: {error}"


def run(args: argparse.Namespace) -> int:
    """Replay the file; Ctrl-C or SIGTERM stops early and still reports the count."""
    check_args(args)
    kafka = load_client_settings({"bootstrap_servers": args.bootstrap_servers}, args.config)
    headlines = load_headlines(args.file)
    if not headlines:
        raise UsageError(f"{args.file}: no rows with text")
    try:
        producer = KafkaProducer(**producer_config(kafka))
    except KafkaError as error:
        raise UsageError(f"bootstrap_servers {kafka.bootstrap_servers}: cannot connect: {error}") from None
    total = args.count or (None if args.loop else len(headlines))
    started = time.monotonic()
    delivery = Delivery()
    drained = False
    with stop_on_first_signal() as stop:
        try:
            with tqdm(total=total, unit="msg", desc=f"produce {args.topic}", file=sys.stderr) as bar:
                _send_all(args, headlines, producer, delivery, bar, stop)
                drained = delivery.wait_answered(args.flush_timeout)
                bar.update(delivery.acked - bar.n)
        finally:
            _close(producer, drained)
    if not drained:
        delivery.error = f"no answer within --flush-timeout {args.flush_timeout:g}s"
    return _report(args, kafka.bootstrap_servers, delivery, time.monotonic() - started)


def _report(args: argparse.Namespace, servers: str, delivery: Delivery, elapsed: float) -> int:
    """Print the count of acknowledged messages; 1 when some were not acknowledged."""
    acked = delivery.acked
    target = f"to {args.topic} at {servers}"
    if acked == delivery.queued and delivery.error is None:
        print(f"produced {acked} messages {target} ({acked / max(elapsed, 1e-9):.0f} msg/s)")
        return 0
    reason = f" (last error: {delivery.error})" if delivery.error else ""
    print(
        f"finsent produce: produced {acked} of {delivery.queued} messages {target}; "
        f"the broker did not acknowledge the rest{reason}",
        file=sys.stderr,
    )
    return 1
