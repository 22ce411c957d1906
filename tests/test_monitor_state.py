"""Checkpointing: state round trips, restores that resume rather than reset, atomic checkpoint files."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import Monitor, MonitorConfig, Outcome, load_checkpoint, save_checkpoint
from tests.state_compare import comparable_state

CONFIG = MonitorConfig(
    horizons=(60, 120),
    bucket_seconds=10,
    allowed_lateness=30.0,
    baseline_min_samples=2,
    min_volume=2,
    top_k=2,
)
T0 = 1_700_000_000.0

events = st.lists(
    st.tuples(
        st.integers(0, 40),  # id: small, so replays occur
        st.sampled_from(["Macro", "IPO", "Dividend"]),
        st.sampled_from(["negative", "neutral", "positive"]),
        st.integers(0, 1000),  # p_negative in thousandths
        st.floats(0, 400, allow_nan=False),  # event time offset: some arrive late
    ),
    max_size=60,
)


def feed(monitor: Monitor, rows: list[tuple[int, str, str, int, float]]) -> list[Outcome]:
    return [
        monitor.observe(f"id{i}", topic, sentiment, p / 1000, T0 + dt, f"text {i}").outcome
        for i, topic, sentiment, p, dt in rows
    ]


@settings(max_examples=80, deadline=None)
@given(events, events)
def test_state_round_trips_through_json_and_resumes_identically(
    before: list[tuple[int, str, str, int, float]], after: list[tuple[int, str, str, int, float]]
) -> None:
    original = Monitor(CONFIG)
    feed(original, before)
    state = original.to_state()
    restored = Monitor.from_state(json.loads(json.dumps(state, allow_nan=False)), CONFIG)
    assert comparable_state(restored.to_state()) == comparable_state(state)
    assert restored.watermark == original.watermark
    now = T0 + 400
    assert restored.snapshot(now) == original.snapshot(now)
    # Same future: same outcomes and the same state.
    assert feed(restored, after) == feed(original, after)
    assert comparable_state(restored.to_state()) == comparable_state(original.to_state())


def test_restore_keeps_baselines_and_treats_replays_as_duplicates(tmp_path: Path) -> None:
    config = MonitorConfig(
        horizons=(60,), bucket_seconds=10, allowed_lateness=0, min_volume=5, baseline_min_samples=3
    )
    monitor = Monitor(config)
    rows = [(f"m{i}", "Macro", "negative" if i % 4 == 0 else "neutral", 0.3, T0 + i) for i in range(300)]
    for message_id, topic, sentiment, p, t in rows:
        monitor.observe(message_id, topic, sentiment, p, t, "h")
    before = monitor.snapshot(T0 + 300)
    assert before[0].baseline_mean == pytest.approx(0.25, abs=0.02)

    path = tmp_path / "monitor.json"
    save_checkpoint(path, monitor.to_state())
    state = load_checkpoint(path)
    assert state is not None
    resumed = Monitor.from_state(state, config)
    assert resumed.snapshot(T0 + 300) == before
    # An at-least-once replay of the last minute after the restart changes nothing.
    outcomes = [resumed.observe(m, tp, s, p, t, "h").outcome for m, tp, s, p, t in rows[-60:]]
    assert set(outcomes) == {Outcome.DUPLICATE}
    assert resumed.snapshot(T0 + 300) == before


def test_a_new_bucket_width_drops_windows_but_keeps_baselines_and_ids() -> None:
    monitor = Monitor(CONFIG)
    for i in range(100):
        monitor.observe(f"m{i}", "Macro", "negative" if i % 2 else "neutral", 0.5, T0 + 3 * i, "h")
    wider = MonitorConfig(horizons=(60, 120), bucket_seconds=20, baseline_min_samples=2, min_volume=2)
    restored = Monitor.from_state(monitor.to_state(), wider)
    (one, two) = restored.snapshot(T0 + 300)
    assert one.volume == two.volume == 0
    assert one.baseline_mean == monitor.snapshot(T0 + 300)[0].baseline_mean
    assert restored.observe("m99", "Macro", "neutral", 0.5, T0 + 297, "h").outcome is Outcome.DUPLICATE


def test_an_unknown_state_version_is_refused() -> None:
    state = Monitor(CONFIG).to_state()
    state["version"] = 99
    with pytest.raises(ValueError, match="version"):
        Monitor.from_state(state, CONFIG)


def test_checkpoint_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "state" / "monitor.json"
    assert load_checkpoint(path) is None
    save_checkpoint(path, {"a": 1})
    save_checkpoint(path, {"a": 2})
    assert load_checkpoint(path) == {"a": 2}
    # A state that cannot be written leaves the previous checkpoint and no temporary file behind.
    with pytest.raises(ValueError):
        save_checkpoint(path, {"a": float("nan")})
    assert load_checkpoint(path) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["monitor.json"]


def test_a_corrupt_checkpoint_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    path.write_text('{"truncated": ')
    with pytest.raises(ValueError, match=r"monitor\.json"):
        load_checkpoint(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_checkpoint(path)
