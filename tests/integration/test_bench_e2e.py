"""`finsent bench e2e` end to end at a small size: real broker, shipped model, JSON the README quotes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
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
