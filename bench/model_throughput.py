"""Model throughput on this machine: HF pipeline vs PyTorch batched vs ONNX fp32 / int8 (+ GPU).

One run, same texts: every path is timed once per round, rounds interleaved so that the shared
machine's load hits all paths alike; medians of rates and of per-round ratios are reported. Writes
bench/results/model_throughput.json and prints a table.
Usage: python bench/model_throughput.py [--train-dir build/soup] [--export-dir build/export]
Needs the PyTorch checkpoint (`make model` or `finsent train`) for the PyTorch rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hf_pipeline import MultiTaskPipeline
from model import DEFAULT_MODEL_DIR, Engine, cuda_usable
from model.batching import length_sorted_batches, pad_batch
from model.calibration import softmax
from model.manifest import read_manifest
from model.tokenization import encode_texts, load_tokenizer
from model.train import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "model_throughput.json"


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


def main() -> int:
    """Measure every path in interleaved rounds and write the JSON results."""
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
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument(
        "--pipeline-texts", type=int, default=300, help="texts for the slow per-message baseline"
    )
    parser.add_argument(
        "--torch-batch-sizes", default="8,32", help="(b) is measured at each; ratios use the fastest"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    manifest = read_manifest(args.model_dir)
    temperatures = manifest["temperatures"]
    max_tokens = int(manifest["max_tokens"])
    texts = bench_texts(args.texts)
    tokenizer = load_tokenizer(args.model_dir, max_tokens)
    token_ids = encode_texts(tokenizer, texts)
    lengths = [len(ids) for ids in token_ids]
    train_dir = args.train_dir or ROOT / manifest["training"]["config"]["out_dir"]
    if not (train_dir / "checkpoint").is_dir():
        # The PyTorch weights (90 MB) stay out of the repository's 50 MB model budget.
        print(
            f"error: no PyTorch checkpoint at {train_dir / 'checkpoint'}: the PyTorch rows need the "
            "shipped model's training run; rebuild it with `make model` or pass --train-dir",
            file=sys.stderr,
        )
        return 2
    network = load_checkpoint(train_dir / "checkpoint")

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
    subset = texts[: args.pipeline_texts]

    def per_message() -> Scores | None:
        with torch.inference_mode():
            for text in subset:
                pipe(text)
        return None

    def torch_batched(batch_size: int) -> Callable[[], Scores]:
        def run() -> Scores:
            topic = np.zeros((len(texts), 20), dtype=np.float32)
            sentiment = np.zeros((len(texts), 3), dtype=np.float32)
            with torch.inference_mode():
                for batch in length_sorted_batches(lengths, batch_size):
                    ids, mask = pad_batch([token_ids[i] for i in batch])
                    t, s = network(torch.from_numpy(ids), torch.from_numpy(mask))
                    topic[batch] = softmax(t.numpy(), temperatures["topic"])
                    sentiment[batch] = softmax(s.numpy(), temperatures["sentiment"])
            return topic, sentiment

        return run

    # name, batch, texts, callable, engine (for providers); every path runs once per round.
    paths: list[tuple[str, int, int, Callable[[], Scores | None], Engine | None]] = [
        ("(a) HF pipeline, PyTorch, per message", 1, len(subset), per_message, None)
    ]
    for size in (int(value) for value in args.torch_batch_sizes.split(",")):
        paths.append((f"(b) PyTorch batched, batch {size}", size, len(texts), torch_batched(size), None))
    engines = [
        ("(c) ONNX fp32", args.export_dir, "fp32", "cpu"),
        ("(d) ONNX int8", args.model_dir, "int8", "cpu"),
    ]
    if cuda_usable():
        engines.append(("(e) ONNX Runtime CUDA fp16", args.export_dir, "fp16", "cuda"))
    for name, directory, variant, device in engines:
        if not (directory / "manifest.json").is_file():
            print(f"skipping {name}: no model in {directory}", file=sys.stderr)
            continue
        # The engine's own defaults: the run size and concurrency the service uses.
        engine = Engine(directory, variant=variant, device=device)  # type: ignore[arg-type]

        def run_engine(engine: Engine = engine) -> Scores:
            return engine.probabilities(texts)

        paths.append((name, engine.batch_size, len(texts), run_engine, engine))

    outputs: dict[str, Scores | None] = {name: run() for name, _, _, run, _ in paths}  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name, *_ in paths}
    for round_index in range(args.rounds):
        for name, _, _, run, _ in paths:
            started = time.perf_counter()
            outputs[name] = run()
            seconds[name].append(time.perf_counter() - started)
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    rates = {name: [count / s for s in seconds[name]] for name, _, count, _, _ in paths}
    torch_names = [name for name, *_ in paths if name.startswith("(b)")]
    best_b = max(torch_names, key=lambda name: median(rates[name]))
    reference = outputs[best_b]
    assert reference is not None
    name_a = paths[0][0]
    rows: list[dict[str, Any]] = []
    for name, batch, count, _, path_engine in paths:
        row: dict[str, Any] = {
            "name": name,
            "batch": batch,
            "texts": count,
            "seconds_per_round": seconds[name],
            "messages_per_second": median(rates[name]),
            # Ratios per round (both paths measured minutes apart at most), then the median.
            "x_vs_a": median([r / a for r, a in zip(rates[name], rates[name_a], strict=True)]),
            "x_vs_b": median([r / b for r, b in zip(rates[name], rates[best_b], strict=True)]),
        }
        output = outputs[name]
        if path_engine is not None and output is not None:
            row["providers"] = path_engine.providers
            row["topic_agreement_with_b"] = float(np.mean(output[0].argmax(1) == reference[0].argmax(1)))
            row["sentiment_agreement_with_b"] = float(np.mean(output[1].argmax(1) == reference[1].argmax(1)))
        rows.append(row)
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
    print(f"sequence lengths (tokens): {result['sequence_length_tokens']}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
