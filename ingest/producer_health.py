"""A producer kafka-python has given up on: telling it is broken, deciding to replace it, closing it."""

from __future__ import annotations

import logging
from typing import Any

from kafka.errors import KafkaError

# The loop's logger: these lines were the loop's before it was split into modules.
log = logging.getLogger("ingest.loop")

# Consecutive failed recoveries after which the producer is replaced even without a known fatal error.
REPLACE_PRODUCER_AFTER = 3
# Closing a producer with unacknowledged records waits at most this long for its I/O thread to stop.
PRODUCER_CLOSE_JOIN_S = 2.0


def producer_is_broken(producer: Any) -> bool:
    """Whether kafka-python put the producer in a fatal state, in which it fails every record for good."""
    # No public API says so; this is the state kafka-python's own sender checks (absent: not broken).
    manager = getattr(producer, "_transaction_manager", None)
    has_fatal_error = getattr(manager, "has_fatal_error", None)
    return bool(has_fatal_error is not None and has_fatal_error())


def replacement_reason(producer: Any, failed_recoveries: int) -> str | None:
    """Why the producer should be closed and replaced by a new one, or None to keep it."""
    # A broker restart can leave kafka-python's idempotent producer failing every record for good
    # (a fatal InitProducerId error); a new producer starts clean.
    if producer_is_broken(producer):
        return "it is in a fatal state"
    if failed_recoveries >= REPLACE_PRODUCER_AFTER:
        return f"{failed_recoveries} failed recoveries in a row"
    return None


def close_producer(producer: Any) -> None:
    """Close a producer at once; records it still holds unacknowledged are failed, not waited for."""
    try:
        producer.close(timeout=0)
        return
    except KafkaError:
        pass  # kafka-python's close() flushes first, and raises while records are unacknowledged
    # Stop its I/O thread, which fails those records (they are uncommitted, so they are replayed). Left
    # open, the producer's __del__ would retry the close at exit and print a traceback.
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(PRODUCER_CLOSE_JOIN_S)
    try:
        producer.close(timeout=0)
    except KafkaError as error:
        log.warning("producer close: %s", error)
