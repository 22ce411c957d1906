"""`finsent retrain` options and scheduled mode (cron job + drift retrain requests), without training."""

from __future__ import annotations

import argparse
import fcntl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from finsent.cli import build_parser, main
from finsent.commands import retrain as command
from finsent.cron import cron_weekdays, crontab_trigger
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
        (["--registry", "r", "--schedule", "0 3 * * 5-1"], "'5-1' runs backwards"),  # was "got 4 fields"
        (["--registry", "r", "--schedule", "0 3 * * 9"], "'9' out of range 0-7"),
        (["--registry", "r", "--tolerance", "-1"], "--tolerance: must be at least 0"),
        (["--registry", "r", "--max-steps", "many"], "--max-steps: expected an integer"),
        (["--registry", "r", "--feedback-dir", "/no/such/dir"], "not a folder"),
        (["--registry", "r", "--epochs", "nan"], "--epochs: expected a finite number"),
        (["--registry", "r", "--epochs", "inf"], "--epochs: expected a finite number"),
        (["--registry", "r", "--epochs", "0"], "--epochs: must be above 0"),
        (["--registry", "r", "--gold-rows", "0"], "--gold-rows: must be at least 1"),  # promoted anything
        (["--registry", "r", "--parity-rows", "0"], "--parity-rows: must be at least 1"),
        (["--registry", "r", "--max-rows", "0"], "--max-rows: must be at least 1"),
        (["--registry", "r", "--max-tokens", "4"], "--max-tokens: must be at least 8"),
        (["--registry", "r", "--keep", "1"], "--keep: must be at least 2"),
        (["--registry", "r", "--gold-share", "101"], "gold_share must be in 1..99"),
        # All of the dev split for the gold set left the challenger no dev rows: the run failed late.
        (["--registry", "r", "--gold-share", "100"], "gold_share must be in 1..99"),
        (["--registry", __file__], "is not a folder"),
        # Accepted before, then failed late or never: finsent run refuses the same values at start.
        (["--registry", "r", "--bootstrap-servers", "host:0"], "bootstrap_servers:"),
        (["--registry", "r", "--labels-topic", "bad/t"], "labels_topic:"),
        (["--registry", "r", "--max-tokens", "100000"], "--max-tokens: must be at most 512"),
        (["--registry", "r", "--base", "/no/such/base"], "--base /no/such/base: not a folder"),
        (["--registry", "r", "--parity-margin", "2"], "--parity-margin: must be at most 0.5"),
        (["--registry", "r", "--schedule", "0 3 31 2 *"], "never fires"),  # logged "next run None"
        (["--registry", __file__ + "/sub"], f"{__file__} is not a folder"),
    ],
)
def test_bad_settings_exit_2_naming_the_field(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retrain", *argv]) == 2
    assert message in capsys.readouterr().err


def test_settings_come_from_finsent_variables_below_flags_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "retrain.yaml"
    config.write_text("max-steps: 7\n")
    environ = {
        "FINSENT_REGISTRY": str(tmp_path / "r"),
        "FINSENT_TOLERANCE": "0.05",
        "FINSENT_MAX_STEPS": "3",
        "FINSENT_SHUFFLE_LABELS": "yes",
        "FINSENT_EPOCHS": "2",
    }
    values = command.resolve(parse("--config", str(config), "--epochs", "0.5"), environ)
    assert values["registry"] == tmp_path / "r"  # the required setting, from the environment alone
    assert values["tolerance"] == 0.05
    assert values["shuffle_labels"] is True
    assert values["max_steps"] == 7  # the file beats the environment
    assert values["epochs"] == 0.5  # a flag beats the environment


def test_a_bad_finsent_variable_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FINSENT_EPOCHS", "0")
    assert main(["retrain", "--registry", str(tmp_path / "r")]) == 2
    assert "FINSENT_EPOCHS: must be above 0" in capsys.readouterr().err
    monkeypatch.setenv("FINSENT_EPOCHS", "many")
    assert main(["retrain", "--registry", str(tmp_path / "r")]) == 2
    assert "FINSENT_EPOCHS: expected a number, got 'many'" in capsys.readouterr().err


def test_help_names_each_settings_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    shown = " ".join(capsys.readouterr().out.split())
    assert "flag > --config file > FINSENT_<NAME> environment > default" in shown
    for setting in command.SETTINGS:
        assert f"env {setting.env})" in shown, setting.name
    assert "(default: data/; env FINSENT_DATA_DIR)" in shown


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
    assert cron_weekdays(field) == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"registry: r\nschedul: '0 3 * * 0'\n", "unknown setting 'schedul'"),
        (b"registry: r\nshuffle-labels: maybe\n", "shuffle_labels: expected true or false"),
        (b"registry: \xff\xfe r\n", "not UTF-8 text"),
        (b"- registry\n", "expected a mapping"),
        (b"registry: [a, b]\n", "registry: expected a string, got list"),  # was a folder "['a', 'b']"
        (b"registry: r\nschedule: {at: 3}\n", "schedule: expected a string, got dict"),
    ],
)
def test_bad_config_file_exits_2_naming_the_problem(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "retrain.yaml"
    config.write_bytes(content)
    assert main(["retrain", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err


class FakeRuns:
    """Stands in for model.retrain.retrain (run_once's real locking and request handling stay)."""

    def __init__(self) -> None:
        self.calls = 0
        self.kafka_feedback: Any = None
        self.during: Callable[[int], None] | None = None  # runs inside the run, given its number
        self.started = threading.Event()

    def __call__(self, settings: Any, log: Any = None, kafka_feedback: Any = None) -> SimpleNamespace:
        self.calls += 1
        self.kafka_feedback = kafka_feedback
        self.started.set()
        if self.during is not None:
            self.during(self.calls)
        return SimpleNamespace(promoted=False, challenger="c", champion="v1", report_path=Path("r.json"))

    def wait_for(self, calls: int, seconds: float = 10) -> bool:
        deadline = time.monotonic() + seconds
        while self.calls < calls and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.calls >= calls


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    import model.retrain

    fake = FakeRuns()
    monkeypatch.setattr(model.retrain, "retrain", fake)
    return fake


def scheduled(registry: ModelRegistry, schedule: str = "0 3 * * 0") -> tuple[BackgroundScheduler, Any]:
    """A started background scheduler with finsent retrain's jobs (requests polled every second)."""
    values = command.resolve(
        parse("--registry", str(registry.root), "--schedule", schedule, "--request-poll-seconds", "1")
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    trigger = command.add_jobs(scheduler, values)
    scheduler.start()
    return scheduler, trigger


@contextmanager
def lock_held_elsewhere(root: Path) -> Iterator[None]:
    """Hold ROOT/retrain.lock as another process's retrain run would."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "retrain.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def test_scheduler_runs_at_once_when_drift_requests_a_retrain(tmp_path: Path, runs: FakeRuns) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    scheduler, trigger = scheduled(registry)
    try:
        assert trigger.get_next_fire_time(None, command._now()).weekday() == 6  # a Sunday, 03:00 UTC
        assert not runs.started.wait(1.5), "no request, no run before the cron time"
        assert registry.request_retrain("topic prediction drift", {"divergence": 0.31})
        assert runs.wait_for(1), "the request was not picked up"
        time.sleep(1.5)
    finally:
        scheduler.shutdown(wait=True)
    assert runs.calls == 1, "one request, one run"
    assert registry.pending_request() is None, "the request is consumed"


def test_a_request_written_during_a_run_gets_its_own_run(tmp_path: Path, runs: FakeRuns) -> None:
    registry = ModelRegistry(tmp_path / "registry")

    def first_run_sees_drift(number: int) -> None:
        if number == 1:
            registry.request_retrain("topic prediction drift")
            time.sleep(2.5)  # the 1 s request poll finds it while this run is still going

    runs.during = first_run_sees_drift
    scheduler, _ = scheduled(registry)
    try:
        scheduler.get_job("retrain").modify(next_run_time=command._now())  # the cron time comes
        assert runs.wait_for(2), "the request that came in during the run was dropped"
    finally:
        scheduler.shutdown(wait=True)
    assert registry.pending_request() is None


def test_a_cron_fire_that_comes_late_still_runs(tmp_path: Path, runs: FakeRuns) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    scheduler, _ = scheduled(registry)
    try:
        scheduler.pause()
        # The process was stopped or starved past the fire time (APScheduler's default grace is 1 s).
        scheduler.get_job("retrain").modify(next_run_time=command._now() - timedelta(minutes=5))
        scheduler.resume()
        assert runs.wait_for(1, seconds=5), "the late run was dropped until the next cron time"
    finally:
        scheduler.shutdown(wait=True)


def test_once_exits_3_while_another_run_holds_the_registry(
    tmp_path: Path, runs: FakeRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "registry"
    with lock_held_elsewhere(root):
        assert main(["retrain", "--once", "--registry", str(root)]) == 3
    assert runs.calls == 0
    assert f"another retrain run holds {root / 'retrain.lock'}" in capsys.readouterr().err
    assert main(["retrain", "--once", "--registry", str(root)]) == 0
    assert runs.calls == 1


def test_scheduled_runs_wait_while_another_process_runs(tmp_path: Path, runs: FakeRuns) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    scheduler, _ = scheduled(registry)
    try:
        with lock_held_elsewhere(registry.root):
            assert registry.request_retrain("sentiment prediction drift")
            time.sleep(2.5)
            assert runs.calls == 0, "no run while another holds retrain.lock"
            assert registry.pending_request() is not None, "the request waits for a run that can start"
        assert runs.wait_for(1)
    finally:
        scheduler.shutdown(wait=True)
    assert registry.pending_request() is None


def fire_times(schedule: str, after: datetime, count: int) -> list[str]:
    trigger, times = crontab_trigger(schedule), []
    for _ in range(count):
        after = trigger.get_next_fire_time(None, after)
        times.append(after.strftime("%a %d %b %H:%M"))
        after += timedelta(minutes=1)
    return times


def test_day_of_month_and_weekday_both_restricted_fire_on_either_as_in_crontab() -> None:
    start = datetime(2026, 1, 1, 4, 0, tzinfo=UTC)  # a Thursday
    assert fire_times("0 3 1 * 1", start, 6) == [
        "Mon 05 Jan 03:00",
        "Mon 12 Jan 03:00",
        "Mon 19 Jan 03:00",
        "Mon 26 Jan 03:00",
        "Sun 01 Feb 03:00",
        "Mon 02 Feb 03:00",
    ]
    assert fire_times("0 3 * * 1", start, 2) == ["Mon 05 Jan 03:00", "Mon 12 Jan 03:00"]
    assert fire_times("30 6 15 * *", start, 2) == ["Thu 15 Jan 06:30", "Sun 15 Feb 06:30"]


def test_a_broker_that_cannot_be_reached_does_not_stop_the_run_or_lose_the_request(
    tmp_path: Path, runs: FakeRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    """The labels topic is skipped (the run trains on stored feedback and its report says why); the
    drift request is served by this run. Before, the run died before training, wrote no report,
    and the request it had already deleted was lost."""
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.request_retrain("topic prediction drift")
    args = ["retrain", "--once", "--registry", str(registry.root), "--bootstrap-servers", "127.0.0.1:1"]
    assert main(args) == 0
    assert runs.calls == 1
    assert "error" in runs.kafka_feedback
    assert "labels topic news.labels: not read" in capsys.readouterr().err
    assert registry.pending_request() is None, "served by this run"


def test_a_run_that_dies_before_training_leaves_the_request_waiting(
    tmp_path: Path, runs: FakeRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.request_retrain("topic prediction drift")

    def no_settings(**_: Any) -> Any:
        raise MemoryError("stand-in for a failure before the run starts")

    import model.retrain

    monkeypatch.setattr(model.retrain, "RetrainSettings", no_settings)
    with pytest.raises(MemoryError):
        command.run_once(command.resolve(parse("--registry", str(registry.root), "--once")), "test")
    assert runs.calls == 0
    assert registry.pending_request() is not None, "the next run serves it"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "twitter_topic_train.csv: no such file"),
        (
            {"twitter_topic_train.csv": b"foo,bar\n1,2\n"},
            "twitter_topic_train.csv: no 'text' or 'label' column",
        ),
        ({"twitter_topic_train.csv": b"te\xffxt,label\n1,2\n"}, "not a readable CSV (UnicodeDecodeError"),
    ],
)
def test_a_bad_data_dir_is_one_line_at_start(
    files: dict[str, bytes], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to fail at the run's first read with a traceback (KeyError: 'text') and exit 1."""
    data = tmp_path / "data"
    data.mkdir()
    for name, content in files.items():
        (data / name).write_bytes(content)
    assert main(["retrain", "--once", "--registry", str(tmp_path / "r"), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
