"""Replay a CSV/JSONL of headlines as live news: fresh ids, timestamps now, optional rate limit."""

from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finsent.errors import UsageError
from finsent.tables import load_table, row_texts

# Pacing bounds: below MIN_RATE the sleep between messages overflows; above MAX_RATE pacing means nothing.
MIN_RATE = 0.001
MAX_RATE = 1_000_000.0

CASHTAG = re.compile(r"\$([A-Za-z][A-Za-z.]{0,9})\b")


@dataclass(frozen=True)
class Headline:
    """One row of a replay file."""

    text: str
    tickers: tuple[str, ...]


def load_headlines(path: Path) -> list[Headline]:
    """Rows with non-empty text; tickers from a `cashtags`/`tickers` column or the text's $TAGS."""
    table = load_table(path)
    frame = table.frame
    tag_column = next((name for name in ("cashtags", "tickers") if name in frame.columns), None)
    tag_cells = frame[tag_column].tolist() if tag_column else [None] * len(frame)
    rows: list[Headline] = []
    for text, tag_cell in zip(row_texts(table), tag_cells, strict=True):
        text = text.strip()
        if not text:
            continue
        tags = str(tag_cell or "") if tag_column else text
        tickers = tuple(dict.fromkeys(match.upper() for match in CASHTAG.findall(tags)))
        rows.append(Headline(text, tickers[:20]))
    return rows


def live_message(headline: Headline, source: str) -> dict[str, Any]:
    """The news.raw message for a headline, as if it had just been published."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "id": uuid.uuid4().hex,
        "headline": headline.text,
        "body": None,
        "published_at": now,
        "source": source,
        "tickers": list(headline.tickers) or None,
    }


def check_rate(rate: float | None) -> None:
    """UsageError unless rate is None (as fast as possible) or a number from MIN_RATE to MAX_RATE."""
    if rate is not None and not (math.isfinite(rate) and MIN_RATE <= rate <= MAX_RATE):
        raise UsageError(f"--rate must be a number from {MIN_RATE:g} to {MAX_RATE:g} per second, got {rate}")


def paced(
    headlines: list[Headline], rate: float | None, loop: bool, stop: threading.Event | None = None
) -> Iterator[Headline]:
    """Yield headlines at `rate` per second (None: as fast as possible), forever when `loop`, until `stop`."""
    stop = stop or threading.Event()  # never set: runs to the end
    started = time.monotonic()
    sent = 0
    while not stop.is_set():
        for headline in headlines:
            if stop.is_set():
                return
            if rate:
                delay = started + sent / rate - time.monotonic()
                if delay > 0 and stop.wait(delay):  # a stop wakes a slow replay at once
                    return
            yield headline
            sent += 1
        if not loop:
            return


def replay(
    send: Callable[[dict[str, Any]], None],
    headlines: list[Headline],
    *,
    source: str,
    rate: float | None = None,
    loop: bool = False,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    limit: int | None = None,
) -> int:
    """Send live messages built from headlines; returns how many were sent."""
    count = 0
    for headline in paced(headlines, rate, loop, stop):
        if limit is not None and count >= limit:
            break
        send(live_message(headline, source))
        count += 1
        if progress is not None:
            progress(1)
    return count


@contextlib.contextmanager
def stop_on_first_signal() -> Iterator[threading.Event]:
    """Within the block the first Ctrl-C or SIGTERM sets the yielded event; the next raises KeyboardInterrupt.

    A signal that raises can land in the middle of a client library's call: kafka-python's futures
    take their lock without try/finally, so an interrupt inside `add_callback` can leave the lock held
    and the producer's I/O thread blocked for good when it completes that record. The event lets the
    caller stop between calls; the second signal is the way out of a call that blocks.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, as Ctrl-C does (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
