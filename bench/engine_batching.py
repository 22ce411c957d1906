"""Engine run size on stream micro-batches: messages/s when each micro-batch is cut into length-sorted runs.

The service hands the engine micro-batches in arrival order; one padded run per micro-batch pays for the
longest text in it. This measures the same texts, the same micro-batches, with several run sizes, and
writes bench/results/engine_batching.json. Usage: python bench/engine_batching.py [--texts N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from finsent.replay import load_headlines
from model import DEFAULT_MODEL_DIR, Engine

ROOT = Path(__file__).resolve().parents[1]
STREAM = ROOT / "data" / "stock_tweets_stream_2020.csv"
RESULTS = ROOT / "bench" / "results" / "engine_batching.json"


def throughput(engine: Engine, texts: list[str], micro_batch: int, repeats: int) -> float:
    """Best messages/s over `repeats` passes of the texts in arrival-order micro-batches."""
    engine.predict(texts[:micro_batch])  # warm-up
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(texts), micro_batch):
            engine.predict(texts[start : start + micro_batch])
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best


def main() -> int:
    """Measure each run size and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--micro-batch", type=int, default=64, help="the service's max_batch")
    parser.add_argument("--run-sizes", default="64,32,16,8,4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    texts = [headline.text for headline in load_headlines(STREAM)][: args.texts]
    rows = []
    for size in (int(value) for value in args.run_sizes.split(",")):
        engine = Engine(DEFAULT_MODEL_DIR, variant="int8", device="cpu", batch_size=size)
        rate = throughput(engine, texts, args.micro_batch, args.repeats)
        rows.append({"run_size": size, "msg_per_s": round(rate, 1)})
        print(f"micro-batch {args.micro_batch}, runs of {size:>3}: {rate:7.1f} msg/s", flush=True)
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
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
