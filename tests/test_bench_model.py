"""`make bench` end to end on a tiny trained model, so the benchmark cannot rot between measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("torch-training")]

ROOT = Path(__file__).resolve().parent.parent


def test_model_benchmark_writes_every_path_with_ratios_and_agreement(tmp_path: Path) -> None:
    from model.base import default_base_dir
    from model.data import DEFAULT_DATA_DIR
    from model.export import export
    from model.ship import ship
    from model.train import train
    from model.train_config import TrainConfig

    train_dir = tmp_path / "train"
    train(
        TrainConfig(
            base_dir=default_base_dir(),
            data_dir=DEFAULT_DATA_DIR,
            out_dir=train_dir,
            max_rows=64,
            max_steps=2,
            batch_size=16,
            max_tokens=32,
        ),
        log=lambda _: None,
    )
    parity_texts = ["Stocks fall on profit warning", "Fed holds rates", "Oil jumps as supply tightens"]
    # Two steps leave the heads in near-ties that int8 may flip; parity is the export tests' job.
    export(train_dir, tmp_path / "export", parity_texts, "bench-smoke", log=lambda _: None, parity_margin=1.0)
    ship(tmp_path / "export", tmp_path / "model", ("int8",), {})
    out = tmp_path / "bench.json"

    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "model_throughput.py"),
            *("--train-dir", str(train_dir), "--model-dir", str(tmp_path / "model")),
            *("--export-dir", str(tmp_path / "export"), "--out", str(out)),
            *("--texts", "24", "--pipeline-texts", "6", "--torch-batch-sizes", "8", "--rounds", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {row["name"][:3]: row for row in result["rows"]}
    assert {"(a)", "(b)", "(c)", "(d)"} <= set(rows)
    assert result["texts"] == 24 and result["rounds"] == 2
    assert rows["(a)"]["texts"] == 6 and rows["(a)"]["batch"] == 1
    for row in rows.values():
        assert len(row["seconds_per_round"]) == 2
        assert row["messages_per_second"] > 0 and row["x_vs_a"] > 0 and row["x_vs_b"] > 0
    assert rows["(a)"]["x_vs_a"] == 1.0 and rows["(b)"]["x_vs_b"] == 1.0
    for key in ("(c)", "(d)"):
        assert 0.0 <= rows[key]["sentiment_agreement_with_b"] <= 1.0
        assert "CPUExecutionProvider" in rows[key]["providers"]
    # fp32 ONNX computes what PyTorch does, up to float rounding.
    assert rows["(c)"]["topic_agreement_with_b"] >= 0.95
    lengths = result["sequence_length_tokens"]
    assert 0 < lengths["p50"] <= lengths["p99"] <= lengths["max"] <= 32
    assert "(d) ONNX int8" in completed.stdout


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--rounds", "0"), "--rounds"),
        (("--texts", "0"), "--texts"),
        (("--texts", "100000"), "--texts"),
        (("--model-dir", "/nonexistent"), "--model-dir"),
        (("--torch-batch-sizes", "8,x"), "--torch-batch-sizes"),
        (("--out", "/proc/nope/x.json"), "--out"),
    ],
)
def test_model_benchmark_rejects_bad_arguments_in_one_line_before_measuring(
    extra: tuple[str, str], named: str
) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "model_throughput.py"), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"model_throughput: error: {named}"), completed.stderr[
        -2000:
    ]


@pytest.mark.parametrize("missing", ["--train-dir", "--export-dir"])
def test_model_benchmark_without_a_training_run_says_what_to_build(tmp_path: Path, missing: str) -> None:
    """A fresh checkout has neither (make model builds them): one line and exit 2, not a worker's traceback."""
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    present = {"--train-dir": str(tmp_path / "run"), "--export-dir": str(ROOT / "model" / "default")}
    present[missing] = str(tmp_path / "absent")
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "model_throughput.py"),
            *(item for flag, value in present.items() for item in (flag, value)),
            *("--out", str(tmp_path / "b.json")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"model_throughput: error: {missing}"), completed.stderr
    assert "make model" in lines[0]
