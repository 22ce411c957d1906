"""Does keeping the residual Add + LayerNormalization unfused pay on CPU? The shipped graph both ways.

ONNX Runtime fuses a residual Add followed by LayerNormalization into SkipLayerNormalization when
it loads a graph; the engine turns that fusion off on CPU (model/engine.py, CPU_DISABLED_FUSIONS).
This script times the shipped int8 graph as the engine loads it against the same graph with the
fusion applied (ONNX Runtime's own offline-optimised copy), on dev texts in the engine's runs of 8.
Needs no PyTorch checkpoint. Writes bench/results/cpu_graph.json.
Usage: python bench/cpu_graph.py [--texts 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.graph_variants import compare, write_results
from model import DEFAULT_MODEL_DIR
from model.manifest import read_manifest

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_graph.json"


def fused_copy(graph: Path, out: Path) -> dict[str, int]:
    """Write ONNX Runtime's CPU-optimised copy of graph (all fusions on); returns its fused-op counts."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    counts = Counter(node.op_type for node in onnx.load(str(out)).graph.node)
    return {op: counts[op] for op in ("SkipLayerNormalization", "LayerNormalization")}


def main() -> int:
    """Time both loads in interleaved rounds, write JSON, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--texts", type=int, default=1000, help="dev texts")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    manifest = read_manifest(args.model_dir)
    shipped = args.model_dir / manifest["variants"]["int8"]
    with tempfile.TemporaryDirectory() as work:
        fused = Path(work) / "fused.onnx"
        fused_ops = fused_copy(shipped, fused)
        if not fused_ops["SkipLayerNormalization"]:
            raise SystemExit(f"ONNX Runtime fused no SkipLayerNormalization in {shipped}: nothing to compare")
        graphs = {
            "shipped: Add + LayerNormalization (engine on CPU)": shipped,
            "SkipLayerNormalization fused": fused,
        }
        rows = compare(graphs, args.model_dir, args.texts, args.rounds)
    write_results(args, manifest, rows, onnxruntime=ort.__version__, fused_copy_ops=fused_ops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
