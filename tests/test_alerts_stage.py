"""The alerts stage across crashes and restarts: replayed records, edited rules, damaged state files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerts import Outbox
from finsent.alerts_stage import DATABASE_FILE, AlertsStage, load_alert_files
from finsent.config import ServiceConfig, load_config
from finsent.windows_sink import windows_records
from monitor import WindowSnapshot

OIL = "Energy | Oil"
SUBSCRIPTIONS = (
    "subscriptions:\n  - name: hook\n    kind: webhook\n    url: http://127.0.0.1:9/x\n    secret: s\n"
)


@dataclass
class Record:
    value: bytes
    offset: int
    topic: str = "news.windows"
    partition: int = 0


def window_record(now: float, negative: int, offset: int, topic: str = OIL) -> Record:
    snapshot = WindowSnapshot(topic, "1m", 60, now, 20, negative, negative / 20, 0.5, 0.2, 0.05, 9.0, ())
    ((_, value),) = windows_records([snapshot], now)
    return Record(json.dumps(value).encode(), offset)


def config_with(tmp_path: Path, rules: str) -> ServiceConfig:
    (tmp_path / "rules.yaml").write_text(rules, encoding="utf-8")
    (tmp_path / "subs.yaml").write_text(SUBSCRIPTIONS, encoding="utf-8")
    flags = {
        "state_dir": str(tmp_path / "state"),
        "windows": "1m,5m",
        "bootstrap_servers": "127.0.0.1:1",
        "rules": str(tmp_path / "rules.yaml"),
        "subscriptions": str(tmp_path / "subs.yaml"),
    }
    return load_config(flags, None, environ={})


def stage(config: ServiceConfig, registry: CollectorRegistry | None = None) -> AlertsStage:
    return AlertsStage(config, registry or CollectorRegistry(), *load_alert_files(config))


def keys(alerts: AlertsStage) -> list[str]:
    return [row["notification_key"] for row in alerts.dispatcher.outbox.rows()]


RULE = "rules:\n  - name: oil\n    window: 1m\n    rate_above: 0.6\n    min_volume: 10\n"


def test_records_replayed_after_a_crash_do_not_fire_a_resolved_alert_again(tmp_path: Path) -> None:
    config = config_with(tmp_path, RULE)
    records = [window_record(100.0, 18, 0), window_record(105.0, 18, 1), window_record(110.0, 2, 2)]
    first = stage(config)
    for record in records:
        first.handle(record)
    before = keys(first)
    assert [key.split(":")[1] for key in before] == ["firing", "resolved"]
    first.dispatcher.close()  # a crash: only offset 0 had been committed
    replaying = stage(config)
    for record in records[1:]:
        replaying.handle(record)
    assert keys(replaying) == before
    replaying.dispatcher.close()


def test_quiet_records_do_not_write_the_database(tmp_path: Path) -> None:
    config = config_with(tmp_path, RULE)
    alerts = stage(config)
    writes: list[int] = []
    record = alerts.dispatcher.record
    alerts.dispatcher.record = lambda events, state: (writes.append(len(events)), record(events, state))  # type: ignore[method-assign,assignment,func-returns-value]
    for offset in range(5):
        alerts.handle(window_record(100.0 + offset, 2, offset))
    assert writes == []  # the evaluated-up-to marks alone are not worth an fsync per record
    alerts.handle(window_record(106.0, 18, 5))
    assert writes == [1]
    alerts.dispatcher.close()


def test_windows_of_topics_the_monitor_never_publishes_leave_no_alert_state(tmp_path: Path) -> None:
    any_topic = (
        "rules:\n  - name: any\n    window: 1m\n    rate_above: 0.6\n    min_volume: 10\n    for: 10s\n"
    )
    registry = CollectorRegistry()
    alerts = stage(config_with(tmp_path, any_topic), registry)
    for offset in range(200):  # another producer's records on news.windows, one topic each
        alerts.handle(window_record(100.0 + offset, 18, offset, topic=f"Foreign topic {offset}"))
    alerts.handle(window_record(400.0, 18, 200, topic="other"))
    alerts.handle(window_record(400.0, 18, 201))
    assert sorted(alert.topic for alert in alerts.engine.active()) == [OIL, "other"]
    assert len(alerts.engine.to_state()["alerts"]) == 2
    assert registry.get_sample_value("finsent_alerts_foreign_topic_records_total") == 200
    series = [s for m in registry.collect() if m.name == "finsent_alerts_active" for s in m.samples]
    assert not any(s.labels.get("news_topic", "").startswith("Foreign") for s in series)
    alerts.dispatcher.close()


@pytest.mark.parametrize(
    "edited",
    [RULE.replace("    window: 1m\n", "    window: 1m\n    topics: [Macro]\n"), "rules: []\n"],
    ids=["topics-narrowed", "rule-removed"],
)
def test_an_alert_whose_rule_no_longer_applies_resolves_after_a_restart(tmp_path: Path, edited: str) -> None:
    config = config_with(tmp_path, RULE)
    first = stage(config)
    first.handle(window_record(100.0, 18, 0))
    first.dispatcher.close()
    config = config_with(tmp_path, edited)
    registry = CollectorRegistry()
    restarted = stage(config, registry)
    active = {"rule": "oil", "news_topic": OIL, "severity": "warning", "state": "firing"}
    assert registry.get_sample_value("finsent_alerts_active", active) is None
    restarted.handle(window_record(105.0, 2, 1, topic="Macro"))
    assert [key.split(":")[1] for key in keys(restarted)] == ["firing", "resolved"]
    assert (
        registry.get_sample_value("finsent_alert_transitions_total", {"rule": "oil", "status": "resolved"})
        == 1
    )
    restarted.dispatcher.close()
    again = stage(config)  # the resolve was recorded with the state: not sent twice
    again.handle(window_record(110.0, 2, 2, topic="Macro"))
    assert len(keys(again)) == 2
    again.dispatcher.close()


NO_BROKER = ["--bootstrap-servers", "127.0.0.1:1", "--metrics-port", "0"]


def corrupt_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(100))


def truncated_state(path: Path) -> None:
    Outbox(path).close()
    with sqlite3.connect(path) as db:
        db.execute('INSERT INTO engine_state (id, state, saved_at) VALUES (1, \'{"version": 1, "ale\', 0)')


def malformed_state(path: Path) -> None:
    Outbox(path).close()
    with sqlite3.connect(path) as db:
        db.execute(
            'INSERT INTO engine_state (id, state, saved_at) VALUES (1, \'{"version": 1, "alerts": {"x": 1}}\', 0)'
        )


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (corrupt_bytes, "file is not a database"),
        (truncated_state, "saved alert engine state is not valid JSON"),
        (malformed_state, "saved alert engine state is malformed"),
    ],
    ids=["random-bytes", "truncated-json", "malformed-json"],
)
def test_finsent_run_reports_damaged_alerts_state_in_one_line(
    tmp_path: Path, damage: Callable[[Path], None], reason: str
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    database = state_dir / DATABASE_FILE
    damage(database)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "finsent",
            "run",
            "--stage",
            "alerts",
            "--state-dir",
            str(state_dir),
            *NO_BROKER,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr[-2000:]
    assert errors[0].startswith(
        f"finsent run: error: state_dir: cannot restore the alerts stage: {database}: "
    )
    assert reason in errors[0] and "move it aside" in errors[0]


def test_a_full_disk_is_reported_as_such_not_as_a_failed_rollback(tmp_path: Path) -> None:
    box = Outbox(tmp_path / DATABASE_FILE)
    # SQLite's own size cap stands in for a full disk: the same SQLITE_FULL, rolled back by SQLite.
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        box.record([], {"version": 1, "padding": "x" * 200_000}, now=1.0)
    box.close()


def test_an_unwritable_alerts_database_is_not_called_damaged(tmp_path: Path) -> None:
    config = load_config({"state_dir": str(tmp_path / "state")}, environ={})
    rules, subscriptions = load_alert_files(config)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / DATABASE_FILE).mkdir()  # a folder where the file should be: SQLite cannot open it
    with pytest.raises(RuntimeError) as raised:
        AlertsStage(config, CollectorRegistry(), rules, subscriptions)
    assert f"cannot restore the alerts stage: {tmp_path / 'state' / DATABASE_FILE}: " in str(raised.value)
    assert "move it aside" not in str(raised.value)
