"""Unstick a kafka-python 3.0 group leader that finished a rebalance without applying its result.

A leader rejoins by itself when a subscribed topic's partitions change (partitions added, a topic
recreated). It records the new metadata the moment it computes the assignment, so from then on
`need_rejoin()` is False. If the poll driving the join times out between that moment and the
SyncGroup answer (our polls wait 5-500 ms), the next poll finds nothing left to join for and never
applies the answer: the member holds no partitions, sends no heartbeats and reads nothing until it
is restarted. Seen in kafka-python 3.0.12 (coordinator/base.py, join_group_async); reproduced by
tests/integration/test_stalled_join.py.
"""

from __future__ import annotations

from typing import Any


def rejoin_if_stalled(consumer: Any) -> bool:
    """Ask the consumer's coordinator to join again if it sits on a join it will never apply; whether it did."""
    # Private attributes, read defensively: a kafka-python without them (or without the bug) is left alone.
    coordinator: Any = getattr(consumer, "_coordinator", None)
    join = getattr(coordinator, "_join_task", None)
    if join is None or not getattr(coordinator, "rejoining", False) or not getattr(join, "is_done", False):
        return False
    if coordinator.need_rejoin():  # the next poll applies the finished join itself
        return False
    coordinator.request_rejoin()
    return True
