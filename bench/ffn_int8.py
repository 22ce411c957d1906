"""Feed-forward output MatMuls in int8: speed and agreement of the ways tried, from one fp32 graph.

Each layer's feed-forward output MatMul reads the GELU output. The export (model/export.py)
quantises it with one scale per token in layers 1-5 and keeps layer 0's in float. This script
builds, from the same fp32 graph and calibration texts, int8 graphs that differ only there:
  float       all six stay float (the export before per-token scales)
  shipped     per token, layers 1-5 (what `finsent export` writes)
  per token   all six layers
  per run     ONNX Runtime dynamic quantisation, one activation scale per run, all six
and times them on dev texts in the engine's runs of 8, rounds interleaved. Agreement is with the
float variant. --layer-effect adds, per layer, how far quantising that layer alone moves the
probabilities on the calibration (training) texts, the measurement behind the export's choice.
Needs the fp32 graph of `finsent export` (build/export). Writes bench/results/ffn_int8.json.
Usage: python bench/ffn_int8.py [--export-dir build/export] [--texts 1000] [--rounds 3] [--layer-effect]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.graph_variants import Batches, compare, run_all, write_results
from model import DEFAULT_MODEL_DIR
from model.engine import OnnxSession
from model.export import (
    FLOAT_FFN_LAYERS,
    calibration_batches,
    dynamic_int8,
    ffn_output_matmuls,
    quantize_int8,
)
from model.manifest import VARIANT_FILES, read_manifest

RESULTS = Path(__file__).resolve().parent / "results" / "ffn_int8.json"
LAYERS = 6


def variants(fp32: Path, calibration: Batches, work: Path) -> dict[str, Path]:
    """The four int8 graphs, written under ``work``; the float one first (the reference)."""
    paths = {}
    for label, float_layers in (
        ("float (all six)", tuple(range(LAYERS))),
        ("shipped: per token, layers 1-5", FLOAT_FFN_LAYERS),
        ("per token, all six", ()),
    ):
        path = work / f"float_{len(float_layers)}.onnx"
        quantize_int8(fp32, path, calibration, float_layers=float_layers)
        paths[label] = path
    per_run = work / "per_run.onnx"
    float_graph = paths["float (all six)"]
    dynamic_int8(float_graph, per_run, nodes_to_quantize=ffn_output_matmuls(onnx.load(str(float_graph))))
    paths["per run, all six"] = per_run
    return paths


def layer_effect(fp32: Path, calibration: Batches, float_graph: Path, work: Path) -> list[dict[str, Any]]:
    """Per layer: mean |probability change| and argmax flips when only that layer goes per token."""
    reference = run_all(OnnxSession(float_graph, device="cpu"), calibration)
    rows = []
    for layer in range(LAYERS):
        path = work / f"layer_{layer}.onnx"
        others = [other for other in range(LAYERS) if other != layer]
        quantize_int8(fp32, path, calibration, float_layers=others)
        topic, sentiment = run_all(OnnxSession(path, device="cpu"), calibration)
        rows.append(
            {
                "layer": layer,
                "topic_mean_abs_diff": float(np.abs(topic - reference[0]).mean()),
                "sentiment_mean_abs_diff": float(np.abs(sentiment - reference[1]).mean()),
                "topic_flips": int((topic.argmax(1) != reference[0].argmax(1)).sum()),
                "sentiment_flips": int((sentiment.argmax(1) != reference[1].argmax(1)).sum()),
            }
        )
        print(f"layer {layer}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    """Build the variants, time them in interleaved rounds, write JSON, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="shipped model (texts, tokenizer)"
    )
    parser.add_argument("--export-dir", type=Path, default=Path("build/export"), help="holds the fp32 graph")
    parser.add_argument("--texts", type=int, default=1000, help="dev texts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--layer-effect", action="store_true", help="also measure each layer alone")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    fp32 = args.export_dir / VARIANT_FILES["fp32"]
    if not fp32.is_file():
        raise SystemExit(f"{fp32} not found: run `make model` or `finsent export` first")
    manifest = read_manifest(args.model_dir)
    calibration = calibration_batches(manifest["training"], args.model_dir)
    with tempfile.TemporaryDirectory() as work:
        paths = variants(fp32, calibration, Path(work))
        rows = compare(paths, args.model_dir, args.texts, args.rounds)
        effects = (
            layer_effect(fp32, calibration, next(iter(paths.values())), Path(work))
            if args.layer_effect
            else []
        )
    pytorch_agreement = manifest["parity"]["int8"]
    write_results(
        args, manifest, rows, shipped_agreement_with_pytorch=pytorch_agreement, layer_effect=effects
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
