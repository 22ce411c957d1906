"""Event-time windows, watermark, late drop, dedupe and topic bounding of the monitor core."""

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import OTHER_TOPIC, Monitor, MonitorConfig, Outcome, WindowSnapshot
from tests.state_compare import comparable_state

# Small horizons keep the streams in property tests short.
CONFIG = MonitorConfig(
    horizons=(60, 120),
    bucket_seconds=10,
    allowed_lateness=30.0,
    baseline_half_life=600.0,
    baseline_min_samples=1,
    min_volume=1,
    top_k=3,
)
T0 = 1_700_000_000.0  # a bucket-aligned epoch time


@dataclass(frozen=True)
class Event:
    id: str
    topic: str
    negative: bool
    p_negative: float
    t: float


def observe(monitor: Monitor, event: Event) -> Outcome:
    sentiment = "negative" if event.negative else "neutral"
    return monitor.observe(
        event.id, event.topic, sentiment, event.p_negative, event.t, f"headline {event.id}"
    ).outcome


def by_key(snapshots: list[WindowSnapshot]) -> dict[tuple[str, str], WindowSnapshot]:
    return {(s.topic, s.window): s for s in snapshots}


@st.composite
def streams(draw: st.DrawFn, max_size: int = 60) -> list[Event]:
    """Events in time order over a few minutes, two topics, distinct ids."""
    gaps = draw(st.lists(st.floats(0, 25, allow_nan=False), min_size=1, max_size=max_size))
    events = []
    t = T0
    for i, gap in enumerate(gaps):
        t += gap
        p = draw(st.integers(0, 100)) / 100
        events.append(Event(f"m{i}", draw(st.sampled_from(["Macro", "Energy | Oil"])), p > 0.5, p, t))
    return events


@settings(max_examples=60, deadline=None)
@given(streams(), st.data())
def test_any_arrival_order_within_lateness_gives_the_same_state(
    events: list[Event], data: st.DataObject
) -> None:
    # Arrival order sorted by t + delay with delay <= lateness never presents an event behind the watermark.
    delays = data.draw(
        st.lists(st.floats(0, CONFIG.allowed_lateness), min_size=len(events), max_size=len(events))
    )
    order = sorted(range(len(events)), key=lambda i: events[i].t + delays[i])
    shuffled = [events[i] for i in order]
    in_order, out_of_order = Monitor(CONFIG), Monitor(CONFIG)
    assert all(observe(in_order, e) is Outcome.APPLIED for e in events)
    assert all(observe(out_of_order, e) is Outcome.APPLIED for e in shuffled)
    assert comparable_state(out_of_order.to_state()) == comparable_state(in_order.to_state())
    now = events[-1].t
    assert out_of_order.snapshot(now) == in_order.snapshot(now)


@settings(max_examples=60, deadline=None)
@given(st.permutations([Event(f"p{i}", "Macro", i % 3 == 0, (i % 7) / 7, T0 + 3.0 * i) for i in range(10)]))
def test_any_permutation_of_events_inside_the_lateness_gives_the_same_counts(events: list[Event]) -> None:
    monitor = Monitor(CONFIG)
    assert all(observe(monitor, e) is Outcome.APPLIED for e in events)
    snap = by_key(monitor.snapshot(T0 + 30))[("Macro", "1m")]
    assert (snap.volume, snap.negative) == (10, 4)
    assert snap.expected_rate == pytest.approx(sum((i % 7) / 7 for i in range(10)) / 10)


@settings(max_examples=60, deadline=None)
@given(streams())
def test_window_counts_match_a_direct_count(events: list[Event]) -> None:
    monitor = Monitor(CONFIG)
    for event in events:
        observe(monitor, event)
    now = events[-1].t
    snaps = by_key(monitor.snapshot(now))
    for topic in {e.topic for e in events}:
        for horizon in CONFIG.horizons:
            last = math.floor(now / CONFIG.bucket_seconds)
            first = last - horizon // CONFIG.bucket_seconds + 1
            inside = [
                e
                for e in events
                if e.topic == topic and first <= math.floor(e.t / CONFIG.bucket_seconds) <= last
            ]
            snap = snaps[(topic, f"{horizon // 60}m")]
            assert snap.volume == len(inside)
            assert snap.negative == sum(e.negative for e in inside)
            if inside:
                assert snap.expected_rate == pytest.approx(sum(e.p_negative for e in inside) / len(inside))
                assert snap.rate == pytest.approx(snap.negative / snap.volume)
                best = sorted(inside, key=lambda e: (e.p_negative, e.id), reverse=True)[: CONFIG.top_k]
                assert [h.id for h in snap.headlines] == [e.id for e in best]
            else:
                assert snap.rate is None and snap.expected_rate is None and snap.headlines == ()


@settings(max_examples=60, deadline=None)
@given(streams(), st.data())
def test_replays_never_inflate_counts(events: list[Event], data: st.DataObject) -> None:
    replayed = list(events)
    for event in data.draw(st.lists(st.sampled_from(events), max_size=20)):
        replayed.insert(data.draw(st.integers(replayed.index(event) + 1, len(replayed))), event)
    once, twice = Monitor(CONFIG), Monitor(CONFIG)
    for event in events:
        observe(once, event)
    outcomes = [observe(twice, event) for event in replayed]
    assert outcomes.count(Outcome.APPLIED) == len(events)
    assert twice.to_state()["windows"] == once.to_state()["windows"]
    assert twice.counters.duplicate + twice.counters.late == len(replayed) - len(events)


def test_event_behind_the_watermark_is_dropped_and_counted() -> None:
    monitor = Monitor(CONFIG)
    assert observe(monitor, Event("a", "Macro", True, 0.9, T0 + 100)) is Outcome.APPLIED
    assert monitor.watermark == T0 + 70
    assert observe(monitor, Event("late", "Macro", True, 0.9, T0 + 69.9)) is Outcome.LATE
    assert monitor.counters.late == 1
    snap = by_key(monitor.snapshot(T0 + 100))[("Macro", "2m")]
    assert snap.volume == 1
    # A dropped id is not remembered: it is late again, not a duplicate.
    assert observe(monitor, Event("late", "Macro", True, 0.9, T0 + 69.9)) is Outcome.LATE


def test_late_but_allowed_event_lands_in_its_own_bucket() -> None:
    monitor = Monitor(CONFIG)
    observe(monitor, Event("a", "Macro", False, 0.1, T0 + 100))
    assert observe(monitor, Event("b", "Macro", True, 0.8, T0 + 75)) is Outcome.APPLIED
    rows = monitor.to_state()["windows"]["topics"]["Macro"]
    index = math.floor((T0 + 75) / 10)
    assert [(row[0], row[1], row[2]) for row in rows] == [(index, 1, 1), (index + 3, 1, 0)]
    # A 1m window ending before b's bucket does not see it.
    assert by_key(monitor.snapshot(T0 + 69))[("Macro", "1m")].volume == 0
    assert by_key(monitor.snapshot(T0 + 75))[("Macro", "1m")].negative == 1


def test_buckets_older_than_the_longest_horizon_expire() -> None:
    monitor = Monitor(CONFIG)
    observe(monitor, Event("old", "Macro", True, 0.9, T0))
    observe(monitor, Event("new", "Macro", False, 0.1, T0 + 1000))
    rows = monitor.to_state()["windows"]["topics"]["Macro"]
    assert [row[0] for row in rows] == [math.floor((T0 + 1000) / 10)]
    assert [h.id for s in monitor.snapshot(T0 + 1000) for h in s.headlines] == ["new", "new"]


def test_memory_stays_bounded_on_a_long_stream() -> None:
    monitor = Monitor(CONFIG)
    per_topic = CONFIG.longest_horizon // 10 + int(CONFIG.allowed_lateness) // 10 + 1
    for i in range(3000):
        observe(monitor, Event(f"m{i}", ["Macro", "IPO"][i % 2], i % 4 == 0, 0.5, T0 + 2.0 * i))
        if i % 100 == 0:
            state = monitor.to_state()
            assert all(len(rows) <= per_topic for rows in state["windows"]["topics"].values())
            retained = sum(len(ids) for _, ids in state["dedupe"]["buckets"])
            assert retained <= (CONFIG.dedupe_seconds + 10) / 2.0 + 1


def test_duplicate_id_counts_once_even_with_other_fields() -> None:
    monitor = Monitor(CONFIG)
    assert observe(monitor, Event("x", "Macro", True, 0.9, T0)) is Outcome.APPLIED
    assert observe(monitor, Event("x", "IPO", False, 0.1, T0 + 5)) is Outcome.DUPLICATE
    assert monitor.counters.duplicate == 1 and monitor.counters.applied == 1
    assert {s.topic for s in monitor.snapshot(T0 + 5)} == {"Macro"}


def test_ids_are_forgotten_after_the_retention_and_under_the_cap() -> None:
    monitor = Monitor(CONFIG)
    observe(monitor, Event("x", "Macro", True, 0.9, T0))
    observe(monitor, Event("y", "Macro", True, 0.9, T0 + CONFIG.dedupe_seconds + 20))
    assert [ids for _, ids in monitor.to_state()["dedupe"]["buckets"]] == [["y"]]

    capped = Monitor(MonitorConfig(horizons=(60,), dedupe_max_ids=3))
    for i in range(5):
        capped.observe(f"id{i}", "Macro", "neutral", 0.2, T0 + 10.0 * i, "h")
    assert capped.counters.dedupe_evicted == 2
    assert sum(len(ids) for _, ids in capped.to_state()["dedupe"]["buckets"]) == 3


def test_a_backlog_read_one_topic_after_another_is_not_late() -> None:
    """news.scored is keyed by topic, and a consumer hands a backlog over one partition at a time."""
    monitor = Monitor(CONFIG)
    macro = [Event(f"m{i}", "Macro", True, 0.9, T0 + i) for i in range(0, 100, 5)]
    energy = [Event(f"e{i}", "Energy | Oil", False, 0.1, T0 + i) for i in range(0, 100, 5)]
    assert {observe(monitor, event) for event in macro + energy} == {Outcome.APPLIED}
    snaps = by_key(monitor.snapshot(T0 + 99))
    assert snaps[("Macro", "2m")].volume == snaps[("Energy | Oil", "2m")].volume == 20
    # Within a topic, lateness still holds.
    assert observe(monitor, Event("old", "Energy | Oil", True, 0.9, T0 + 95 - 30.1)) is Outcome.LATE
    assert monitor.topic_watermark("Energy | Oil") == T0 + 95 - 30
    assert monitor.topic_watermark("IPO") is None
    # Older than every window (2 min + lateness behind the stream's latest event time): late for any topic.
    observe(monitor, Event("new", "Macro", True, 0.9, T0 + 400))
    assert observe(monitor, Event("ancient", "IPO", True, 0.9, T0 + 400 - 120 - 30 - 10.1)) is Outcome.LATE
    assert observe(monitor, Event("recent", "IPO", True, 0.9, T0 + 400 - 120)) is Outcome.APPLIED


def test_topic_watermarks_survive_a_checkpoint() -> None:
    monitor = Monitor(CONFIG)
    observe(monitor, Event("a", "Macro", True, 0.9, T0 + 100))
    observe(monitor, Event("b", "IPO", True, 0.9, T0 + 10))
    restored = Monitor.from_state(monitor.to_state(), CONFIG)
    assert observe(restored, Event("late", "Macro", True, 0.9, T0 + 60)) is Outcome.LATE
    assert observe(restored, Event("ok", "IPO", True, 0.9, T0 + 60)) is Outcome.APPLIED
    older = monitor.to_state()
    del older["topic_max_event_time"]  # a checkpoint written before lateness was per topic
    assert observe(Monitor.from_state(older, CONFIG), Event("c", "Macro", True, 0.9, T0)) is Outcome.APPLIED


def test_future_event_time_is_clamped_to_the_latest_event_time() -> None:
    monitor = Monitor(CONFIG)
    observation = monitor.observe("f", "Macro", "negative", 0.9, T0 + 10_000, "h", now=T0)
    assert observation.clamped and observation.event_time == T0  # no event time yet: processing time
    assert monitor.counters.clamped_future == 1
    # Up to future_skew ahead (half the lateness by default) is a clock difference, kept as stamped.
    assert not monitor.observe("g", "Macro", "negative", 0.9, T0 + 10, "h", now=T0).clamped
    assert monitor.max_event_time == T0 + 10
    later = monitor.observe("h", "Macro", "negative", 0.9, T0 + 10_000, "h", now=T0 + 5)
    assert later.clamped and later.event_time == T0 + 10
    assert monitor.max_event_time == T0 + 10 and monitor.counters.clamped_future == 2
    assert by_key(monitor.snapshot(T0 + 10))[("Macro", "1m")].volume == 3


def test_topics_outside_the_known_set_are_counted_as_other() -> None:
    monitor = Monitor(MonitorConfig(horizons=(60,), topics=("Macro", "IPO")))
    assert monitor.observe("a", "Crypto", "negative", 0.9, T0, "h").topic == OTHER_TOPIC
    assert monitor.observe("b", "Macro", "neutral", 0.1, T0, "h").topic == "Macro"
    assert monitor.topics() == ["IPO", "Macro", OTHER_TOPIC]
    assert len(monitor.snapshot(T0)) == 3

    capped = Monitor(MonitorConfig(horizons=(60,), max_topics=2))
    labels = [capped.observe(f"c{i}", f"topic{i}", "neutral", 0.1, T0, "h").topic for i in range(4)]
    assert labels == ["topic0", "topic1", OTHER_TOPIC, OTHER_TOPIC]


def test_headlines_are_truncated_and_ranked_by_p_negative() -> None:
    monitor = Monitor(MonitorConfig(horizons=(60,), top_k=2, headline_max_chars=5))
    for i, p in enumerate([0.2, 0.9, 0.5, 0.95]):
        monitor.observe(f"h{i}", "Macro", "negative", p, T0 + i, "x" * 50)
    (snap,) = monitor.snapshot(T0 + 5)
    assert [(h.id, h.p_negative, h.text) for h in snap.headlines] == [
        ("h3", 0.95, "xxxxx"),
        ("h1", 0.9, "xxxxx"),
    ]


@pytest.mark.parametrize(
    ("field", "args"),
    [
        ("sentiment", ("a", "Macro", "bearish-ish", 0.5, T0, "h")),
        ("p_negative", ("a", "Macro", "negative", 1.5, T0, "h")),
        ("p_negative", ("a", "Macro", "negative", math.nan, T0, "h")),
        ("event_time", ("a", "Macro", "negative", 0.5, math.inf, "h")),
        ("message id", ("", "Macro", "negative", 0.5, T0, "h")),
    ],
)
def test_malformed_fields_are_rejected(field: str, args: tuple[str, str, str, float, float, str]) -> None:
    with pytest.raises(ValueError, match=field):
        Monitor(CONFIG).observe(*args)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 200, allow_nan=False), st.booleans()), min_size=1, max_size=60))
def test_baseline_learns_every_closed_window_and_nothing_else(gaps: list[tuple[float, bool]]) -> None:
    # Gaps up to 200 s exceed the reference window, so bursts are separated by silences.
    config = MonitorConfig(
        horizons=(60, 120),
        bucket_seconds=10,
        allowed_lateness=30.0,
        baseline_half_life=300.0,
        baseline_min_samples=1,
        baseline_clip_z=None,
        min_volume=2,
    )
    monitor = Monitor(config)
    t, times, negatives = T0, [], []
    for i, (gap, negative) in enumerate(gaps):
        t += gap
        observe(monitor, Event(f"b{i}", "Macro", negative, 0.5, t))
        times.append(t)
        negatives.append(negative)
    # Direct computation: every bucket j closed by the final watermark samples buckets j-5..j.
    closed = math.floor((t - config.allowed_lateness) / 10) - 1
    samples = []
    for j in range(math.floor(T0 / 10), closed + 1):
        inside = [n for s, n in zip(times, negatives, strict=True) if j - 5 <= math.floor(s / 10) <= j]
        if len(inside) >= config.min_volume:
            samples.append((sum(inside) / len(inside), (j + 1) * 10.0, len(inside)))
    saved = monitor.to_state()["baselines"]["Macro"]["rates"]
    assert saved["count"] == len(samples)
    if samples:
        latest = samples[-1][1]
        weights = [v * 2 ** (-(latest - at) / 300.0) for _, at, v in samples]
        mean = sum(r * w for (r, _, _), w in zip(samples, weights, strict=True)) / sum(weights)
        assert saved["mean"] == pytest.approx(mean, abs=1e-9)


def test_a_far_future_event_in_a_backlog_does_not_make_the_backlog_late() -> None:
    monitor = Monitor(CONFIG)
    wall = T0 + 3600  # processing time: the monitor catches up on an hour of backlog
    outcomes = []
    for i in range(3600):
        if i == 600:  # one record with a typo'd published_at (2099)
            bad = monitor.observe("bad", "Macro", "negative", 0.9, 4_080_000_000.0, "typo", now=wall)
            assert bad.clamped and bad.outcome is Outcome.APPLIED
            assert bad.event_time == T0 + 599  # counted at the stream's latest event time
            assert monitor.max_event_time == T0 + 599
        outcomes.append(monitor.observe(f"m{i}", "Macro", "neutral", 0.1, T0 + i, "h", now=wall).outcome)
    assert set(outcomes) == {Outcome.APPLIED}
    assert monitor.counters.clamped_future == 1


def test_a_far_future_first_event_does_not_set_the_watermark() -> None:
    monitor = Monitor(CONFIG)
    wall = T0 + 3600
    first = monitor.observe("bad", "Macro", "negative", 0.9, 4_080_000_000.0, "typo", now=wall)
    assert first.clamped and first.outcome is Outcome.APPLIED and first.event_time == wall
    assert monitor.max_event_time is None and monitor.watermark is None
    outcomes = [
        monitor.observe(f"m{i}", "Macro", "neutral", 0.1, T0 + i, "h", now=wall).outcome for i in range(60)
    ]
    assert set(outcomes) == {Outcome.APPLIED}
    assert monitor.max_event_time == T0 + 59


@settings(max_examples=200, deadline=None)
@given(ahead=st.floats(0, 1e7), delay=st.floats(0, CONFIG.allowed_lateness - CONFIG.future_skew))
def test_no_event_stamped_ahead_makes_live_events_late(ahead: float, delay: float) -> None:
    """A producer with a fast clock must not cost the others' messages (the watermark stays behind now)."""
    monitor = Monitor(CONFIG)
    now = T0 + 1000
    monitor.observe("live0", "Macro", "neutral", 0.1, now - 5, "h", now=now)
    monitor.observe("fast", "Macro", "negative", 0.9, now + ahead, "h", now=now)
    late_but_live = monitor.observe("live1", "Macro", "neutral", 0.1, now - delay, "h", now=now)
    assert late_but_live.outcome is Outcome.APPLIED


def test_a_future_skew_beyond_the_lateness_is_refused() -> None:
    with pytest.raises(ValueError, match="max_future_skew"):
        MonitorConfig(allowed_lateness=120.0, max_future_skew=300.0)
    assert MonitorConfig(allowed_lateness=120.0).future_skew == 60.0
