"""`finsent demo`: embedded broker + service + replay of the bundled stream, with a live table."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from finsent.broker import BrokerError, EmbeddedBroker
from finsent.commands.run import configure_logging
from finsent.errors import UsageError
from finsent.live_table import TopicStats, render
from finsent.replay import Headline, load_headlines, replay

BUNDLED_STREAM = "stock_tweets_stream_2020.csv"
CLEAR = "\x1b[H\x1b[2J"


def bundled_stream() -> Path:
    """The bundled replay stream: the repository's data/ folder, or finsent/demo/ in an installed wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "data" / BUNDLED_STREAM, here.parents[1] / "demo" / BUNDLED_STREAM):
        if candidate.is_file():
            return candidate
    raise UsageError(f"bundled stream {BUNDLED_STREAM} not found; pass --file")


def register(subparsers: Any) -> None:
    """Add the demo subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="embedded broker + service + replayed tweet stream, with a live per-topic table",
        description="Start the embedded broker, the streaming service and a replay of the bundled stock tweet "
        "stream in one process, and show per topic: volume and negative share. Runs until Ctrl-C or "
        "--duration. Without a terminal (or with CI=true) the table is printed periodically instead.",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--rate", type=float, default=25.0, help="replayed messages per second (default 25)")
    parser.add_argument(
        "--file", type=Path, default=None, help="replay this CSV/JSONL instead of the bundled stream"
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="model directory (default: settings, shipped)"
    )
    parser.add_argument("--metrics-port", type=int, default=0, help="metrics port (default: any free port)")
    parser.add_argument(
        "--refresh", type=float, default=None, help="seconds between tables (default 1 live, 5 plain)"
    )
    parser.set_defaults(handler=run)


def _live_terminal() -> bool:
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return sys.stdout.isatty() and not ci


def _scored_consumer(bootstrap: str, topic: str) -> Any:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    partitions = consumer.partitions_for_topic(topic) or {0}
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    consumer.seek_to_beginning()
    return consumer


def run(args: argparse.Namespace) -> int:
    """Run everything until --duration or Ctrl-C; exit 0."""
    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration must be positive, got {args.duration}")
    if args.rate <= 0:
        raise UsageError(f"--rate must be positive, got {args.rate}")
    headlines = load_headlines(args.file or bundled_stream())
    live = _live_terminal()
    refresh = args.refresh or (1.0 if live else 5.0)
    configure_logging("WARNING")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # connection chatter would tear the table
    broker = EmbeddedBroker()
    try:
        broker.start()
    except BrokerError as error:
        broker.stop()
        raise UsageError(str(error)) from None
    stop = threading.Event()
    feeder: threading.Thread | None = None
    service: subprocess.Popen[bytes] | None = None
    try:
        # The service runs as its own process, exactly as `finsent run` would.
        command = [sys.executable, "-m", "finsent", "run", "--bootstrap-servers", broker.bootstrap]
        command += ["--group-id", "finsent-demo", "--metrics-host", "127.0.0.1", "--log-level", "WARNING"]
        command += ["--metrics-port", str(args.metrics_port)]
        # Short group timings: the embedded broker holds a join for a good part of the session timeout.
        command += ["--session-timeout-ms", "6000", "--heartbeat-interval-ms", "1000"]
        if args.model is not None:
            command += ["--model-dir", str(args.model)]
        service = subprocess.Popen(command)
        feeder = threading.Thread(
            target=_feed, args=(broker.bootstrap, headlines, args.rate, stop), name="demo-replay", daemon=True
        )
        feeder.start()
        print(
            f"finsent demo: broker {broker.bootstrap}, service pid {service.pid}, replaying {len(headlines)} "
            f"tweets at {args.rate:g}/s" + ("" if args.duration is None else f" for {args.duration:g}s"),
            flush=True,
        )
        _show(service, broker.bootstrap, args.duration, refresh, live)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if feeder is not None:
            feeder.join(timeout=5)
        if service is not None:
            _stop_service(service)
        broker.stop()
    return 0


def _feed(bootstrap: str, headlines: list[Headline], rate: float, stop: threading.Event) -> None:
    """Replay the stream in a loop until stopped (the producer lives in this thread)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        replay(
            lambda message: producer.send("news.raw", value=json.dumps(message).encode("utf-8")),
            headlines,
            source="demo-replay",
            rate=rate,
            loop=True,
            stop=stop,
        )
    finally:
        producer.close(timeout=5)


def _stop_service(service: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the service finishes its batch and commits), SIGKILL if it hangs."""
    if service.poll() is None:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def _show(
    service: subprocess.Popen[bytes], bootstrap: str, duration: float | None, refresh: float, live: bool
) -> None:
    consumer = _scored_consumer(bootstrap, "news.scored")
    stats = TopicStats()
    started = time.monotonic()
    next_draw = started + refresh
    try:
        while duration is None or time.monotonic() - started < duration:
            if service.poll() is not None:
                raise UsageError(
                    f"the service exited with code {service.returncode} (see its messages above)"
                )
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    stats.add(json.loads(record.value))
            now = time.monotonic()
            if now >= next_draw:
                next_draw = now + refresh
                _draw(stats, now - started, live)
        _draw(stats, time.monotonic() - started, live)
    finally:
        consumer.close()


def _draw(stats: TopicStats, elapsed: float, live: bool) -> None:
    title = f"finsent demo: {stats.total} scored in {elapsed:.0f}s ({stats.total / max(elapsed, 1e-9):.1f}/s)"
    table = render(stats, title)
    if live:
        sys.stdout.write(CLEAR + table + "\n(Ctrl-C to stop)\n")
    else:
        sys.stdout.write(table + "\n\n")
    sys.stdout.flush()
    logging.getLogger("finsent.demo").debug("drawn")
