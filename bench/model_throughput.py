"""Model throughput on this machine: HF pipeline vs PyTorch batched vs ONNX fp32 / int8 (+ GPU).

One run, same texts, writes bench/results/model_throughput.json and prints a table.
Usage: python bench/model_throughput.py [--train-dir build/train] [--export-dir build/export]
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


def timed(
    run: Callable[[], tuple[np.ndarray, np.ndarray]], repeats: int
) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """Best wall time over repeats (after one warm-up run) and the last output."""
    output = run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        output = run()
        best = min(best, time.perf_counter() - started)
    return best, output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-dir", type=Path, default=ROOT / "build" / "train")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="shipped model (int8)")
    parser.add_argument(
        "--export-dir", type=Path, default=ROOT / "build" / "export", help="fp32/fp16 variants"
    )
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument(
        "--pipeline-texts", type=int, default=300, help="texts for the slow per-message baseline"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    manifest = read_manifest(args.model_dir)
    temperatures = manifest["temperatures"]
    max_tokens = int(manifest["max_tokens"])
    texts = bench_texts(args.texts)
    tokenizer = load_tokenizer(args.model_dir, max_tokens)
    lengths = [len(ids) for ids in encode_texts(tokenizer, texts)]
    network = load_checkpoint(args.train_dir / "checkpoint")
    rows: list[dict[str, Any]] = []

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
    started = time.perf_counter()
    with torch.inference_mode():
        for text in subset:
            pipe(text)
    elapsed = time.perf_counter() - started
    rows.append(
        {
            "name": "(a) HF pipeline, PyTorch, per message",
            "batch": 1,
            "texts": len(subset),
            "seconds": elapsed,
        }
    )

    token_ids = encode_texts(tokenizer, texts)

    def torch_batched() -> tuple[np.ndarray, np.ndarray]:
        topic = np.zeros((len(texts), 20), dtype=np.float32)
        sentiment = np.zeros((len(texts), 3), dtype=np.float32)
        with torch.inference_mode():
            for batch in length_sorted_batches(lengths, args.batch_size):
                ids, mask = pad_batch([token_ids[i] for i in batch])
                t, s = network(torch.from_numpy(ids), torch.from_numpy(mask))
                topic[batch] = softmax(t.numpy(), temperatures["topic"])
                sentiment[batch] = softmax(s.numpy(), temperatures["sentiment"])
        return topic, sentiment

    seconds, reference = timed(torch_batched, args.repeats)
    rows.append(
        {"name": "(b) PyTorch batched", "batch": args.batch_size, "texts": len(texts), "seconds": seconds}
    )

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
        engine = Engine(directory, variant=variant, device=device, batch_size=args.batch_size)  # type: ignore[arg-type]

        def run_engine(engine: Engine = engine) -> tuple[np.ndarray, np.ndarray]:
            return engine.probabilities(texts)

        seconds, output = timed(run_engine, args.repeats)
        rows.append(
            {
                "name": name,
                "batch": args.batch_size,
                "texts": len(texts),
                "seconds": seconds,
                "providers": engine.providers,
                "topic_agreement_with_b": float(np.mean(output[0].argmax(1) == reference[0].argmax(1))),
                "sentiment_agreement_with_b": float(np.mean(output[1].argmax(1) == reference[1].argmax(1))),
            }
        )

    for row in rows:
        row["messages_per_second"] = row["texts"] / row["seconds"]
    baseline_a = rows[0]["messages_per_second"]
    baseline_b = rows[1]["messages_per_second"]
    for row in rows:
        row["x_vs_a"] = row["messages_per_second"] / baseline_a
        row["x_vs_b"] = row["messages_per_second"] / baseline_b
    result = {
        "machine": {
            "cpus": threads,
            "platform": platform.platform(),
            "processor": platform.processor(),
            "gpu": cuda_usable(),
        },
        "model_version": manifest["version"],
        "texts": len(texts),
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
