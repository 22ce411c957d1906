"""The loop's sending side: scored records and dead letters out, then every acknowledgement awaited.

A record refused for its size (by the producer at once, or by the broker through its future) is not an
outage: a scored record is dead-lettered as oversized instead, and a dead letter is sent again compact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from ingest.classify import Pending
from ingest.contract import Invalid, InvalidReason
from ingest.dlq import COMPACT_KEY_BYTES, COMPACT_ORIGINAL_BYTES, Source, dlq_record, encode_json
from ingest.loop_settings import LoopSettings
from ingest.observer import Observer
from ingest.scored import scored_record
from ingest.stopping import StopRequest

# The loop's logger: these lines were the loop's before it was split into modules.
log = logging.getLogger("ingest.loop")

# A flush waits in slices this long, so a stop request is noticed while the broker does not answer.
FLUSH_SLICE_S = 0.25
# What the broker or the producer answers for a record over its size limit.
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class DeliveryFailed(Exception):
    """The broker did not acknowledge every produced record; the uncommitted range is replayed."""


@dataclass
class _Sent:
    """A produced record whose acknowledgement is outstanding."""

    kind: str
    label: str = ""
    sentiment: str = ""
    source_timestamp_ms: int | None = None
    # Produces a smaller stand-in when the record is refused for its size (None: there is none).
    instead: Callable[[str], None] | None = None
    future: Any = None


class Sender:
    """Produces the loop's scored records and dead letters, and waits for the broker to acknowledge them."""

    def __init__(
        self,
        settings: LoopSettings,
        observer: Observer,
        stats: dict[str, int],
        stop: StopRequest,
        clock: Callable[[], float],
        on_waiting: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.observer = observer
        # The loop connects, replaces and closes it; None while there is none.
        self.producer: Any = None
        self._stats = stats  # the loop's counters: "scored" and "invalid" count acknowledged records
        self._stop = stop
        self._clock = clock
        self._on_waiting = on_waiting  # called while acknowledgements are late (readiness may expire)
        self._sent: list[_Sent] = []

    @property
    def outstanding(self) -> bool:
        """Whether records were sent whose acknowledgements were not awaited yet."""
        return bool(self._sent)

    def forget_outstanding(self) -> None:
        """Stop waiting for the records sent so far (they are not committed, so they are replayed)."""
        self._sent.clear()

    def send_scored(self, pending: Pending, result: Mapping[str, Any], scored_at: str) -> None:
        """Produce the scored record of one classified message (dead-lettered if it is too large or cannot be built)."""
        try:
            record = scored_record(
                pending.item,
                result,
                model_version=self.settings.model_version,
                kafka_timestamp_ms=pending.timestamp_ms,
                scored_at=scored_at,
            )
        except Exception as exc:  # one record's oddity must not stop the stream and replay it forever
            source = pending.source()
            log.exception(
                "cannot build the scored record of %s:%d@%d", source.topic, source.partition, source.offset
            )
            detail = f"cannot build the scored record: {exc!r}"[:300]
            self.send_dead_letter(Invalid(InvalidReason.CLASSIFY_FAILED, detail), pending.raw, source)
            return
        label = record["topic"]

        def dead_letter(why: str) -> None:
            source = pending.source()
            log.warning(
                "scored record of %s:%d@%d is too large to produce (%s); dead-lettering it as oversized",
                source.topic,
                source.partition,
                source.offset,
                why,
            )
            detail = f"the scored record is too large to produce: {why}"[:300]
            self.send_dead_letter(Invalid(InvalidReason.OVERSIZED, detail), pending.raw, source)

        entry = _Sent("scored", label, record["sentiment"], pending.timestamp_ms, instead=dead_letter)
        self._produce(entry, self.settings.output_topic, label.encode("utf-8"), encode_json(record))

    def send_dead_letter(
        self, invalid: Invalid, original: bytes | None, source: Source, *, compact: bool = False
    ) -> None:
        """Dead-letter one record; if that is too large, again without most of its key and original."""
        key = source.key
        if compact:
            key = None if key is None else key[:COMPACT_KEY_BYTES]
            letter = dlq_record(
                invalid,
                original,
                source,
                max_original_bytes=COMPACT_ORIGINAL_BYTES,
                max_key_bytes=COMPACT_KEY_BYTES,
            )
        else:
            letter = dlq_record(invalid, original, source)

        def smaller(why: str) -> None:
            log.warning(
                "dead letter for %s:%d@%d is too large (%s); dropping most of its key and original",
                source.topic,
                source.partition,
                source.offset,
                why,
            )
            self.send_dead_letter(invalid, original, source, compact=True)

        entry = _Sent("dlq", invalid.reason.value, instead=None if compact else smaller)
        headers = [("finsent-reason", invalid.reason.value.encode("ascii"))]
        self._produce(entry, self.settings.dlq_topic, key, encode_json(letter), headers)

    def _produce(
        self,
        entry: _Sent,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Send one record; one the producer refuses for its size is replaced by its stand-in at once."""
        try:
            entry.future = self.producer.send(topic, key=key, value=value, headers=headers)
        except TOO_LARGE as error:
            if entry.instead is None:
                raise
            entry.instead(str(error))
            return
        self._sent.append(entry)

    def await_acks(self) -> None:
        """Wait for the records sent so far; raise DeliveryFailed unless each was acknowledged or replaced.

        A replaced record's stand-in is sent, not awaited: it is outstanding for the next call.
        """
        self._flush_producer()
        sent, self._sent = self._sent, []
        failures = sum(not self._settle(entry) for entry in sent)
        if failures:
            raise DeliveryFailed(f"{failures} of {len(sent)} records were not acknowledged")

    def _flush_producer(self) -> None:
        """Flush the producer in short slices until done, past flush_timeout_s, or cut short by a stop."""
        deadline = self._clock() + self.settings.flush_timeout_s
        while True:
            if self._stop.requested:
                deadline = min(deadline, self._stop.deadline)
            try:
                self.producer.flush(timeout=max(0.0, min(FLUSH_SLICE_S, deadline - self._clock())))
                return
            except KafkaTimeoutError as error:
                if self._clock() >= deadline:
                    raise DeliveryFailed(f"flush: {error}") from error
                self._on_waiting()
            except KafkaError as error:
                raise DeliveryFailed(f"flush: {error}") from error

    def _settle(self, entry: _Sent) -> bool:
        """Count one acknowledged record, or replace one refused for its size; False if it failed."""
        future = entry.future
        if future.is_done and isinstance(future.exception, TOO_LARGE) and entry.instead is not None:
            entry.instead(str(future.exception))  # the broker's limit: its stand-in goes out next round
            return True
        if not future.is_done or future.failed():
            return False
        if entry.kind == "scored":
            self._stats["scored"] += 1
            latency = None
            if entry.source_timestamp_ms is not None:
                latency = max(0.0, (time.time() * 1000.0 - entry.source_timestamp_ms) / 1000.0)
            self.observer.scored(entry.label, entry.sentiment, latency)
        else:
            self._stats["invalid"] += 1
            self.observer.invalid(entry.label)
        return True
