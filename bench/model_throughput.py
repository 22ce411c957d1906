"""Model throughput on this machine: HF pipeline vs PyTorch batched vs ONNX fp32 / int8 (+ GPU).

One run, same texts: every path is timed once per round, rounds interleaved so that the shared
machine's load hits all paths alike; medians of rates and of per-round ratios are reported. Each
timing runs in a process of its own holding one model and one thread pool, as a deployment would:
in one shared process, an idle ONNX Runtime or PyTorch thread pool slowed the next path by up to a
third, at random from run to run. Writes bench/results/model_throughput.json and prints a table.
Usage: python bench/model_throughput.py [--train-dir build/soup] [--export-dir build/export]
Needs the PyTorch checkpoint (`make model` or `finsent train`) for the PyTorch rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.checks import check_out
from bench.hf_pipeline import MultiTaskPipeline
from finsent.errors import UsageError
from model import DEFAULT_MODEL_DIR, Engine, cuda_usable
from model.calibration import softmax
from model.checkpoint import load_checkpoint
from model.dev_eval import predict_logits
from model.engine import CPU_BATCH_SIZE, GPU_BATCH_SIZE
from model.manifest import ModelIntegrityError, read_manifest
from model.tokenization import encode_texts, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "model_throughput.json"
# Half the texts come from the 5,000-row replay stream.
MAX_TEXTS = 10_000


def bench_texts(count: int) -> list[str]:
    """A mix of replay-stream tweets and news-account tweets, fixed order."""
    stream = pd.read_csv(ROOT / "data" / "stock_tweets_stream_2020.csv", keep_default_na=False)["text"]
    topic = pd.read_csv(ROOT / "data" / "twitter_topic_train.csv", keep_default_na=False)["text"]
    mixed = pd.concat(
        [stream.sample(count // 2, random_state=1), topic.sample(count - count // 2, random_state=2)]
    )
    return [str(text) for text in mixed.tolist()]


def median(values: list[float]) -> float:
    """Middle value (mean of the two middle ones for an even count)."""
    return float(np.median(values))


Scores = tuple[np.ndarray, np.ndarray]
WARM_UP_TEXTS = 64


@dataclass(frozen=True)
class PathSpec:
    """One measured path: a short key for its worker process, the table name, batch size, texts."""

    key: str
    name: str
    batch: int
    texts: int


def path_specs(args: argparse.Namespace) -> list[PathSpec]:
    """Every path this run measures, in table order (the GPU row only where CUDA is usable)."""
    specs = [PathSpec("a", "(a) HF pipeline, PyTorch, per message", 1, min(args.pipeline_texts, args.texts))]
    for size in (int(value) for value in args.torch_batch_sizes.split(",")):
        specs.append(PathSpec(f"b{size}", f"(b) PyTorch batched, batch {size}", size, args.texts))
    specs.append(PathSpec("c", "(c) ONNX fp32", CPU_BATCH_SIZE, args.texts))
    specs.append(PathSpec("d", "(d) ONNX int8", CPU_BATCH_SIZE, args.texts))
    if cuda_usable():
        specs.append(PathSpec("e", "(e) ONNX Runtime CUDA fp16", GPU_BATCH_SIZE, args.texts))
    return specs


def path_runner(key: str, args: argparse.Namespace) -> tuple[Callable[[list[str]], Scores | None], list[str]]:
    """(callable scoring a list of texts, providers) for one path; loads only what that path needs."""
    manifest = read_manifest(args.model_dir)
    temperatures = manifest["temperatures"]
    max_tokens = int(manifest["max_tokens"])
    if key in ("c", "d", "e"):
        directory, variant, device = {
            "c": (args.export_dir, "fp32", "cpu"),
            "d": (args.model_dir, "int8", "cpu"),
            "e": (args.export_dir, "fp16", "cuda"),
        }[key]
        if not (directory / "manifest.json").is_file():
            raise SystemExit(f"no model in {directory}: run `make model` first")
        # The engine's own defaults: the run size and concurrency the service uses.
        engine = Engine(directory, variant=variant, device=device)  # type: ignore[arg-type]
        return engine.probabilities, engine.providers

    torch.set_num_threads(os.cpu_count() or 1)
    network = load_checkpoint(training_checkpoint(args, manifest))
    if key == "a":
        from transformers import PreTrainedTokenizerFast

        hf_tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(args.model_dir / "tokenizer.json"),
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            unk_token="[UNK]",
            mask_token="[MASK]",
        )
        pipe = MultiTaskPipeline(network, hf_tokenizer, temperatures, max_tokens)

        def per_message(batch_texts: list[str]) -> Scores | None:
            with torch.inference_mode():
                for text in batch_texts:
                    pipe(text)
            return None

        return per_message, []

    batch_size = int(key[1:])
    tokenizer = load_tokenizer(args.model_dir, max_tokens)

    def torch_batched(batch_texts: list[str]) -> Scores:
        topic, sentiment = predict_logits(network, encode_texts(tokenizer, batch_texts), batch_size)
        return softmax(topic, temperatures["topic"]), softmax(sentiment, temperatures["sentiment"])

    return torch_batched, []


def worker(args: argparse.Namespace) -> int:
    """Time one path once, after a short warm-up, in this process alone; save seconds and outputs."""
    spec = next(spec for spec in path_specs(args) if spec.key == args.worker)
    texts = bench_texts(args.texts)[: spec.texts]
    run, providers = path_runner(spec.key, args)
    run(texts[:WARM_UP_TEXTS])
    started = time.perf_counter()
    output = run(texts)
    seconds = time.perf_counter() - started
    topic, sentiment = output if output is not None else (np.zeros(0), np.zeros(0))
    np.savez(
        args.worker_out,
        seconds=np.array(seconds),
        topic=topic,
        sentiment=sentiment,
        providers=np.array(providers, dtype=str),
    )
    return 0


def _measure(
    specs: list[PathSpec], shared: list[str], rounds: int
) -> tuple[dict[str, list[float]], dict[str, Scores | None], dict[str, list[str]]]:
    """Run every path once per round, each in a fresh worker process: seconds, last outputs, providers."""
    seconds: dict[str, list[float]] = {spec.name: [] for spec in specs}
    outputs: dict[str, Scores | None] = {}
    providers: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as work:
        for round_index in range(rounds):
            for spec in specs:
                result_file = Path(work) / f"{spec.key}.npz"
                command = [
                    sys.executable,
                    __file__,
                    *shared,
                    "--worker",
                    spec.key,
                    "--worker-out",
                    str(result_file),
                ]
                subprocess.run(command, check=True)
                with np.load(result_file) as saved:
                    seconds[spec.name].append(float(saved["seconds"]))
                    scored = saved["topic"].size > 0
                    outputs[spec.name] = (saved["topic"], saved["sentiment"]) if scored else None
                    providers[spec.name] = [str(value) for value in saved["providers"]]
            print(f"round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return seconds, outputs, providers


def _rows(
    specs: list[PathSpec],
    seconds: dict[str, list[float]],
    outputs: dict[str, Scores | None],
    providers: dict[str, list[str]],
) -> tuple[list[dict[str, Any]], str]:
    """One result row per path (median rate, per-round ratios, agreement with (b)) and the (b) used."""
    rates = {spec.name: [spec.texts / s for s in seconds[spec.name]] for spec in specs}
    torch_names = [spec.name for spec in specs if spec.key.startswith("b")]
    best_b = max(torch_names, key=lambda name: median(rates[name]))
    reference = outputs[best_b]
    assert reference is not None
    name_a = specs[0].name
    rows: list[dict[str, Any]] = []
    for spec in specs:
        name = spec.name
        row: dict[str, Any] = {
            "name": name,
            "batch": spec.batch,
            "texts": spec.texts,
            "seconds_per_round": seconds[name],
            "messages_per_second": median(rates[name]),
            # Ratios per round (both paths measured minutes apart at most), then the median.
            "x_vs_a": median([r / a for r, a in zip(rates[name], rates[name_a], strict=True)]),
            "x_vs_b": median([r / b for r, b in zip(rates[name], rates[best_b], strict=True)]),
        }
        output = outputs[name]
        if providers[name] and output is not None:
            row["providers"] = providers[name]
            row["topic_agreement_with_b"] = float(np.mean(output[0].argmax(1) == reference[0].argmax(1)))
            row["sentiment_agreement_with_b"] = float(np.mean(output[1].argmax(1) == reference[1].argmax(1)))
        rows.append(row)
    return rows, best_b


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'path':<40}{'batch':>6}{'msg/s':>10}{'x (a)':>8}{'x (b)':>8}{'agree topic/sent':>20}")
    for row in rows:
        agreement = (
            f"{row['topic_agreement_with_b']:.4f}/{row['sentiment_agreement_with_b']:.4f}"
            if "topic_agreement_with_b" in row
            else ""
        )
        print(
            f"{row['name']:<40}{row['batch']:>6}{row['messages_per_second']:>10.1f}"
            f"{row['x_vs_a']:>8.2f}{row['x_vs_b']:>8.2f}{agreement:>20}"
        )


def parse_args() -> argparse.Namespace:
    """The command line (the orchestrator's and its workers')."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--train-dir",
        type=Path,
        default=None,
        help="training run of the shipped model (default: from its manifest)",
    )
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="shipped model (int8)")
    parser.add_argument(
        "--export-dir", type=Path, default=ROOT / "build" / "export", help="fp32/fp16 variants"
    )
    parser.add_argument(
        "--texts", type=int, default=1000, help=f"texts per path, 1 to {MAX_TEXTS} (default 1000)"
    )
    parser.add_argument(
        "--pipeline-texts", type=int, default=300, help="texts for the slow per-message baseline"
    )
    parser.add_argument(
        "--torch-batch-sizes", default="8,32", help="(b) is measured at each; ratios use the fastest"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def training_checkpoint(args: argparse.Namespace, manifest: dict[str, Any]) -> Path:
    """The PyTorch checkpoint behind the shipped model: --train-dir, else the run its manifest names."""
    train_dir = args.train_dir or ROOT / manifest["training"]["config"]["out_dir"]
    return Path(train_dir) / "checkpoint"


def check_args(args: argparse.Namespace) -> None:
    """Reject counts, batch sizes, model directory or output path that cannot work, before measuring."""
    if args.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, got {args.rounds}")
    if not 1 <= args.texts <= MAX_TEXTS:
        raise UsageError(f"--texts must be from 1 to {MAX_TEXTS}, got {args.texts}")
    if args.pipeline_texts < 1:
        raise UsageError(f"--pipeline-texts must be at least 1, got {args.pipeline_texts}")
    sizes = args.torch_batch_sizes.split(",")
    if not all(size.strip().isdigit() and int(size) >= 1 for size in sizes):
        raise UsageError(
            f"--torch-batch-sizes must be positive integers separated by commas, got {args.torch_batch_sizes!r}"
        )
    try:
        manifest = read_manifest(args.model_dir)
    except ModelIntegrityError as error:
        raise UsageError(f"--model-dir: {error}") from None
    check_out(args.out)
    # The PyTorch weights (90 MB) and the fp32 export stay out of the repository's 50 MB model budget.
    checkpoint = training_checkpoint(args, manifest)
    if not checkpoint.is_dir():
        raise UsageError(
            f"--train-dir: no PyTorch checkpoint at {checkpoint}: the PyTorch rows need the shipped "
            "model's training run; rebuild it with `make model` or pass --train-dir"
        )
    if not (args.export_dir / "manifest.json").is_file():
        raise UsageError(f"--export-dir: no exported model in {args.export_dir}: run `make model` first")


def main() -> int:
    """Measure every path in interleaved rounds, each run in its own process, and write the JSON results."""
    args = parse_args()
    if args.worker:
        return worker(args)
    try:
        check_args(args)
    except UsageError as error:
        print(f"model_throughput: error: {error}", file=sys.stderr)
        return 2
    return measure(args)


def measure(args: argparse.Namespace) -> int:
    """The measurement of checked arguments: JSON results and a table."""
    threads = os.cpu_count() or 1
    manifest = read_manifest(args.model_dir)
    texts = bench_texts(args.texts)
    lengths = [
        len(ids) for ids in encode_texts(load_tokenizer(args.model_dir, int(manifest["max_tokens"])), texts)
    ]
    specs = path_specs(args)
    shared = [
        *("--model-dir", str(args.model_dir), "--export-dir", str(args.export_dir)),
        *("--texts", str(args.texts), "--pipeline-texts", str(args.pipeline_texts)),
        *("--torch-batch-sizes", args.torch_batch_sizes),
        *(("--train-dir", str(args.train_dir)) if args.train_dir else ()),
    ]
    seconds, outputs, providers = _measure(specs, shared, args.rounds)
    rows, best_b = _rows(specs, seconds, outputs, providers)
    result = {
        "machine": {
            "cpus": threads,
            "platform": platform.platform(),
            "processor": platform.processor(),
            "gpu": cuda_usable(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model_version": manifest["version"],
        "texts": len(texts),
        "rounds": args.rounds,
        "reference_b": best_b,
        "sequence_length_tokens": {
            "mean": float(np.mean(lengths)),
            "p50": float(np.percentile(lengths, 50)),
            "p90": float(np.percentile(lengths, 90)),
            "p99": float(np.percentile(lengths, 99)),
            "max": int(max(lengths)),
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    _print_table(rows)
    print(f"sequence lengths (tokens): {result['sequence_length_tokens']}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
