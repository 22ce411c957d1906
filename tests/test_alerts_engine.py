"""Alert lifecycle: pending/firing/resolved with for, repeat and cooldown; evidence; fingerprints; restarts."""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts import AlertEngine, AlertEvent, Rule, fingerprint
from monitor import Headline, WindowSnapshot


def snap(
    topic: str = "Fed | Central Banks",
    *,
    rate: float | None = 0.6,
    volume: int = 50,
    surge: float | None = 4.0,
    window: str = "5m",
    end: float = 0.0,
) -> WindowSnapshot:
    headlines = (
        Headline(0.97, "m-1", "Fed signals emergency hike", end - 10),
        Headline(0.91, "m-2", "Markets slide on Fed fears", end - 20),
    )
    return WindowSnapshot(
        topic=topic,
        window=window,
        window_seconds=300,
        end=end,
        volume=volume,
        negative=round((rate or 0.0) * volume),
        rate=rate,
        expected_rate=None if rate is None else rate - 0.05,
        baseline_mean=0.2,
        baseline_std=0.05,
        surge=surge,
        headlines=headlines,
    )


HOT_RATE, COLD_RATE = 0.6, 0.1


def rule(**overrides: object) -> Rule:
    settings_: dict[str, object] = {"name": "neg", "rate_above": 0.5, "min_volume": 10}
    settings_.update(overrides)
    return Rule(**settings_)  # type: ignore[arg-type]


def run(
    engine: AlertEngine, steps: list[tuple[float, bool]], topic: str = "Fed | Central Banks"
) -> list[AlertEvent]:
    events: list[AlertEvent] = []
    for now, hot in steps:
        events += engine.evaluate([snap(topic, end=now, rate=HOT_RATE if hot else COLD_RATE)], now)
    return events


def test_condition_must_hold_for_the_for_duration_before_firing() -> None:
    engine = AlertEngine([rule(for_seconds=60)])
    assert engine.evaluate([snap(end=0)], 0) == []
    assert [(a.state, a.since) for a in engine.active()] == [("pending", 0)]
    assert engine.evaluate([snap(end=30)], 30) == []
    (event,) = engine.evaluate([snap(end=60)], 60)
    assert (event.status, event.starts_at, event.ends_at) == ("firing", 60, None)
    assert [(a.state, a.since) for a in engine.active()] == [("firing", 60)]


def test_pending_that_breaks_resets_the_for_clock() -> None:
    engine = AlertEngine([rule(for_seconds=60)])
    assert run(engine, [(0, True), (30, False), (60, True), (90, True)]) == []
    assert [e.status for e in run(engine, [(120, True)])] == ["firing"]


def test_zero_for_fires_at_once_and_resolve_carries_times_and_evidence() -> None:
    engine = AlertEngine([rule()])
    (firing,) = run(engine, [(100, True)])
    assert firing.status == "firing"
    (resolved,) = run(engine, [(400, False)])
    assert (resolved.status, resolved.starts_at, resolved.ends_at) == ("resolved", 100, 400)
    assert resolved.fingerprint == firing.fingerprint
    assert resolved.notification_key != firing.notification_key
    assert resolved.evidence.rate == 0.1
    assert engine.active() == []


def test_pending_that_breaks_emits_nothing() -> None:
    engine = AlertEngine([rule(for_seconds=300)])
    assert run(engine, [(0, True), (100, False)]) == []
    assert engine.active() == []


def test_repeat_interval_renotifies_while_firing_with_distinct_keys() -> None:
    engine = AlertEngine([rule(repeat_interval=600)])
    events = run(engine, [(0, True), (300, True), (600, True), (900, True), (1200, True)])
    assert [(e.status, e.repeat) for e in events] == [("firing", 0), ("firing", 1), ("firing", 2)]
    assert len({e.notification_key for e in events}) == 3
    assert {e.starts_at for e in events} == {0}


def test_cooldown_blocks_refiring_until_it_has_passed() -> None:
    engine = AlertEngine([rule(cooldown=600)])
    assert [e.status for e in run(engine, [(0, True), (100, False)])] == ["firing", "resolved"]
    assert run(engine, [(200, True), (500, True)]) == []
    assert [a.state for a in engine.active()] == ["pending"]
    (again,) = run(engine, [(700, True)])
    assert (again.status, again.starts_at) == ("firing", 700)


def test_low_volume_resolves_a_firing_alert() -> None:
    engine = AlertEngine([rule(min_volume=20)])
    run(engine, [(0, True)])
    (event,) = engine.evaluate([snap(rate=0.9, volume=5, end=60)], 60)
    assert event.status == "resolved"


def test_rate_and_surge_combine_with_all_or_any() -> None:
    both = rule(name="both", surge_above=3.0, require="all")
    either = rule(name="either", surge_above=3.0, require="any")
    engine = AlertEngine([both, either])
    events = engine.evaluate([snap(rate=0.6, surge=1.0)], 0)
    assert [e.rule for e in events] == ["either"]
    events = engine.evaluate([snap(rate=0.6, surge=None)], 1)
    assert events == []  # "either" still holds via the rate, "both" still lacks a surge
    assert [e.rule for e in engine.evaluate([snap(rate=0.6, surge=5.0)], 2)] == ["both"]


def test_only_matching_topics_and_windows_are_evaluated() -> None:
    engine = AlertEngine([rule(topics=("Energy | Oil",), window="15m")])
    assert (
        engine.evaluate([snap("Energy | Oil", window="5m"), snap("Fed | Central Banks", window="15m")], 0)
        == []
    )
    (event,) = engine.evaluate([snap("Energy | Oil", window="15m")], 0)
    assert event.topic == "Energy | Oil"


def test_topics_missing_from_the_snapshots_keep_their_state() -> None:
    engine = AlertEngine([rule()])
    run(engine, [(0, True)], topic="A")
    assert run(engine, [(60, False)], topic="B") == []
    assert [(a.topic, a.state) for a in engine.active()] == [("A", "firing")]


def test_event_labels_annotations_and_evidence() -> None:
    custom = rule(
        severity="critical",
        labels={"team": "rates"},
        annotations={"runbook": "https://runbooks/{rule}", "summary": "{topic} at {rate}"},
    )
    (event,) = AlertEngine([custom]).evaluate([snap(end=10)], 10)
    assert event.labels == {
        "alertname": "neg",
        "news_topic": "Fed | Central Banks",
        "severity": "critical",
        "team": "rates",
    }
    assert event.annotations["summary"] == "Fed | Central Banks at 60.0%"
    assert event.annotations["runbook"] == "https://runbooks/neg"
    assert "60.0%" in event.annotations["description"] and "50 messages" in event.annotations["description"]
    assert event.annotations["baseline"] == "20.0%" and event.annotations["volume"] == "50"
    assert "[m-1] Fed signals emergency hike" in event.annotations["headlines"]
    evidence = event.evidence
    assert (evidence.window, evidence.rate, evidence.baseline_mean, evidence.volume) == ("5m", 0.6, 0.2, 50)
    assert evidence.headlines[0] == {
        "id": "m-1",
        "headline": "Fed signals emergency hike",
        "p_negative": 0.97,
    }


def test_event_round_trips_through_json() -> None:
    (event,) = AlertEngine([rule()]).evaluate([snap(end=10)], 10)
    assert AlertEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event


def test_state_restore_does_not_refire_and_keeps_cooldown() -> None:
    rules = [rule(cooldown=600, repeat_interval=3600)]
    engine = AlertEngine(rules)
    run(engine, [(0, True)])
    restored = AlertEngine(rules, state=json.loads(json.dumps(engine.to_state())))
    assert run(restored, [(60, True)]) == []
    assert [e.status for e in run(restored, [(120, False)])] == ["resolved"]
    after_resolve = AlertEngine(rules, state=restored.to_state())
    assert run(after_resolve, [(300, True)]) == []  # cooldown survived the restart


def test_state_of_removed_rules_is_dropped() -> None:
    engine = AlertEngine([rule()])
    run(engine, [(0, True)])
    other = AlertEngine([rule(name="other")], state=engine.to_state())
    assert other.active() == []


def test_fingerprint_is_stable_across_processes() -> None:
    code = "from alerts import fingerprint; print(fingerprint('fed-surge', 'Fed | Central Banks'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == fingerprint("fed-surge", "Fed | Central Banks")
    assert (
        fingerprint("fed-surge", "Fed | Central Banks") == "b03165d32a7383f0"
    )  # golden: changing it re-fires every alert


@given(st.text(), st.text(), st.text(), st.text())
def test_fingerprints_are_16_hex_and_distinguish_pairs(r1: str, t1: str, r2: str, t2: str) -> None:
    a, b = fingerprint(r1, t1), fingerprint(r2, t2)
    assert len(a) == 16 and int(a, 16) >= 0
    assert (a == b) == ((r1, t1) == (r2, t2))


@settings(max_examples=150, deadline=None)
@given(
    conditions=st.lists(st.tuples(st.integers(1, 400), st.booleans()), min_size=1, max_size=40),
    for_seconds=st.sampled_from([0.0, 60.0, 300.0]),
    repeat=st.sampled_from([120.0, 600.0]),
    cooldown=st.sampled_from([0.0, 200.0]),
)
def test_lifecycle_invariants(
    conditions: list[tuple[int, bool]], for_seconds: float, repeat: float, cooldown: float
) -> None:
    engine = AlertEngine([rule(for_seconds=for_seconds, repeat_interval=repeat, cooldown=cooldown)])
    now = 0.0
    held_since: float | None = None
    firing_since: float | None = None
    last_notice = -1e9
    last_resolve: float | None = None
    keys: set[str] = set()
    for step, hot in conditions:
        now += step
        events = run(engine, [(now, hot)])
        held_since = (held_since if held_since is not None else now) if hot else None
        assert len(events) <= 1
        for event in events:
            assert event.notification_key not in keys
            keys.add(event.notification_key)
            if event.status == "firing" and event.repeat == 0:
                # never two firings without a resolve in between; for-duration and cooldown respected
                assert firing_since is None and hot and held_since is not None
                assert now - held_since >= for_seconds
                assert last_resolve is None or now - last_resolve >= cooldown
                firing_since = last_notice = now
            elif event.status == "firing":
                assert firing_since is not None and now - last_notice >= repeat
                last_notice = now
            else:
                assert firing_since is not None and not hot and event.starts_at == firing_since
                firing_since, last_resolve = None, now
        if not events:
            # silence means nothing happened that should have been announced
            if firing_since is not None:
                assert hot and now - last_notice < repeat
            elif hot:
                assert held_since is not None
                cooling = last_resolve is not None and now - last_resolve < cooldown
                assert now - held_since < for_seconds or cooling
        states = [a.state for a in engine.active()]
        assert states == (["firing"] if firing_since is not None else ["pending"] if hot else [])
        engine = AlertEngine(engine.rules, state=json.loads(json.dumps(engine.to_state())))


def test_a_clock_going_back_changes_nothing() -> None:
    rules = [rule()]
    engine = AlertEngine(rules)
    run(engine, [(1000, True)])
    replayed = AlertEngine(rules, state=engine.to_state())
    assert run(replayed, [(900, False), (950, True)]) == []
    (resolved,) = run(replayed, [(1010, False)])
    assert resolved.ends_at is not None and resolved.ends_at >= resolved.starts_at


# --- replays after a crash, and rules that changed while an alert fired ------------------------------


def test_replayed_records_do_not_fire_a_resolved_alert_again() -> None:
    # cooldown 0 deletes the track on resolve, so only a per-topic mark remembers how far we got
    rules = [rule()]
    engine = AlertEngine(rules)
    assert [e.status for e in run(engine, [(100, True), (105, True), (110, False)])] == ["firing", "resolved"]
    restarted = AlertEngine(rules, state=json.loads(json.dumps(engine.to_state())))
    assert run(restarted, [(105, True), (110, False)]) == []  # Kafka redelivers what was not committed
    assert run(restarted, [(110, True)]) == []  # a record at the mark itself was evaluated already
    (again,) = run(restarted, [(115, True)])
    assert (again.status, again.starts_at) == ("firing", 115)


def test_the_replay_mark_is_per_topic() -> None:
    engine = AlertEngine([rule()])
    run(engine, [(100, False)], topic="A")
    (event,) = run(engine, [(50, True)], topic="B")  # B was never evaluated: its clock is its own
    assert event.topic == "B"


def test_state_saved_before_the_replay_mark_existed_still_loads() -> None:
    engine = AlertEngine([rule()])
    run(engine, [(100, True)])
    old = engine.to_state()
    del old["evaluated"]
    restored = AlertEngine([rule()], state=old)
    assert [a.state for a in restored.active()] == ["firing"]
    assert [e.status for e in run(restored, [(110, False)])] == ["resolved"]


def firing_engine() -> tuple[list[Rule], AlertEngine, AlertEvent]:
    rules = [rule(topics=("Energy | Oil",), labels={"team": "oil"}, severity="critical")]
    engine = AlertEngine(rules)
    (firing,) = run(engine, [(100, True)], topic="Energy | Oil")
    return rules, engine, firing


def test_narrowing_a_rules_topics_resolves_its_firing_alert() -> None:
    _, engine, firing = firing_engine()
    narrowed = [rule(topics=("Macro",), labels={"team": "oil"}, severity="critical")]
    restarted = AlertEngine(narrowed, state=json.loads(json.dumps(engine.to_state())))
    assert restarted.active() == []  # finsent_alerts_active is right at once
    (resolved,) = restarted.evaluate([snap("Macro", end=130, rate=COLD_RATE)], 130)
    assert (resolved.status, resolved.fingerprint, resolved.starts_at) == (
        "resolved",
        firing.fingerprint,
        100,
    )
    assert resolved.ends_at == 130 and resolved.labels == firing.labels and resolved.severity == "critical"
    assert resolved.notification_key == f"{firing.fingerprint}:resolved:100000"
    assert restarted.to_state()["alerts"] == {}
    assert restarted.evaluate([snap("Macro", end=140, rate=COLD_RATE)], 140) == []  # resolved once


def test_editing_a_rules_severity_or_labels_keeps_them_on_its_firing_alert() -> None:
    """A repeat and the resolve carry what the alert fired with: the resolve must match the alert
    Alertmanager holds, and reach the subscriptions the firing reached (a critical-only pager)."""
    _, engine, firing = firing_engine()
    edited = [rule(topics=("Energy | Oil",), labels={"team": "desk"}, severity="warning", repeat_interval=60)]
    restarted = AlertEngine(edited, state=json.loads(json.dumps(engine.to_state())))
    (repeat,) = run(restarted, [(170, True)], topic="Energy | Oil")
    (resolved,) = run(restarted, [(180, False)], topic="Energy | Oil")
    for event in (repeat, resolved):
        assert event.labels == firing.labels and event.labels["team"] == "oil"
        assert event.severity == "critical"
    assert (repeat.status, resolved.status) == ("firing", "resolved")
    (refired,) = run(restarted, [(400, True)], topic="Energy | Oil")
    assert refired.severity == "warning" and refired.labels["team"] == "desk", "a new firing takes the edit"


def test_removing_a_rule_resolves_its_firing_alert_like_narrowing_it() -> None:
    _, engine, firing = firing_engine()
    restarted = AlertEngine([rule(name="other")], state=json.loads(json.dumps(engine.to_state())))
    assert restarted.active() == []
    (resolved,) = restarted.evaluate([], 130)
    assert (resolved.status, resolved.rule, resolved.topic) == ("resolved", "neg", "Energy | Oil")
    assert resolved.labels == firing.labels and resolved.severity == "critical"
    assert resolved.notification_key == f"{firing.fingerprint}:resolved:100000"
    assert restarted.evaluate([], 140) == []


def test_a_retired_alert_still_resolves_after_another_restart() -> None:
    _, engine, firing = firing_engine()
    first = AlertEngine([], state=engine.to_state())
    second = AlertEngine([], state=json.loads(json.dumps(first.to_state())))  # restarted before any record
    (resolved,) = second.evaluate([], 90)  # a replayed tick: the resolve never predates the last notice
    assert (resolved.fingerprint, resolved.ends_at) == (firing.fingerprint, 100)


def test_a_pending_alert_of_a_removed_rule_is_dropped_silently() -> None:
    engine = AlertEngine([rule(for_seconds=600)])
    run(engine, [(100, True)])
    restarted = AlertEngine([rule(name="other")], state=engine.to_state())
    assert restarted.active() == [] and restarted.evaluate([], 200) == []


def test_a_template_that_fails_at_run_time_is_sent_unformatted_and_the_alert_lives_on() -> None:
    """Checked at load; should one slip through, the alert must still notify, repeat and resolve."""
    bad = rule(annotations={"note": "ok"}, repeat_interval=60.0)
    object.__setattr__(bad, "annotations", {"note": "{rate:{severity}}"})  # past the loader's check
    engine = AlertEngine([bad])
    (fired,) = engine.evaluate([snap(end=0.0)], 0.0)
    assert fired.status == "firing" and fired.annotations["note"] == "{rate:{severity}}"
    (repeat,) = engine.evaluate([snap(end=61.0)], 61.0)
    (resolved,) = engine.evaluate([snap(end=62.0, rate=0.1)], 62.0)
    assert (repeat.status, resolved.status) == ("firing", "resolved")


def test_an_active_alert_shows_the_severity_it_fired_with_after_the_rule_is_edited() -> None:
    engine = AlertEngine([rule(severity="critical")])
    engine.evaluate([snap(end=0.0)], 0.0)
    edited = AlertEngine([rule(severity="info")], state=engine.to_state())
    (active,) = edited.active()
    assert (active.state, active.severity) == ("firing", "critical")  # as its repeats and resolve say
