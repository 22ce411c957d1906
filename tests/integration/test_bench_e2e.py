"""`finsent bench e2e` end to end at a small size: real broker, shipped model, JSON the README quotes."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_e2e_benchmark_drains_every_round_and_reports_rates_latency_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "e2e_throughput.py"),
            *("--messages", "150", "--rounds", "2", "--latency-seconds", "3", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["messages"] == 150 and result["rounds"] == 2
    # Each round's fresh service scored its 150 texts (end_to_end waits for exactly that count).
    assert len(result["end_to_end_runs_msg_per_s"]) == 2
    assert len(result["model_only_runs_msg_per_s"]) == 3
    assert all(rate > 0 for rate in result["end_to_end_runs_msg_per_s"] + result["model_only_runs_msg_per_s"])
    assert len(result["end_to_end_share_runs"]) == 2 and result["end_to_end_share_of_model_only"] > 0
    latency = result["latency_at_half_max_rate"]
    assert latency["messages"] > 0
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"] and math.isfinite(
        latency["max_ms"]
    )
    assert result["model"]["variant"] == "int8" and result["peak_rss_mb"] > 0
    assert "end-to-end / model-only" in completed.stdout


def test_e2e_benchmark_rejects_zero_rounds() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "e2e_throughput.py"), "--rounds", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "--rounds and --messages must be at least 1" in completed.stderr


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--max-batch", "0"), "max-batch"),
        (("--model", "/nonexistent"), "/nonexistent"),
        (("--out", "/proc/nope/x.json"), "--out"),
        (("--latency-seconds", "-1"), "--latency-seconds"),
        (("--latency-seconds", "nan"), "--latency-seconds"),
    ],
)
def test_e2e_benchmark_rejects_bad_arguments_in_one_line_before_measuring(
    extra: tuple[str, str], named: str
) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "e2e_throughput.py"), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("e2e_throughput: error:"), completed.stderr[-2000:]
    assert named in lines[0]
    assert completed.stdout == ""


def _tansu_children(pid: int) -> list[int]:
    """Process ids of tansu brokers whose parent is pid."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid and b"tansu" in command:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_e2e_benchmark_stops_its_broker_on_sigterm() -> None:
    bench = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "e2e_throughput.py"), "--messages", "3000", "--rounds", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        brokers: list[int] = []
        while not brokers and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.2)
            brokers = _tansu_children(bench.pid)
        assert brokers, "the benchmark did not start its broker"
        time.sleep(2)
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=60)
        assert bench.returncode == 130, stderr[-2000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        assert not [pid for pid in brokers if _running(pid)]
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(10)
