"""Engine run size on stream micro-batches: messages/s when each micro-batch is cut into length-sorted runs.

The service hands the engine micro-batches in arrival order; one padded run per micro-batch pays for the
longest text in it. This measures the same texts, the same micro-batches, with several run sizes, each
two ways: runs one after another with every operator split across the cores ("operators"), and one run
per core at once with single-threaded operators ("runs", the engine's default on CPU). Interleaved
rounds, medians. Writes bench/results/engine_batching.json. Usage: python bench/engine_batching.py [--texts N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from finsent.replay import load_headlines
from model import DEFAULT_MODEL_DIR, Engine

ROOT = Path(__file__).resolve().parents[1]
STREAM = ROOT / "data" / "stock_tweets_stream_2020.csv"
RESULTS = ROOT / "bench" / "results" / "engine_batching.json"


def throughput(engine: Engine, texts: list[str], micro_batch: int) -> float:
    """Messages/s over one pass of the texts in arrival-order micro-batches."""
    started = time.perf_counter()
    for start in range(0, len(texts), micro_batch):
        engine.predict(texts[start : start + micro_batch])
    return len(texts) / (time.perf_counter() - started)


def main() -> int:
    """Measure each run size and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--micro-batch", type=int, default=64, help="the service's max_batch")
    parser.add_argument("--run-sizes", default="64,32,16,8,4")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    texts = [headline.text for headline in load_headlines(STREAM)][: args.texts]
    engines = {
        (size, parallel): Engine(
            DEFAULT_MODEL_DIR,
            variant="int8",
            device="cpu",
            batch_size=size,
            parallel_runs=None if parallel else 1,
        )
        for size in (int(value) for value in args.run_sizes.split(","))
        for parallel in (False, True)
    }
    rates: dict[tuple[int, bool], list[float]] = {key: [] for key in engines}
    for engine in engines.values():
        engine.predict(texts[: args.micro_batch])  # warm-up
    for round_index in range(args.rounds):
        for key, engine in engines.items():
            rates[key].append(throughput(engine, texts, args.micro_batch))
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    rows = []
    for (size, parallel), measured in rates.items():
        mode = "runs" if parallel else "operators"
        rate = float(statistics.median(measured))
        rows.append({"run_size": size, "parallel": mode, "msg_per_s": round(rate, 1)})
        print(f"micro-batch {args.micro_batch}, runs of {size:>3}, cores split {mode:<9}: {rate:7.1f} msg/s")
    result = {
        "bench": "engine_batching",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "texts": len(texts),
        "source": STREAM.name,
        "micro_batch": args.micro_batch,
        "rounds": args.rounds,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
