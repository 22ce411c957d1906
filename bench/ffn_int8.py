"""Can the feed-forward output MatMuls go int8 too? Speed and agreement of three ways, on the shipped graph.

The shipped int8 graph keeps each layer's feed-forward output MatMul in float (model/export.py).
This script rewrites those six MatMuls of the shipped graph and compares each rewrite with the
shipped graph itself on dev texts, in the engine's runs of 8, interleaving the timed rounds:
  per-tensor  ONNX Runtime dynamic quantisation (one activation scale per run)
  per-token   one activation scale per token (ZeroQuant-style), int8 weights per output column
  per-token, layers 3-5 only
Agreement here is with the shipped int8 graph, whose own agreement with PyTorch is in its manifest.
Needs no PyTorch checkpoint. Writes bench/results/ffn_int8.json.
Usage: python bench/ffn_int8.py [--texts 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import DEFAULT_MODEL_DIR
from model.batching import length_sorted_batches, pad_batch
from model.data import splits_of_run
from model.engine import CPU_BATCH_SIZE, OnnxSession
from model.export import dynamic_int8, ffn_output_matmuls
from model.manifest import read_manifest
from model.tokenization import encode_texts, load_tokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "ffn_int8.json"
Batches = list[tuple[np.ndarray, np.ndarray]]


def per_token_int8(model: onnx.ModelProto, node_names: Iterable[str]) -> None:
    """Replace each named MatMul (float input, weight initialiser) by a per-token int8 MatMul, in place.

    Each token's activations get their own scale max|x|/127; the weight is int8 per output column.
    The int8 input is stored as uint8 with zero point 128, the fast u8 x s8 path of ONNX Runtime.
    """
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(1.0 / 127, np.float32), "per_token_inv127"),
            numpy_helper.from_array(np.array(1e-8, np.float32), "per_token_eps"),
            numpy_helper.from_array(np.array(1.0, np.float32), "per_token_one"),
            numpy_helper.from_array(np.array(128, np.uint8), "per_token_zero_point"),
        ]
    )
    for name in node_names:
        node = next(node for node in graph.node if node.name == name)
        activation, weight_name = node.input
        weight = numpy_helper.to_array(initializers[weight_name]).astype(np.float32)
        weight_scale = np.maximum(np.abs(weight).max(axis=0), 1e-8) / 127
        quantized = np.clip(np.round(weight / weight_scale), -127, 127).astype(np.int8)
        p = f"{name}_per_token"
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantized, f"{p}_weight"),
                numpy_helper.from_array(weight_scale.astype(np.float32), f"{p}_weight_scale"),
            ]
        )
        replacement = [
            helper.make_node("Abs", [activation], [f"{p}_abs"], name=f"{p}_Abs"),
            helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_max"], axes=[-1], keepdims=1, name=f"{p}_Max"),
            helper.make_node("Max", [f"{p}_max", "per_token_eps"], [f"{p}_max_safe"], name=f"{p}_Floor"),
            helper.make_node("Mul", [f"{p}_max_safe", "per_token_inv127"], [f"{p}_scale"], name=f"{p}_Scale"),
            helper.make_node("Div", [activation, f"{p}_scale"], [f"{p}_scaled"], name=f"{p}_Div"),
            helper.make_node(
                "QuantizeLinear",
                [f"{p}_scaled", "per_token_one", "per_token_zero_point"],
                [f"{p}_q"],
                name=f"{p}_Quantize",
            ),
            helper.make_node(
                "MatMulInteger",
                [f"{p}_q", f"{p}_weight", "per_token_zero_point"],
                [f"{p}_int32"],
                name=f"{p}_MatMulInteger",
            ),
            helper.make_node("Cast", [f"{p}_int32"], [f"{p}_float"], to=TensorProto.FLOAT, name=f"{p}_Cast"),
            helper.make_node(
                "Mul", [f"{p}_float", f"{p}_weight_scale"], [f"{p}_by_weight"], name=f"{p}_WeightScale"
            ),
            helper.make_node(
                "Mul", [f"{p}_by_weight", f"{p}_scale"], list(node.output), name=f"{p}_TokenScale"
            ),
        ]
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new_node in enumerate(replacement):
            graph.node.insert(position + offset, new_node)
        graph.initializer.remove(initializers[weight_name])


def variants(shipped: Path, work: Path) -> dict[str, Path]:
    """The shipped graph and its three rewrites, written under ``work``."""
    model = onnx.load(str(shipped))
    names = ffn_output_matmuls(model)
    paths = {"shipped (FFN output float)": shipped}
    per_tensor = work / "per_tensor.onnx"
    dynamic_int8(shipped, per_tensor, nodes_to_quantize=names)
    paths["per-tensor, all 6 layers"] = per_tensor
    for label, chosen in (("per-token, all 6 layers", names), ("per-token, layers 3-5", names[3:])):
        rewritten = onnx.ModelProto()
        rewritten.CopyFrom(model)
        per_token_int8(rewritten, chosen)
        path = work / f"per_token_{len(chosen)}.onnx"
        onnx.save(rewritten, str(path))
        paths[label] = path
    return paths


def run_all(session: OnnxSession, batches: Batches) -> tuple[np.ndarray, np.ndarray]:
    """Both heads' probabilities over every batch, in batch order."""
    topic, sentiment = zip(*(session.run(ids, mask) for ids, mask in batches), strict=True)
    return np.concatenate(topic), np.concatenate(sentiment)


def main() -> int:
    """Build the rewrites, time them in interleaved rounds, write JSON, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--texts", type=int, default=1000, help="dev texts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    manifest = read_manifest(args.model_dir)
    dev = splits_of_run(manifest["training"]["config"]).dev
    texts = dev["text"].sample(n=min(args.texts, len(dev)), random_state=0).tolist()
    token_ids = encode_texts(load_tokenizer(args.model_dir, int(manifest["max_tokens"])), texts)
    runs = length_sorted_batches([len(ids) for ids in token_ids], CPU_BATCH_SIZE)
    batches = [pad_batch([token_ids[i] for i in run]) for run in runs]

    with tempfile.TemporaryDirectory() as work:
        paths = variants(args.model_dir / manifest["variants"]["int8"], Path(work))
        sessions = {label: OnnxSession(path, device="cpu") for label, path in paths.items()}
        outputs = {label: run_all(session, batches) for label, session in sessions.items()}
        seconds: dict[str, list[float]] = {label: [] for label in sessions}
        for round_index in range(args.rounds):
            for label, session in sessions.items():
                started = time.perf_counter()
                run_all(session, batches)
                seconds[label].append(time.perf_counter() - started)
            print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    shipped_label = next(iter(sessions))
    reference = outputs[shipped_label]
    rows: list[dict[str, Any]] = []
    for label, (topic, sentiment) in outputs.items():
        rows.append(
            {
                "variant": label,
                "messages_per_second": float(np.median([len(texts) / s for s in seconds[label]])),
                "x_vs_shipped": float(
                    np.median(
                        [base / s for s, base in zip(seconds[label], seconds[shipped_label], strict=True)]
                    )
                ),
                "topic_agreement": float(np.mean(topic.argmax(1) == reference[0].argmax(1))),
                "sentiment_agreement": float(np.mean(sentiment.argmax(1) == reference[1].argmax(1))),
                "max_prob_diff": float(
                    max(np.abs(topic - reference[0]).max(), np.abs(sentiment - reference[1]).max())
                ),
            }
        )
    result = {
        "model_version": manifest["version"],
        "texts": len(texts),
        "run_size": CPU_BATCH_SIZE,
        "rounds": args.rounds,
        "shipped_agreement_with_pytorch": manifest["parity"]["int8"],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{'variant':<30}{'msg/s':>8}{'x shipped':>11}{'agree topic/sent':>20}{'max diff':>10}")
    for row in rows:
        agreement = f"{row['topic_agreement']:.3f}/{row['sentiment_agreement']:.3f}"
        print(
            f"{row['variant']:<30}{row['messages_per_second']:>8.1f}{row['x_vs_shipped']:>11.2f}"
            f"{agreement:>20}{row['max_prob_diff']:>10.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
