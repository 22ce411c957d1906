"""The per-token int8 rewrite measured by bench/ffn_int8.py computes the same MatMul, within int8 error."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bench.ffn_int8 import per_token_int8

ROWS, INNER, OUTER = 5, 64, 16


def matmul_graph(weight: np.ndarray) -> onnx.ModelProto:
    """x [batch, rows, INNER] @ weight [INNER, OUTER]."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"], name="layer.0/output/dense/MatMul")],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", ROWS, INNER])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", ROWS, OUTER])],
        [numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, path: Path, x: np.ndarray) -> np.ndarray:
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output: np.ndarray = session.run(None, {"x": x})[0]
    return output


def test_per_token_matmul_matches_float_within_int8_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(INNER, OUTER)).astype(np.float32)
    x = rng.normal(size=(2, ROWS, INNER)).astype(np.float32)
    # Tokens of very different magnitude: one scale for the whole tensor would flatten the small one.
    x[0, 0] *= 200.0
    x[1, 3] *= 0.01
    model = matmul_graph(weight)
    expected = run(model, tmp_path / "float.onnx", x)
    per_token_int8(model, ["layer.0/output/dense/MatMul"])
    assert "MatMul" not in {node.op_type for node in model.graph.node}
    actual = run(model, tmp_path / "int8.onnx", x)
    # Relative to each token's own output size, including the tiny token next to the huge one.
    error = np.abs(actual - expected).max(axis=-1) / np.abs(expected).max(axis=-1)
    assert error.max() < 0.03, error
