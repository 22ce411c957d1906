"""End-to-end streaming throughput through the real tansu broker vs model-only throughput of the same Engine.

One run: writes bench/results/e2e.json and prints a table.
  1. model-only: Engine.predict on the texts in micro-batches of --max-batch (what the service sees);
  2. end-to-end: the texts pre-loaded into news.raw, the service (same Engine object) drains them;
     messages/s from partition assignment to the last acknowledged scored record;
     1 and 2 alternate for --rounds rounds, with a last model-only run after the final round, so
     the shared machine's load hits both alike; each round's end-to-end rate is divided by the
     better of the model-only runs either side of it, and the table gives medians;
  3. latency: produce at half the median end-to-end rate; produce time -> scored record time, p50/p99;
  4. peak RSS of this process (service + engine + bench clients).
Usage: python bench/e2e_throughput.py [--model DIR] [--messages 3000] [--max-batch 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.checks import check_out
from finsent.broker import EmbeddedBroker
from finsent.classify_stage import ClassifyStage, load_engine
from finsent.config import ServiceConfig, load_config
from finsent.errors import UsageError
from finsent.replay import Headline, live_message, load_headlines, paced, sigterm_as_interrupt
from model.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "e2e.json"
MAX_LATENCY_SECONDS = 3600.0


def model_only(engine: Engine, texts: list[str], max_batch: int) -> float:
    """Messages/s of Engine.predict over the texts in service-sized micro-batches (after a warm-up)."""
    engine.predict(texts[:max_batch])
    started = time.perf_counter()
    for start in range(0, len(texts), max_batch):
        engine.predict(texts[start : start + max_batch])
    return len(texts) / (time.perf_counter() - started)


def preload(bootstrap: str, headlines: list[Headline]) -> None:
    """Put every headline into news.raw before the service starts."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    for headline in headlines:
        producer.send("news.raw", value=json.dumps(live_message(headline, "bench")).encode())
    producer.flush(120)
    producer.close()


def end_to_end(service: ClassifyStage, count: int, timeout: float = 600.0) -> float:
    """Messages/s from assignment to the count-th acknowledged scored record."""
    thread = service.start_thread()
    deadline = time.monotonic() + timeout
    while not service.loop.ready:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("service did not join the group")
        time.sleep(0.01)
    started = time.perf_counter()
    while service.loop.stats["scored"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {service.loop.stats['scored']} of {count} scored")
        time.sleep(0.005)
    return count / (time.perf_counter() - started)


def latency(bootstrap: str, headlines: list[Headline], rate: float, seconds: float) -> dict[str, Any]:
    """Produce at `rate` for `seconds`; produce time -> scored record timestamp, in ms."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partitions = [
        TopicPartition("news.scored", p) for p in sorted(consumer.partitions_for_topic("news.scored"))
    ]
    consumer.assign(partitions)
    consumer.seek_to_end()
    for partition in partitions:
        consumer.position(partition)
    sent_at: dict[str, float] = {}
    samples: list[float] = []
    stop = threading.Event()

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        limit = int(rate * seconds)
        for number, headline in enumerate(paced(headlines, rate, loop=True, stop=stop)):
            if number >= limit:
                break
            message = live_message(headline, "bench-latency")
            sent_at[message["id"]] = time.time() * 1000.0
            producer.send("news.raw", value=json.dumps(message).encode())
        producer.flush(60)
        producer.close()

    feeder = threading.Thread(target=produce, daemon=True)
    feeder.start()
    expected = int(rate * seconds)
    deadline = time.monotonic() + seconds + 60
    while len(samples) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            for record in batch:
                message_id = json.loads(record.value)["id"]
                if message_id in sent_at:
                    samples.append(record.timestamp - sent_at[message_id])
    stop.set()
    feeder.join(10)
    consumer.close()
    values = np.array(samples) if samples else np.array([float("nan")])
    return {
        "rate_msg_per_s": round(rate, 1),
        "messages": len(samples),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "max_ms": round(float(values.max()), 1),
    }


def parse_args() -> argparse.Namespace:
    """The command line, checked: a bad value exits 2 with one line naming it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="model dir (default: FINSENT_MODEL_DIR or shipped)"
    )
    parser.add_argument(
        "--messages", type=int, default=3000, help="messages per throughput round (default 3000)"
    )
    parser.add_argument(
        "--max-batch", type=int, default=64, help="the service's micro-batch size (default 64)"
    )
    parser.add_argument(
        "--max-wait-ms", type=int, default=50, help="the service's micro-batch wait in ms (default 50)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating model-only / end-to-end rounds (default 3)"
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=20.0,
        help=f"seconds of the latency run, above 0 and at most {MAX_LATENCY_SECONDS:g} (default 20)",
    )
    parser.add_argument(
        "--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where the model runs (default cpu)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results file (default {RESULTS})")
    args = parser.parse_args()
    if args.rounds < 1 or args.messages < 1:
        raise UsageError("--rounds and --messages must be at least 1")
    seconds = args.latency_seconds
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_LATENCY_SECONDS):
        raise UsageError(
            f"--latency-seconds must be above 0 and at most {MAX_LATENCY_SECONDS:g}, got {seconds}"
        )
    check_out(args.out)
    return args


def bench_config(args: argparse.Namespace, bootstrap: str) -> ServiceConfig:
    """The service settings of the benchmark (bad values become UsageError naming the setting)."""
    return load_config(
        {
            "bootstrap_servers": bootstrap,
            "group_id": "bench",
            "metrics_port": 0,
            "metrics_host": "127.0.0.1",
            "model_dir": args.model,
            "device": args.device,
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
            "max_buffer": max(256, 4 * args.max_batch),
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "log_level": "WARNING",
        }
    )


def main() -> int:
    """Run the benchmark; a bad argument or model exits 2 with one line, Ctrl-C or SIGTERM stops the broker."""
    try:
        with sigterm_as_interrupt():
            return benchmark(parse_args())
    except UsageError as error:
        print(f"e2e_throughput: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("e2e_throughput: interrupted", file=sys.stderr)
        return 130


def benchmark(args: argparse.Namespace) -> int:
    """Measure, write the JSON results and print the table."""
    # Settings and model first: a bad --max-batch or --model fails before the broker starts.
    engine = load_engine(bench_config(args, "127.0.0.1:9092"))
    all_headlines = load_headlines(ROOT / "data" / "stock_tweets_stream_2020.csv")
    headlines = [all_headlines[i % len(all_headlines)] for i in range(args.messages)]
    texts = [headline.text for headline in headlines]
    with EmbeddedBroker() as broker:
        config = bench_config(args, broker.bootstrap)
        model_runs: list[float] = []
        e2e_runs: list[float] = []
        for round_number in range(args.rounds):
            model_runs.append(model_only(engine, texts, args.max_batch))
            preload(broker.bootstrap, headlines)
            # A fresh service per round resumes from the group's committed offsets: it reads only this round's texts.
            service = ClassifyStage(config, engine=engine)
            e2e_runs.append(end_to_end(service, len(headlines)))
            service.stop()
            print(
                f"  round {round_number + 1}/{args.rounds}: model-only {model_runs[-1]:,.0f} msg/s, "
                f"end-to-end {e2e_runs[-1]:,.0f} msg/s",
                flush=True,
            )
        model_runs.append(model_only(engine, texts, args.max_batch))
        # The CPU is shared: each round is compared with the better model-only run either side of it.
        shares = [e2e / max(model_runs[i], model_runs[i + 1]) for i, e2e in enumerate(e2e_runs)]
        model_rate = float(np.median(model_runs))
        e2e_rate = float(np.median(e2e_runs))
        share = float(np.median(shares))
        service = ClassifyStage(config, engine=engine)
        service.start_thread()
        while not service.loop.ready:
            time.sleep(0.05)
        lat = latency(broker.bootstrap, all_headlines, e2e_rate / 2, args.latency_seconds)
        service.stop()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {
        "bench": "e2e_throughput",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "model": {
            "version": engine.version,
            "variant": engine.variant,
            "provider": engine.providers[0],
        },
        "messages": len(headlines),
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "rounds": args.rounds,
        "model_only_msg_per_s": round(model_rate, 1),
        "model_only_runs_msg_per_s": [round(rate, 1) for rate in model_runs],
        "end_to_end_msg_per_s": round(e2e_rate, 1),
        "end_to_end_runs_msg_per_s": [round(rate, 1) for rate in e2e_runs],
        "end_to_end_share_of_model_only": round(share, 3),
        "end_to_end_share_runs": [round(value, 3) for value in shares],
        "latency_at_half_max_rate": lat,
        "peak_rss_mb": round(peak_rss_mb, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"model {result['model']['version']} ({result['model']['variant']}, {result['model']['provider']}), "
        f"{len(headlines)} messages, max_batch {args.max_batch}"
    )
    rows = [
        (f"model-only (Engine.predict), median of {len(model_runs)}", f"{model_rate:,.0f} msg/s"),
        (f"end-to-end through tansu, median of {len(e2e_runs)}", f"{e2e_rate:,.0f} msg/s"),
        ("end-to-end / model-only, median per round", f"{share:.0%}"),
        (f"latency p50 @ {lat['rate_msg_per_s']:g} msg/s", f"{lat['p50_ms']:,.0f} ms"),
        (f"latency p99 @ {lat['rate_msg_per_s']:g} msg/s", f"{lat['p99_ms']:,.0f} ms"),
        ("peak RSS", f"{peak_rss_mb:,.0f} MB"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
