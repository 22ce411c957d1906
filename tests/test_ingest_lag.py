"""Consumer lag as the stream loop reports it: every owned partition, and nothing for partitions it lost.

A stand-in consumer answers the loop's position, high-watermark and end-offset questions; the metrics
are the classify stage's real ClassifyMetrics registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import TopicPartition
from kafka.errors import IllegalStateError, KafkaTimeoutError

from finsent.metrics import ClassifyMetrics
from ingest import KafkaSettings, LoopSettings, Partition, StreamLoop

TOPIC = "news.raw"
P0, P1, P2 = (Partition(TOPIC, number) for number in range(3))


def no_model(texts: Sequence[str]) -> list[dict[str, Any]]:
    raise AssertionError("these tests classify nothing")


class StandInConsumer:
    """What _report_lag asks kafka-python's KafkaConsumer, from fixed numbers."""

    def __init__(
        self,
        highwater: dict[int, int | None],
        positions: dict[int, int | None],
        end_offsets: dict[int, int] | None = None,
    ) -> None:
        self._highwater = highwater
        self._positions = positions
        self._end_offsets = end_offsets or {}
        self.position_timeouts: list[int | None] = []
        self.end_offset_calls: list[list[int]] = []
        self.assigned = set(highwater)

    def _check(self, tp: TopicPartition) -> None:
        if tp.partition not in self.assigned:
            raise IllegalStateError("Partition is not assigned")

    def highwater(self, tp: TopicPartition) -> int | None:
        self._check(tp)
        return self._highwater[tp.partition]

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        self._check(tp)
        self.position_timeouts.append(timeout_ms)
        return self._positions[tp.partition]

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int | None = None) -> dict[Any, int]:
        self.end_offset_calls.append(sorted(tp.partition for tp in tps))
        if not self._end_offsets:
            raise KafkaTimeoutError("no answer")
        return {tp: self._end_offsets[tp.partition] for tp in tps}


def loop_with(consumer: StandInConsumer, metrics: ClassifyMetrics) -> StreamLoop:
    loop = StreamLoop(LoopSettings(), KafkaSettings("127.0.0.1:9"), no_model, observer=metrics)
    loop._consumer = consumer
    loop.assign({Partition(TOPIC, number) for number in consumer.assigned})
    return loop


def lag(metrics: ClassifyMetrics, partition: int) -> float | None:
    return metrics.registry.get_sample_value(
        "finsent_consumer_lag_messages", {"topic": TOPIC, "partition": str(partition)}
    )


def test_partitions_assigned_but_not_polled_yet_report_their_whole_backlog() -> None:
    """A fresh group on a backlog drains one partition at a time; the others still owe their lag."""
    # 3,900 messages per partition, nothing committed; 64 records of partition 0 polled so far
    # (read, not committed: still lag, as Kafka counts it).
    consumer = StandInConsumer(highwater={0: 3900, 1: 3900, 2: 3900}, positions={0: 64, 1: 0, 2: 0})
    metrics = ClassifyMetrics()
    loop = loop_with(consumer, metrics)
    for offset in range(64):
        loop._tracker.polled(P0, offset)
    loop._report_lag()
    assert [lag(metrics, p) for p in range(3)] == [3900, 3900, 3900]
    # The consumer's position is asked without waiting on the coordinator (the loop must keep polling).
    assert consumer.position_timeouts and set(consumer.position_timeouts) == {0}


def test_a_partition_with_no_fetch_yet_is_measured_against_its_end_offset() -> None:
    """No fetch response yet (e.g. paused on assignment): the high watermark comes from end_offsets()."""
    consumer = StandInConsumer(
        highwater={0: 500, 1: None, 2: None}, positions={0: 100, 1: 200, 2: None}, end_offsets={1: 900, 2: 50}
    )
    metrics = ClassifyMetrics()
    loop = loop_with(consumer, metrics)
    loop._report_lag()
    assert [lag(metrics, p) for p in range(3)] == [400, 700, None]  # partition 2: no position yet
    assert consumer.end_offset_calls == [[1]]


def test_a_broker_that_does_not_answer_end_offsets_costs_only_those_partitions() -> None:
    consumer = StandInConsumer(highwater={0: 500, 1: None}, positions={0: 100, 1: 200})
    metrics = ClassifyMetrics()
    loop = loop_with(consumer, metrics)
    loop._report_lag()  # must not raise: a lag report never rewinds the stream
    assert [lag(metrics, p) for p in range(2)] == [400, None]


def test_revoking_partitions_removes_their_lag_series() -> None:
    """A replica that lost a partition must not keep exporting its last lag (the rule takes the max)."""
    consumer = StandInConsumer(highwater={0: 6001, 1: 6001, 2: 6001}, positions={0: 1, 1: 1, 2: 1})
    metrics = ClassifyMetrics()
    loop = loop_with(consumer, metrics)
    for partition in (P0, P1, P2):
        loop._tracker.polled(partition, 0)
    loop._tracker.committed({P0: 1, P1: 1, P2: 1})
    loop._report_lag()
    assert [lag(metrics, p) for p in range(3)] == [6000, 6000, 6000]

    loop.revoke({P1, P2}, lost=False)
    consumer.assigned = {0}
    assert [lag(metrics, p) for p in range(3)] == [6000, None, None]
    loop._report_lag()  # a later report does not bring them back
    assert [lag(metrics, p) for p in range(3)] == [6000, None, None]

    loop.revoke({P0}, lost=True)  # a lost membership too
    assert lag(metrics, 0) is None


def test_a_partition_revoked_while_lag_is_measured_is_skipped_not_raised() -> None:
    """The rebalance callback runs on kafka-python's IO thread: the consumer may already say 'not assigned'."""
    consumer = StandInConsumer(highwater={0: 10, 1: 10}, positions={0: 0, 1: 0})
    metrics = ClassifyMetrics()
    loop = loop_with(consumer, metrics)
    consumer.assigned = {0}  # the consumer dropped partition 1 before the loop's revoke() ran
    loop._report_lag()
    assert [lag(metrics, p) for p in range(2)] == [10, None]


def test_lag_is_measured_from_the_committed_offset_not_the_read_position() -> None:
    """A stage stuck re-reading the same records (rewind after rewind) must show its lag, not 0."""
    consumer = StandInConsumer(highwater={0: 600, 1: 600}, positions={0: 600, 1: 600})
    metrics = ClassifyMetrics()
    loop = loop_with(consumer, metrics)
    loop._tracker.polled(P0, 99)
    loop._tracker.committed({P0: 100})
    for offset in range(100, 600):  # read up to the end, but nothing past 100 acknowledged/committed
        loop._tracker.polled(P0, offset)
    for offset in range(250, 600):  # never committed here: measured from where this member started
        loop._tracker.polled(P1, offset)
    loop._report_lag()
    assert [lag(metrics, p) for p in range(2)] == [500, 350]
