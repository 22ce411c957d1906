"""Shared harness for graph-variant benchmarks: same dev texts, engine-sized runs, interleaved rounds.

Each variant is timed once per round, rounds interleaved so the shared machine's load hits all alike,
each timing in a process of its own with one session (in one shared process, another session's idle
thread pool slowed the timed one by up to a third, at random). The first variant is the reference
for speed ratios and argmax agreement.
Worker use (internal): python bench/graph_variants.py GRAPH MODEL_DIR TEXTS OUT.npz
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.batching import length_sorted_batches, pad_batch
from model.data import splits_of_run
from model.engine import CPU_BATCH_SIZE, OnnxSession
from model.manifest import read_manifest
from model.tokenization import encode_texts, load_tokenizer

Batches = list[tuple[np.ndarray, np.ndarray]]
WARM_UP_RUNS = 8


def dev_batches(model_dir: Path, manifest: dict[str, Any], count: int) -> tuple[int, Batches]:
    """(text count, padded length-sorted runs of the engine's CPU size) over a sample of dev texts."""
    dev = splits_of_run(manifest["training"]["config"]).dev
    texts = dev["text"].sample(n=min(count, len(dev)), random_state=0).tolist()
    token_ids = encode_texts(load_tokenizer(model_dir, int(manifest["max_tokens"])), texts)
    runs = length_sorted_batches([len(ids) for ids in token_ids], CPU_BATCH_SIZE)
    return len(texts), [pad_batch([token_ids[i] for i in run]) for run in runs]


def run_all(session: OnnxSession, batches: Batches) -> tuple[np.ndarray, np.ndarray]:
    """Both heads' probabilities over every batch, in batch order."""
    topic, sentiment = zip(*(session.run(ids, mask) for ids, mask in batches), strict=True)
    return np.concatenate(topic), np.concatenate(sentiment)


def time_graph(graph: Path, model_dir: Path, texts: int, out: Path) -> None:
    """Worker: one session, a warm-up run, one timed pass over every batch; seconds and outputs to out."""
    batches = dev_batches(model_dir, read_manifest(model_dir), texts)[1]
    session = OnnxSession(graph, device="cpu")
    run_all(session, batches[:WARM_UP_RUNS])
    started = time.perf_counter()
    topic, sentiment = run_all(session, batches)
    np.savez(out, seconds=np.array(time.perf_counter() - started), topic=topic, sentiment=sentiment)


def compare(graphs: dict[str, Path], model_dir: Path, texts: int, rounds: int) -> list[dict[str, Any]]:
    """Median msg/s, median per-round speed ratio and argmax agreement of each graph vs the first."""
    seconds: dict[str, list[float]] = {label: [] for label in graphs}
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as work:
        for round_index in range(rounds):
            for label, graph in graphs.items():
                out = Path(work) / "timing.npz"
                command = [sys.executable, __file__, str(graph), str(model_dir), str(texts), str(out)]
                subprocess.run(command, check=True)
                with np.load(out) as saved:
                    seconds[label].append(float(saved["seconds"]))
                    outputs[label] = (saved["topic"], saved["sentiment"])
            print(f"round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
    count = len(next(iter(outputs.values()))[0])
    reference_label = next(iter(graphs))
    reference = outputs[reference_label]
    rows: list[dict[str, Any]] = []
    for label, (topic, sentiment) in outputs.items():
        ratios = [base / s for s, base in zip(seconds[label], seconds[reference_label], strict=True)]
        rows.append(
            {
                "variant": label,
                "messages_per_second": float(np.median([count / s for s in seconds[label]])),
                "x_vs_reference": float(np.median(ratios)),
                "topic_agreement": float(np.mean(topic.argmax(1) == reference[0].argmax(1))),
                "sentiment_agreement": float(np.mean(sentiment.argmax(1) == reference[1].argmax(1))),
                "max_prob_diff": float(
                    max(np.abs(topic - reference[0]).max(), np.abs(sentiment - reference[1]).max())
                ),
            }
        )
    return rows


def write_results(
    args: argparse.Namespace, manifest: dict[str, Any], rows: list[dict[str, Any]], **extra: Any
) -> None:
    """Write the rows, the run's settings and extra fields as JSON to args.out, then print the table."""
    result = {
        "model_version": manifest["version"],
        "texts": args.texts,
        "run_size": CPU_BATCH_SIZE,
        "rounds": args.rounds,
        **extra,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print_table(rows)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The rows as a fixed-width table on stdout."""
    width = max(len(row["variant"]) for row in rows) + 2
    print(f"{'variant':<{width}}{'msg/s':>8}{'x first':>9}{'agree topic/sent':>20}{'max diff':>10}")
    for row in rows:
        agreement = f"{row['topic_agreement']:.3f}/{row['sentiment_agreement']:.3f}"
        print(
            f"{row['variant']:<{width}}{row['messages_per_second']:>8.1f}{row['x_vs_reference']:>9.2f}"
            f"{agreement:>20}{row['max_prob_diff']:>10.3f}"
        )


if __name__ == "__main__":
    time_graph(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
