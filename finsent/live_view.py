"""The demo's live view: reads news.scored and alerts back from the broker and redraws the table."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from finsent.errors import UsageError
from finsent.live_table import AlertBoard, TopicStats, render

CLEAR = "\x1b[H\x1b[2J"


def _topic_consumer(bootstrap: str, topics: list[str]) -> Any:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    assignment = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic) or {0}
        assignment += [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assignment)
    consumer.seek_to_beginning()
    return consumer


def show(
    service: subprocess.Popen[bytes],
    bootstrap: str,
    duration: float | None,
    refresh: float,
    live: bool,
    stop: threading.Event,
) -> None:
    """Redraw the table from news.scored and alerts until duration or stop; UsageError if the service exits."""
    consumer = _topic_consumer(bootstrap, ["news.scored", "alerts"])
    stats = TopicStats()
    board = AlertBoard()
    started = time.monotonic()
    next_draw = started + refresh
    try:
        while not stop.is_set() and (duration is None or time.monotonic() - started < duration):
            if service.poll() is not None:
                raise UsageError(
                    f"the service exited with code {service.returncode} (see its messages above)"
                )
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    try:
                        value = json.loads(record.value)
                    except (TypeError, ValueError):
                        continue
                    if record.topic == "alerts":
                        board.add(value)
                    else:
                        stats.add(value)
            now = time.monotonic()
            if now >= next_draw:
                next_draw = now + refresh
                _draw(stats, board, now - started, live)
        _draw(stats, board, time.monotonic() - started, live)
    finally:
        consumer.close()


def _draw(stats: TopicStats, board: AlertBoard, elapsed: float, live: bool) -> None:
    title = f"finsent demo: {stats.total} scored in {elapsed:.0f}s ({stats.total / max(elapsed, 1e-9):.1f}/s)"
    table = render(stats, title) + "\n\n" + board.render()
    if live:
        sys.stdout.write(CLEAR + table + "\n(Ctrl-C to stop)\n")
    else:
        sys.stdout.write(table + "\n\n")
    sys.stdout.flush()
