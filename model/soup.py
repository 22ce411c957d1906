"""`finsent soup`: average the weights of fine-tuning runs that share a base ("model soup").

Runs fine-tuned from the same pretrained weights stay in one basin, so the uniform average of
their weights is itself a good model, often better than each run (Wortsman et al., ICML 2022).
The soup is calibrated and reported like a training run, so `finsent export` takes it as is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import REPORT_FILE, earlier_stages, load_checkpoint, save_checkpoint
from model.data import data_dir_of, recorded_data_dir, splits_of_run
from model.dev_eval import calibrate_on_dev
from model.progress import log_to_stderr
from model.tokenization import encode_texts, load_tokenizer

# Settings every ingredient must share: they decide the dev split and what the network reads.
SHARED_SETTINGS = ("data_dir", "dev_percent", "seed", "excluded_sources", "max_tokens")


def _setting(config: dict[str, Any], key: str) -> Any:
    value = config.get(key)
    return recorded_data_dir(data_dir_of(str(value))) if key == "data_dir" else value


def _summed_label_distribution(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """{"label_distribution": per-task label counts summed over the ingredients}, or {} if one lacks them.

    Serving compares its predictions with this (drift); an image ships no training data to recount.
    """
    distributions = [report["data"].get("label_distribution") for report in reports]
    if not all(isinstance(distribution, dict) for distribution in distributions):
        return {}
    tasks = distributions[0].keys()
    return {
        "label_distribution": {
            task: [sum(counts) for counts in zip(*(d[task] for d in distributions), strict=True)]
            for task in tasks
        }
    }


def soup(
    checkpoints: list[Path], out_dir: Path, log: Callable[[str], None] = log_to_stderr
) -> dict[str, Any]:
    """Average the checkpoints' weights, calibrate on dev, save checkpoint and report to out_dir."""
    if len(checkpoints) < 2:
        raise ValueError("a soup needs at least two checkpoints")
    reports = [json.loads((checkpoint.parent / REPORT_FILE).read_text()) for checkpoint in checkpoints]
    first = reports[0]["config"]
    for checkpoint, report in zip(checkpoints[1:], reports[1:], strict=True):
        differing = [
            key for key in SHARED_SETTINGS if _setting(report["config"], key) != _setting(first, key)
        ]
        if differing:
            raise ValueError(f"{checkpoint} differs from {checkpoints[0]} in {', '.join(differing)}")
    started = time.time()
    network = load_checkpoint(checkpoints[0])
    states = [network.state_dict()] + [
        load_checkpoint(checkpoint).state_dict() for checkpoint in checkpoints[1:]
    ]
    averaged = {
        name: torch.stack([state[name] for state in states]).mean(dim=0)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in states[0].items()
    }
    network.load_state_dict(averaged)
    log(f"averaged {len(checkpoints)} checkpoints")

    dev_rows = splits_of_run(first).dev
    tokenizer = load_tokenizer(checkpoints[0], int(first["max_tokens"]))
    dev_ids = encode_texts(tokenizer, dev_rows["text"].tolist())
    temperatures, uncalibrated, calibrated = calibrate_on_dev(network, dev_ids, dev_rows)
    log(
        f"soup dev: topic accuracy {calibrated['topic']['accuracy']:.4f}, sentiment accuracy "
        f"{calibrated['sentiment']['accuracy']:.4f}"
    )

    checkpoint_dir = save_checkpoint(network, tokenizer, out_dir)
    by_source: dict[str, int] = {}
    for report in reports:
        for source, count in report["data"]["train_rows_by_source"].items():
            by_source[source] = max(by_source.get(source, 0), count)
    report = {
        "config": {
            **{key: _setting(first, key) for key in SHARED_SETTINGS},
            "out_dir": str(out_dir),
            "soup_of": [str(checkpoint) for checkpoint in checkpoints],
        },
        "data": {
            "train_rows": sum(by_source.values()),
            "train_rows_by_source": by_source,
            "dev_rows": len(dev_rows),
            "dev_rows_by_source": dev_rows.groupby("source").size().to_dict(),
            "dev_topic_rows": calibrated["topic"]["support"],
            "dev_sentiment_rows": calibrated["sentiment"]["support"],
            **_summed_label_distribution(reports),
        },
        "ingredients_dev": [
            {
                "checkpoint": str(checkpoint),
                "topic_accuracy": ingredient["dev"]["topic"]["accuracy"],
                "sentiment_accuracy": ingredient["dev"]["sentiment"]["accuracy"],
            }
            for checkpoint, ingredient in zip(checkpoints, reports, strict=True)
        ],
        "earlier_stages": earlier_stages(*checkpoints),
        "history": [],
        "temperatures": {"topic": temperatures[0], "sentiment": temperatures[1]},
        "dev_uncalibrated": uncalibrated,
        "dev": calibrated,
        "steps": 0,
        "train_seconds": 0.0,
        "total_seconds": round(time.time() - started, 1),
        "environment": reports[0]["environment"],
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2))
    log(f"saved checkpoint to {checkpoint_dir} and report to {out_dir / REPORT_FILE}")
    return report
