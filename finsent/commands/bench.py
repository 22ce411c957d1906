"""`finsent bench`: run one of the repository's benchmarks (bench/*.py), which write JSON results."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from finsent.commands.common import Subparsers
from finsent.errors import UsageError

BENCHMARKS = {
    "model": "model_throughput.py",
    "e2e": "e2e_throughput.py",
}


def bench_dir() -> Path:
    """The bench/ folder of the source checkout this package runs from."""
    folder = Path(__file__).resolve().parents[2] / "bench"
    if not (folder / BENCHMARKS["model"]).is_file():
        raise UsageError(f"no benchmarks at {folder}: `finsent bench` runs from a source checkout of finsent")
    return folder


def register(subparsers: Subparsers) -> None:
    """Add the bench subcommand."""
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark: model throughput (4 paths) or end-to-end through the broker",
        description="model: messages/s of a per-message Hugging Face pipeline, PyTorch batched, ONNX fp32 and "
        "ONNX int8 on the same texts (needs the train extra and the training run named in the model manifest, "
        "from `make model`); "
        "e2e: throughput through a real broker against model-only, latency p50/p99 at half rate, peak RSS. "
        "Results go to bench/results/*.json. Arguments after the benchmark name go to its script "
        "(see `finsent bench model -- --help`).",
    )
    parser.add_argument("which", choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="passed to the benchmark script")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark script with this interpreter; its exit code."""
    script = bench_dir() / BENCHMARKS[args.which]
    extra = [arg for arg in args.script_args if arg != "--"]
    return subprocess.call([sys.executable, str(script), *extra], cwd=script.parents[1])
