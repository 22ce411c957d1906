"""`finsent retrain` options and scheduled mode (cron job + drift retrain requests), without training."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from finsent.cli import build_parser, main
from finsent.commands import retrain as command
from model.registry import ModelRegistry


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["retrain", *argv])


def test_settings_come_from_flags_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "retrain.yaml"
    config.write_text(f"registry: {tmp_path / 'r'}\nschedule: '15 2 * * 1'\ntolerance: 0.02\nmax-steps: 7\n")
    values = command.resolve(parse("--config", str(config), "--tolerance", "0.005"))
    assert values["registry"] == tmp_path / "r"
    assert values["schedule"] == "15 2 * * 1"
    assert values["tolerance"] == 0.005
    assert values["max_steps"] == 7
    assert values["labels_topic"] == "news.labels"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--registry"),
        (["--registry", "r", "--schedule", "every sunday"], "not a crontab"),
        (["--registry", "r", "--tolerance", "-1"], "--tolerance: must be at least 0"),
        (["--registry", "r", "--max-steps", "many"], "expected int"),
        (["--registry", "r", "--feedback-dir", "/no/such/dir"], "not a folder"),
        (["--registry", "r", "--epochs", "nan"], "--epochs: must be a finite number"),
        (["--registry", "r", "--epochs", "inf"], "--epochs: must be a finite number"),
        (["--registry", "r", "--epochs", "0"], "--epochs: must be above 0"),
        (["--registry", "r", "--gold-rows", "0"], "--gold-rows: must be at least 1"),  # promoted anything
        (["--registry", "r", "--parity-rows", "0"], "--parity-rows: must be at least 1"),
        (["--registry", "r", "--max-rows", "0"], "--max-rows: must be at least 1"),
        (["--registry", "r", "--max-tokens", "4"], "--max-tokens: must be at least 8"),
        (["--registry", "r", "--keep", "1"], "--keep: must be at least 2"),
        (["--registry", "r", "--gold-share", "101"], "gold_share must be in 1..100"),
        (["--registry", __file__], "is not a folder"),
        (["--registry", __file__ + "/sub"], f"{__file__} is not a folder"),
    ],
)
def test_bad_settings_exit_2_naming_the_field(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retrain", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_gold_set_without_rows_for_a_task_never_promotes() -> None:
    from model.retrain import decide

    scores = {"accuracy": 0.0, "macro_f1": 0.0, "rows": 0}
    filled = {"accuracy": 0.9, "macro_f1": 0.9, "rows": 50}
    promote, reasons = decide(
        {"topic": filled, "sentiment": scores}, {"topic": filled, "sentiment": scores}, 0.01
    )
    assert not promote
    assert "sentiment: no gold rows" in reasons[1]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("*/3", "sun,wed,sat"),
        ("sat,0", "sat,sun"),
        ("*", "*"),
    ],
)
def test_crontab_weekday_numbers_keep_their_crontab_meaning(field: str, expected: str) -> None:
    assert command.cron_weekdays(field) == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"registry: r\nschedul: '0 3 * * 0'\n", "unknown setting 'schedul'"),
        (b"registry: r\nshuffle-labels: maybe\n", "shuffle_labels: expected true or false"),
        (b"registry: \xff\xfe r\n", "not UTF-8 text"),
        (b"- registry\n", "expected a mapping"),
        (b"registry: [a, b]\n", "registry: expected Path, got a YAML list"),  # was a folder "['a', 'b']"
        (b"registry: r\nschedule: {at: 3}\n", "schedule: expected str, got a YAML dict"),
    ],
)
def test_bad_config_file_exits_2_naming_the_problem(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "retrain.yaml"
    config.write_bytes(content)
    assert main(["retrain", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_scheduler_runs_at_once_when_drift_requests_a_retrain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    values = command.resolve(
        parse("--registry", str(registry.root), "--schedule", "0 3 * * 0", "--request-poll-seconds", "1")
    )
    calls: list[str] = []
    ran = threading.Event()

    def fake_run_once(settings: dict[str, Any], reason: str) -> None:
        calls.append(reason)
        ran.set()

    monkeypatch.setattr(command, "run_once", fake_run_once)
    scheduler = BackgroundScheduler(timezone="UTC")
    trigger = command.add_jobs(scheduler, values)
    assert str(trigger.get_next_fire_time(None, command._now()).weekday()) == "6"  # a Sunday, 03:00 UTC
    scheduler.start()
    try:
        assert not ran.wait(1.5), "no request, no run before the cron time"
        assert registry.request_retrain("topic prediction drift", {"divergence": 0.31})
        assert ran.wait(10), "the request was not picked up"
    finally:
        scheduler.shutdown(wait=True)
    assert calls == ["request: topic prediction drift"]
    assert registry.pending_request() is None, "the request is consumed"
