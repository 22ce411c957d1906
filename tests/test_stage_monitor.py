"""Pure logic of the monitor and alerts stages: clock, record parsing, snapshot round trip, checkpoints."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.partitioner.default import murmur2
from prometheus_client import CollectorRegistry

from finsent.alerts_stage import AlertsStage, load_alert_files, parse_windows_record
from finsent.config import ServiceConfig, load_config
from finsent.errors import UsageError
from finsent.monitor_stage import MonitorClock, MonitorStage
from finsent.scored_records import event_time_of, parse_scored
from finsent.windows_sink import windows_records
from model import TOPIC_LABELS
from monitor import Headline, Monitor, MonitorConfig, WindowSnapshot


class FakeWall:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_clock_follows_event_time_then_elapsed_time() -> None:
    elapsed = FakeWall()  # the monotonic clock
    clock = MonitorClock(monotonic=elapsed)
    assert clock.now() is None
    clock.advance(500.0)  # a historical replay: event time far behind the wall
    assert clock.now() == 500.0
    elapsed.now += 7
    assert clock.now() == 507.0  # idle: moves with elapsed time
    clock.advance(503.0)  # an older event does not move it back
    assert clock.now() == 507.0
    clock.advance(600.0)
    assert clock.now() == 600.0


def test_a_wall_clock_step_does_not_move_the_monitor_clock(tmp_path: Path) -> None:
    wall, elapsed = FakeWall(1_767_225_660.0), FakeWall()
    stage = MonitorStage(
        stage_config(tmp_path), CollectorRegistry(), sink=ListSink(), wall=wall, monotonic=elapsed
    )
    handle_first_minute_of_2026(stage)
    before = stage.clock.now()
    assert before == 1_767_225_659.0
    wall.now += 86_400  # bad NTP or a resumed VM: the wall clock steps a day ahead ...
    assert stage.clock.now() == before
    assert volume(stage.evaluate(), "Energy | Oil", "1m") == 60
    wall.now -= 86_400 - 5  # ... and is corrected 5 s later
    elapsed.now += 5
    assert stage.clock.now() == before + 5


def test_a_checkpointed_clock_ahead_of_the_wall_is_capped_on_restore(tmp_path: Path) -> None:
    config = stage_config(tmp_path)
    wall, elapsed = FakeWall(1_767_225_659.0), FakeWall()
    stage = MonitorStage(config, CollectorRegistry(), sink=ListSink(), wall=wall, monotonic=elapsed)
    handle_first_minute_of_2026(stage)
    stage.checkpoint()
    path = tmp_path / "state" / "monitor.json"
    state = json.loads(path.read_text())
    state["stage_clock"] += 86_400  # saved while the wall clock was a day ahead
    path.write_text(json.dumps(state))
    restored = MonitorStage(config, CollectorRegistry(), sink=ListSink(), wall=wall, monotonic=elapsed)
    now = restored.clock.now()
    assert now == wall.now
    assert volume(restored.evaluate(), "Energy | Oil", "1m") == 60


def test_an_idle_stage_saves_only_its_clock_and_a_restart_keeps_the_idle_time(tmp_path: Path) -> None:
    config = stage_config(tmp_path, checkpoint_interval="10")
    wall, elapsed = FakeWall(1_767_225_700.0), FakeWall()
    stage = MonitorStage(config, CollectorRegistry(), sink=ListSink(), wall=wall, monotonic=elapsed)
    handle_first_minute_of_2026(stage)
    elapsed.now += 10
    stage.tick()  # new records: the whole state is saved
    state_file = tmp_path / "state" / "monitor.json"
    saved = state_file.read_bytes()
    assert stage.checkpoints._value.get() == 1
    for _ in range(30):  # five idle minutes
        wall.now += 10
        elapsed.now += 10
        stage.tick()
    # Idle, only the clock moved: monitor.json (tens of MB with a full dedupe memory) is not rewritten.
    assert state_file.read_bytes() == saved and stage.checkpoints._value.get() == 1
    idle_clock = stage.clock.now()
    assert idle_clock is not None and idle_clock >= 1_767_225_659.0 + 300
    restored = MonitorStage(config, CollectorRegistry(), sink=ListSink(), wall=wall, monotonic=elapsed)
    assert restored.clock.now() == idle_clock
    assert volume(restored.evaluate(), "Energy | Oil", "1m") == 0  # the idle time expired the window


def test_a_damaged_idle_clock_file_only_loses_the_idle_time(tmp_path: Path) -> None:
    config = stage_config(tmp_path)
    wall, elapsed = FakeWall(1_767_225_700.0), FakeWall()
    stage = MonitorStage(config, CollectorRegistry(), sink=ListSink(), wall=wall, monotonic=elapsed)
    handle_first_minute_of_2026(stage)
    stage.checkpoint()
    (tmp_path / "state" / "monitor.clock.json").write_text("{not json")
    restored = MonitorStage(config, CollectorRegistry(), sink=ListSink(), wall=wall, monotonic=elapsed)
    assert restored.clock.now() == stage.clock.now()
    assert volume(restored.evaluate(), "Energy | Oil", "1m") == 60


def test_event_time_prefers_published_at_then_kafka_timestamp() -> None:
    assert event_time_of({"published_at": "2026-01-01T00:00:10Z"}, 5) == 1767225610.0
    assert event_time_of({"published_at": "2026-01-01T01:00:10+01:00"}, None) == 1767225610.0
    assert event_time_of({"published_at": None}, 2500) == 2.5
    with pytest.raises(ValueError):
        event_time_of({"published_at": "2026-01-01T00:00:10"}, None)  # no offset
    with pytest.raises(ValueError):
        event_time_of({}, None)


def handle_first_minute_of_2026(stage: MonitorStage) -> None:
    """60 negative Energy | Oil records, one a second from 2026-01-01T00:00:00Z, at offsets 0-59."""
    for index in range(60):
        stage.handle(Record(scored(id=f"e{index}", published_at=f"2026-01-01T00:00:{index:02d}Z"), index))


def scored(**overrides: object) -> bytes:
    record: dict[str, object] = {
        "id": "a",
        "headline": "Oil plunges",
        "topic": "Energy | Oil",
        "sentiment": "negative",
        "sentiment_scores": {"negative": 0.9, "neutral": 0.05, "positive": 0.05},
        "published_at": "2026-01-01T00:00:10Z",
    }
    record.update(overrides)
    return json.dumps(record).encode()


def test_parse_scored_accepts_the_contract_and_names_problems() -> None:
    fields = parse_scored(scored(), None)
    assert (fields.id, fields.topic, fields.sentiment, fields.p_negative) == (
        "a",
        "Energy | Oil",
        "negative",
        0.9,
    )
    for bad, problem in (
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (scored(id=""), "id"),
        (scored(topic=None), "topic"),
        (scored(sentiment_scores={"negative": "high"}), "sentiment_scores.negative"),
        (scored(published_at=17), "published_at"),
        (scored(published_at="2026-01-01T00:00Z"), "not RFC 3339"),
        (scored(sentiment_scores={"negative": float("nan")}), "not JSON"),  # json.dumps writes NaN
        (b"\xff", "not JSON"),
    ):
        with pytest.raises(ValueError, match=problem):
            parse_scored(bad, None)
    with pytest.raises(ValueError):
        parse_scored(None, None)


def sample_snapshot() -> WindowSnapshot:
    return WindowSnapshot(
        topic="Energy | Oil",
        window="1m",
        window_seconds=60,
        end=1234.5,
        volume=12,
        negative=9,
        rate=0.75,
        expected_rate=0.7,
        baseline_mean=None,
        baseline_std=None,
        surge=None,
        headlines=(Headline(0.93, "x1", "Oil plunges", 1230.0), Headline(0.9, "x2", "Crude sinks", 1220.0)),
    )


def test_snapshot_dict_round_trip_through_a_windows_record() -> None:
    snapshot = sample_snapshot()
    assert WindowSnapshot.from_dict(json.loads(json.dumps(snapshot.to_dict()))) == snapshot
    ((key, value),) = windows_records([snapshot], now=1234.5)
    assert key == "Energy | Oil" and value["topic"] == key
    now, snapshots = parse_windows_record(json.dumps(value).encode())
    assert now == 1234.5 and snapshots == [snapshot]
    with pytest.raises(ValueError, match="malformed"):
        parse_windows_record(b'{"now": 1, "windows": [{"topic": "t"}]}')


def test_windows_records_group_by_topic_and_drop_non_finite() -> None:
    monitor = Monitor(MonitorConfig(horizons=(60, 300), bucket_seconds=5, min_volume=1))
    monitor.observe("1", "A", "negative", 0.9, 100.0, "a")
    monitor.observe("2", "B", "positive", 0.1, 101.0, "b")
    records = windows_records(monitor.snapshot(102.0), now=102.0)
    assert [key for key, _ in records] == ["A", "B"]
    assert all(len(value["windows"]) == 2 for _, value in records)
    odd = WindowSnapshot("C", "1m", 60, 1.0, 30, 30, 1.0, 1.0, 0.0, 0.0, float("inf"), ())
    ((_, value),) = windows_records([odd], now=1.0)
    assert value["windows"][0]["surge"] is None
    json.dumps(value, allow_nan=False)


def stage_config(tmp_path: Path, **flags: str) -> ServiceConfig:
    base = {
        "state_dir": str(tmp_path / "state"),
        "windows": "1m,5m",
        "bucket_seconds": "5",
        "min_volume": "2",
        "baseline_min_samples": "2",
        "bootstrap_servers": "127.0.0.1:1",
    }
    return load_config({**base, **flags}, None, environ={})


@dataclass
class ListSink:
    """Collects window records in memory (the unit under test is the stage's logic, not Kafka)."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    flushed: int = 0

    def send(self, key: str, value: dict[str, Any]) -> None:
        self.sent.append((key, value))

    def flush(self) -> None:
        self.flushed = len(self.sent)

    def close(self) -> None:
        pass


def volume(snapshots: list[WindowSnapshot], topic: str, window: str) -> int:
    (found,) = [s.volume for s in snapshots if s.topic == topic and s.window == window]
    return found


@dataclass
class Record:
    """The fields of a consumed Kafka record the stage reads."""

    value: bytes | None
    offset: int
    topic: str = "news.scored"
    partition: int = 0
    timestamp: int | None = None


def test_checkpoint_restores_windows_baselines_dedupe_and_clock(tmp_path: Path) -> None:
    config = stage_config(tmp_path)
    wall = FakeWall(1_767_240_000.0)  # an hour after the events: none is clamped as "future"
    elapsed = FakeWall()
    stage = MonitorStage(config, CollectorRegistry(), sink=ListSink(), wall=wall, monotonic=elapsed)
    for index in range(60):
        stamp = f"2026-01-01T00:{index // 6:02d}:{(index % 6) * 10:02d}Z"
        sentiment = "negative" if index % 4 == 0 else "neutral"
        stage.handle(Record(scored(id=f"m{index}", sentiment=sentiment, published_at=stamp), index))
    stage.handle(Record(b"garbage", 60))  # counted, not fatal
    assert stage.malformed._value.get() == 1
    wall.now += 3
    elapsed.now += 3
    stage.checkpoint()
    assert (tmp_path / "state" / "monitor.json").is_file()
    now = stage.clock.now()
    assert now is not None
    before = stage.monitor.snapshot(now)

    restored = MonitorStage(config, CollectorRegistry(), sink=ListSink(), wall=wall, monotonic=elapsed)
    assert restored.clock.now() == now
    after = restored.monitor.snapshot(now)
    assert after == before
    assert any(s.baseline_mean is not None for s in after)
    # A replayed record is a duplicate for the restored monitor, not a second count.
    restored.handle(Record(scored(id="m59", published_at="2026-01-01T00:09:50Z"), 59))
    assert restored.monitor.counters.duplicate == 1


def test_bad_rules_file_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: x\n    window: 1m\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"rules\.yaml.*rate_above"):
        load_alert_files(stage_config(tmp_path, rules=str(rules)))
    rules.write_text("rules:\n  - name: x\n    window: 15m\n    rate_above: 0.5\n", encoding="utf-8")
    with pytest.raises(UsageError, match="15m"):
        load_alert_files(stage_config(tmp_path, rules=str(rules)))  # not one of the monitor's windows


def test_a_kafka_subscription_may_not_write_to_the_services_own_topics(tmp_path: Path) -> None:
    subscriptions = tmp_path / "subscriptions.yaml"
    subscriptions.write_text("subscriptions:\n  - name: k\n    kind: kafka\n    topic: wire.scored\n")
    config = stage_config(tmp_path, subscriptions=str(subscriptions), output_topic="wire.scored")
    with pytest.raises(UsageError, match=r"wire\.scored"):  # alerts would be read back as scored news
        load_alert_files(config)


def test_stage_settings_are_validated_naming_the_field(tmp_path: Path) -> None:
    config = stage_config(tmp_path, eval_interval="500ms", stage="MONITOR")
    assert config.eval_interval == 0.5 and config.stage == "monitor"
    assert config.monitor_config().horizons == (60, 300)
    for flags, name in (
        ({"stage": "score"}, "--stage"),
        ({"eval_interval": "soon"}, "--eval-interval"),
        ({"eval_interval": "0"}, "--eval-interval: must be above 0"),  # names the flag it came from
        ({"windows": "1m,7s"}, "windows"),
        ({"windows": "fortnight"}, "windows"),
        ({"windows_topic": "news.scored"}, "windows_topic"),
        ({"rules": str(tmp_path / "missing.yaml")}, "rules"),
    ):
        with pytest.raises(UsageError, match=name):
            stage_config(tmp_path, **flags)


def test_a_fast_replay_is_evaluated_every_bucket_of_event_time(tmp_path: Path) -> None:
    sink = ListSink()
    stage = MonitorStage(stage_config(tmp_path), CollectorRegistry(), sink=sink, wall=FakeWall(5e9))
    for index in range(120):  # ten minutes of event time, handled in no wall time at all
        stamp = f"2026-01-01T00:{index // 12:02d}:{(index % 12) * 5:02d}Z"
        stage.handle(Record(scored(id=f"r{index}", published_at=stamp), index))
    evaluated_at = sorted({value["now"] for _, value in sink.sent})
    assert len(evaluated_at) >= 110
    assert all(b - a <= 10 for a, b in itertools.pairwise(evaluated_at))


@pytest.mark.parametrize("where", ["first", "after ten"])
def test_records_stamped_far_ahead_neither_trigger_evaluations_nor_stop_them(
    tmp_path: Path, where: str
) -> None:
    sink = ListSink()
    wall = FakeWall(1_767_229_200.0)  # 2026-01-01T01:00Z: the replay below is an hour old, 2099 is ahead
    stage = MonitorStage(stage_config(tmp_path), CollectorRegistry(), sink=sink, wall=wall)
    evaluations: list[float | None] = []
    evaluate = stage.evaluate

    def counted() -> list[WindowSnapshot]:
        evaluations.append(stage.clock.now())
        return evaluate()

    stage.evaluate = counted  # type: ignore[method-assign]
    stamps = [f"2026-01-01T00:{index // 12:02d}:{(index % 12) * 5:02d}Z" for index in range(120)]
    future = ["2099-01-01T00:00:00Z"] * 50
    stamps = future + stamps if where == "first" else stamps[:10] + future + stamps[10:]
    for index, stamp in enumerate(stamps):
        stage.handle(Record(scored(id=f"r{index}", published_at=stamp), index))
    # One evaluation per ~10 s of the ten minutes of event time, as without the 2099 records: not one
    # per 2099 record, and none skipped after them.
    assert 100 <= len(evaluations) <= 125
    assert stage.monitor.counters.clamped_future == 50


def test_labels_no_model_emits_cannot_crowd_out_a_real_topic(tmp_path: Path) -> None:
    sink = ListSink()
    stage = MonitorStage(stage_config(tmp_path), CollectorRegistry(), sink=sink, wall=FakeWall(5e9))
    stamp = "2026-01-01T00:00:05Z"
    for index in range(100):  # another producer's labels, more than the monitor's cap of topics
        stage.handle(Record(scored(id=f"junk{index}", topic=f"Bogus {index}", published_at=stamp), index))
    stage.handle(Record(scored(id="real", published_at=stamp), 100))
    stage.handle(Record(scored(id="late", published_at="2026-01-01T00:01:30Z"), 101))  # evaluates
    volume = {value["topic"]: max(w["volume"] for w in value["windows"]) for _, value in sink.sent}
    assert not any(topic.startswith("Bogus") for topic in volume)
    assert volume["Energy | Oil"] >= 1  # the real topic keeps its own windows
    assert volume["other"] == 100


def window_record(now: float, volume: int, negative: int, offset: int) -> Record:
    snapshot = WindowSnapshot(
        "Energy | Oil", "1m", 60, now, volume, negative, negative / volume, 0.5, 0.2, 0.05, 9.0, ()
    )
    ((_, value),) = windows_records([snapshot], now)
    return Record(json.dumps(value).encode(), offset, topic="news.windows")


def transitions(registry: CollectorRegistry) -> dict[str, float]:
    return {
        status: registry.get_sample_value(
            "finsent_alert_transitions_total", {"rule": "oil", "status": status}
        )
        or 0.0
        for status in ("firing", "resolved")
    }


def test_alerts_stage_restores_its_engine_so_a_restart_does_not_fire_again(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: oil\n    window: 1m\n    rate_above: 0.6\n    min_volume: 10\n    for: 10s\n",
        encoding="utf-8",
    )
    config = stage_config(tmp_path, rules=str(rules))
    registry = CollectorRegistry()
    stage = AlertsStage(config, registry, *load_alert_files(config))
    for offset, now in enumerate((100.0, 105.0, 111.0)):
        stage.handle(window_record(now, 20, 18, offset))
    stage.handle(Record(b"{}", 3, topic="news.windows"))  # malformed: counted, skipped
    assert [(a.rule, a.state) for a in stage.engine.active()] == [("oil", "firing")]
    assert stage.malformed._value.get() == 1
    assert transitions(registry) == {"firing": 1.0, "resolved": 0.0}
    stage.dispatcher.close()

    registry = CollectorRegistry()
    restarted = AlertsStage(config, registry, *load_alert_files(config))
    assert [(a.rule, a.state) for a in restarted.engine.active()] == [("oil", "firing")]
    restarted.handle(window_record(111.0, 20, 18, 2))  # a replayed record: nothing new
    restarted.handle(window_record(130.0, 20, 2, 4))  # calm: resolves
    assert transitions(registry) == {"firing": 0.0, "resolved": 1.0}
    assert restarted.engine.active() == []
    restarted.dispatcher.close()


def saved_state(tmp_path: Path) -> dict[str, Any]:
    """A real checkpoint of a stage that has seen a few records."""
    config = stage_config(tmp_path / "source")
    stage = MonitorStage(config, CollectorRegistry(), sink=ListSink(), wall=FakeWall(1_767_225_660.0))
    for index in range(20):
        stage.handle(Record(scored(id=f"e{index}", published_at=f"2026-01-01T00:00:{index:02d}Z"), index))
    stage.checkpoint()
    state: dict[str, Any] = json.loads((config.state_dir / "monitor.json").read_text())
    return state


MALFORMED_STATES: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
    ("version only", lambda state: {"version": 1}),
    ("unknown version", lambda state: {"version": 2}),
    ("event time not a number", lambda state: {**state, "max_event_time": "soon"}),
    ("event time not finite", lambda state: {**state, "max_event_time": float("inf")}),
    ("windows not an object", lambda state: {**state, "windows": []}),
    (
        "bucket row too short",
        lambda state: {**state, "windows": {**state["windows"], "topics": {"A": [[1]]}}},
    ),
    (
        "more negative than volume",
        lambda state: {**state, "windows": {**state["windows"], "topics": {"A": [[1, 1, 5, 0, []]]}}},
    ),
    ("dedupe row malformed", lambda state: {**state, "dedupe": {"bucket_seconds": 5, "buckets": [[1]]}}),
    ("baseline empty", lambda state: {**state, "baselines": {"Macro": {}}}),
    ("baselines a list", lambda state: {**state, "baselines": [1]}),
    ("clock not a number", lambda state: {**state, "stage_clock": "tomorrow"}),
    ("clock not finite", lambda state: {**state, "stage_clock": float("nan")}),
]


@pytest.mark.parametrize("corrupt", [c for _, c in MALFORMED_STATES], ids=[n for n, _ in MALFORMED_STATES])
def test_a_malformed_checkpoint_is_one_clean_error_naming_the_file(
    tmp_path: Path, corrupt: Callable[[dict[str, Any]], object]
) -> None:
    config = stage_config(tmp_path)
    path = config.state_dir / "monitor.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(corrupt(saved_state(tmp_path))))  # Python's json writes NaN and Infinity
    with pytest.raises(RuntimeError, match=r"cannot restore the monitor: checkpoint .*monitor\.json"):
        MonitorStage(config, CollectorRegistry(), sink=ListSink())


def test_finsent_run_reports_a_malformed_checkpoint_without_a_traceback(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "monitor.json").write_text('{"version": 1}')
    stderr = monitor_stage_refused(str(state_dir))
    assert (
        f"cannot restore the monitor: checkpoint {state_dir / 'monitor.json'}: malformed monitor state"
        in stderr
    )


def monitor_stage_refused(state_dir: str) -> str:
    """Start `finsent run --stage monitor` on state_dir (no broker); require exit 2 without a traceback."""
    command = ["run", "--stage", "monitor", "--state-dir", state_dir, "--metrics-port", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "finsent", *command, "--bootstrap-servers", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return result.stderr


def partition_of(label: str, partitions: int = 3) -> int:
    """Where kafka-python's default partitioner puts a record keyed by ``label``."""
    return (int(murmur2(label.encode("utf-8"))) & 0x7FFFFFFF) % partitions


@dataclass
class FakeConsumer:
    """The consumer calls the monitor stage makes to learn which partitions of news.scored it owns."""

    assigned: set[int]
    partitions: int = 3
    topic: str = "news.scored"

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(self.topic, partition) for partition in self.assigned}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions)) if topic == self.topic else set()


def rebalance(stage: MonitorStage, consumer: FakeConsumer, partitions: set[int]) -> None:
    """A rebalance as the listener reports it (eager protocol): all revoked, then ``partitions`` assigned."""
    stage.revoked({TopicPartition(consumer.topic, p) for p in range(consumer.partitions)})
    consumer.assigned = set(partitions)
    stage.assigned({TopicPartition(consumer.topic, p) for p in partitions})


def gauge_topics(registry: CollectorRegistry) -> set[str]:
    """Topic labels with a finsent_window_messages series."""
    return {
        sample.labels["news_topic"]
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "finsent_window_messages"
    }


def test_each_of_two_instances_publishes_only_the_topics_whose_partitions_it_owns(tmp_path: Path) -> None:
    energy, macro = partition_of("Energy | Oil"), partition_of("Macro")
    assert energy != macro
    instances = []
    for name, assigned, topic in (("a", {energy}, "Energy | Oil"), ("b", {0, 1, 2} - {energy}, "Macro")):
        sink, registry = ListSink(), CollectorRegistry()
        stage = MonitorStage(
            stage_config(tmp_path / name), registry, sink=sink, wall=FakeWall(1_767_225_660.0)
        )
        stage._consumer = consumer = FakeConsumer(set())
        rebalance(stage, consumer, assigned)
        for index in range(30):
            stamp = f"2026-01-01T00:00:{index:02d}Z"
            stage.handle(Record(scored(id=f"{name}{index}", topic=topic, published_at=stamp), index))
        stage.evaluate()
        instances.append(({key for key, _ in sink.sent}, gauge_topics(registry)))
    (a_sent, a_gauges), (b_sent, b_gauges) = instances
    assert "Energy | Oil" in a_sent and "Macro" in b_sent
    assert a_sent.isdisjoint(b_sent)  # one instance per topic: alerts never see a competing volume 0
    assert a_sent | b_sent == set(TOPIC_LABELS)
    assert a_sent == {label for label in TOPIC_LABELS if partition_of(label) == energy}
    assert (a_gauges, b_gauges) == (a_sent, b_sent)


def test_a_rebalance_moves_a_topic_and_drops_its_gauges(tmp_path: Path) -> None:
    sink, registry = ListSink(), CollectorRegistry()
    stage = MonitorStage(stage_config(tmp_path), registry, sink=sink, wall=FakeWall(1_767_225_660.0))
    consumer = FakeConsumer(set())
    stage._consumer = consumer
    rebalance(stage, consumer, {0, 1, 2})
    for index in range(30):
        stage.handle(Record(scored(id=f"e{index}", published_at=f"2026-01-01T00:00:{index:02d}Z"), index))
    stage.evaluate()  # one instance owns every partition: every topic, as without a consumer
    assert {key for key, _ in sink.sent} == gauge_topics(registry) == set(TOPIC_LABELS)

    energy = partition_of("Energy | Oil")
    rebalance(stage, consumer, {0, 1, 2} - {energy})  # the partition moved to another instance
    sink.sent.clear()
    stage.evaluate()
    assert "Energy | Oil" not in {key for key, _ in sink.sent}
    assert gauge_topics(registry) == {label for label in TOPIC_LABELS if partition_of(label) != energy}
    assert registry.get_sample_value("finsent_negative_rate_baseline", {"news_topic": "Energy | Oil"}) is None

    rebalance(stage, consumer, {0, 1, 2})  # and came back
    sink.sent.clear()
    stage.evaluate()
    assert ("Energy | Oil", 30) in {(key, value["windows"][0]["volume"]) for key, value in sink.sent}

    # Between a revocation and the next assignment nothing is ours, although kafka-python's
    # consumer.assignment() still lists the revoked partitions until the rejoin completes.
    stage.revoked(consumer.assignment())
    assert consumer.assignment()
    sink.sent.clear()
    stage.evaluate()
    assert sink.sent == [] and gauge_topics(registry) == set()


def test_temporary_files_of_a_save_cut_short_are_removed_at_start(tmp_path: Path) -> None:
    config = stage_config(tmp_path)
    config.state_dir.mkdir(parents=True)
    left = [config.state_dir / ".monitor.json.mk0rynzb.tmp", config.state_dir / ".monitor.clock.json.x1.tmp"]
    for path in left:
        path.write_text('{"version": 1, "cut')  # what kill -9 during save_checkpoint leaves
    unrelated = config.state_dir / "notes.tmp"
    unrelated.write_text("mine")
    MonitorStage(config, CollectorRegistry(), sink=ListSink())
    assert not any(path.exists() for path in left)
    assert unrelated.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a folder that takes no file)")
@pytest.mark.parametrize(
    "where", ["/proc/self", "/proc/finsent-state"], ids=["not-writable", "cannot-create"]
)
def test_finsent_run_refuses_a_state_dir_it_cannot_write_at_start(where: str) -> None:
    assert f"finsent run: error: state_dir {where}: cannot write there: " in monitor_stage_refused(where)


def test_counted_and_error_series_exist_at_zero_from_the_start(tmp_path: Path) -> None:
    """So rate() and increase() see the first message of a topic and the first failure of a kind."""
    registry = CollectorRegistry()
    MonitorStage(stage_config(tmp_path), registry, sink=ListSink())
    for topic in TOPIC_LABELS:
        for sentiment in ("negative", "neutral", "positive"):
            labels = {"news_topic": topic, "sentiment": sentiment}
            assert registry.get_sample_value("finsent_classified_messages_total", labels) == 0.0
    for kind in ("connect", "broker", "produce", "commit"):
        assert registry.get_sample_value("finsent_monitor_errors_total", {"kind": kind}) == 0.0
        assert (
            registry.get_sample_value("finsent_stream_errors_total", {"stage": "monitor", "kind": kind})
            == 0.0
        )
