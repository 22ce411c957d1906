"""`finsent produce` against a real broker: bad arguments, SIGTERM, and a broker that goes away mid-run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finsent.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STREAM = ROOT / "data" / "stock_tweets_stream_2020.csv"


def finsent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m finsent ...` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "finsent", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def start(*args: str) -> subprocess.Popen[str]:
    """Start `python -m finsent ...` with its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "finsent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "extra",
    [
        ("--topic", "bad topic!"),
        ("--topic", ""),
        ("--topic", "."),
        ("--topic", ".."),
        ("--topic", "x" * 300),
        ("--rate", "nan"),
        ("--rate", "inf"),
        ("--rate", "1e-300"),
        ("--rate", "1e9"),
        ("--flush-timeout", "nan"),
    ],
)
def test_produce_rejects_bad_topic_and_rate_in_one_line_before_connecting(extra: tuple[str, str]) -> None:
    # Nothing listens on this port: the check must come before any connection attempt.
    server = f"127.0.0.1:{free_port()}"
    completed = finsent("produce", "--file", str(STREAM), "--bootstrap-servers", server, *extra)
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("finsent produce: error: " + extra[0]), completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_produce_stops_on_sigterm_like_ctrl_c_and_reports_the_count(broker: EmbeddedBroker) -> None:
    producer = start(
        "produce",
        *("--file", str(STREAM), "--bootstrap-servers", broker.bootstrap, "--rate", "50", "--loop"),
    )
    time.sleep(6)
    producer.send_signal(signal.SIGTERM)
    stdout, stderr = producer.communicate(timeout=60)
    assert producer.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    words = stdout.split()
    assert words[0] == "produced" and int(words[1]) > 0, stdout


@pytest.mark.slow
def test_produce_counts_only_acknowledged_messages_and_exits_1_when_the_broker_goes_away(
    broker: EmbeddedBroker,
) -> None:
    producer = start(
        "produce",
        *("--file", str(STREAM), "--bootstrap-servers", broker.bootstrap, "--rate", "50", "--loop"),
        *("--flush-timeout", "3"),
    )
    time.sleep(6)
    broker.stop()
    time.sleep(3)
    started = time.monotonic()
    producer.send_signal(signal.SIGINT)
    stdout, stderr = producer.communicate(timeout=60)
    assert time.monotonic() - started < 20
    assert producer.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    line = next(line for line in stderr.splitlines() if "did not acknowledge" in line)
    words = line.split()
    acked, queued = int(words[3]), int(words[5])
    # About 6 s at 50/s reached the broker; the 3 s after it went away did not.
    assert 0 < acked < queued, line
    assert stdout == ""
