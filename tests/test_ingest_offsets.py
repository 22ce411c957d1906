"""Commit positions never pass a record that is not yet produced; rewinds replay from the last commit."""

from __future__ import annotations

from ingest import OffsetTracker, Partition

P0 = Partition("news.raw", 0)
P1 = Partition("news.raw", 1)


def test_commit_position_is_one_past_the_last_polled_when_nothing_is_pending() -> None:
    tracker = OffsetTracker()
    for offset in range(10):
        tracker.polled(P0, offset)
    assert tracker.safe_positions([]) == {P0: 10}


def test_commit_position_stops_at_the_first_pending_record_per_partition() -> None:
    tracker = OffsetTracker()
    for offset in range(10):
        tracker.polled(P0, offset)
        tracker.polled(P1, offset)
    assert tracker.safe_positions([(P0, 7), (P0, 4), (P1, 9)]) == {P0: 4, P1: 9}


def test_only_moved_positions_are_committed_again() -> None:
    tracker = OffsetTracker()
    tracker.polled(P0, 0)
    tracker.polled(P1, 0)
    tracker.committed({P0: 1, P1: 1})
    tracker.polled(P1, 1)
    assert tracker.uncommitted(tracker.safe_positions([])) == {P1: 2}


def test_rewind_goes_to_the_last_commit_or_the_first_polled_offset() -> None:
    tracker = OffsetTracker()
    for offset in range(5, 20):
        tracker.polled(P0, offset)
        tracker.polled(P1, offset)
    tracker.committed({P0: 12})
    assert tracker.rewind(P0) == 12
    assert tracker.rewind(P1) == 5
    assert tracker.safe_positions([]) == {P0: 12, P1: 5}
    assert tracker.rewind(Partition("news.raw", 2)) is None


def test_forget_drops_revoked_partitions() -> None:
    tracker = OffsetTracker()
    tracker.polled(P0, 3)
    tracker.polled(P1, 3)
    tracker.forget([P0])
    assert tracker.safe_positions([]) == {P1: 4}
    assert tracker.replay_position(P0) is None
