"""Per-token uint8 feed-forward output MatMuls (model/per_token.py) compute the float MatMul within int8 error."""

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model.per_token import per_token_symmetric, per_token_uint8

ROWS, INNER, OUTER = 5, 64, 16
NAME = "layer.0/output/dense/MatMul"


def gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    result: np.ndarray = (0.5 * x * (1 + erf(x / math.sqrt(2)))).astype(np.float32)
    return result


def matmul_graph(weight: np.ndarray, bias: np.ndarray | None) -> onnx.ModelProto:
    """x [batch, rows, INNER] @ weight [INNER, OUTER] (+ bias)."""
    nodes = [helper.make_node("MatMul", ["x", "weight"], ["product" if bias is not None else "y"], name=NAME)]
    initializers = [numpy_helper.from_array(weight, "weight")]
    if bias is not None:
        nodes.append(helper.make_node("Add", ["product", "bias"], ["y"], name="bias/Add"))
        initializers.append(numpy_helper.from_array(bias, "bias"))
    graph = helper.make_graph(
        nodes,
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", ROWS, INNER])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", ROWS, OUTER])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, path: Path, x: np.ndarray) -> np.ndarray:
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output: np.ndarray = session.run(None, {"x": x})[0]
    return output


@pytest.mark.parametrize("with_bias", [False, True])
def test_per_token_matmul_matches_float_within_int8_error(tmp_path: Path, with_bias: bool) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(INNER, OUTER)).astype(np.float32)
    bias = rng.normal(size=OUTER).astype(np.float32) if with_bias else None
    pre_activation = rng.normal(size=(2, ROWS, INNER)).astype(np.float32)
    # Tokens of very different magnitude: one scale for the whole tensor would flatten the small one.
    pre_activation[0, 0] *= 200.0
    pre_activation[1, 3] *= 0.05
    x = gelu(pre_activation)
    model = matmul_graph(weight, bias)
    expected = run(model, tmp_path / "float.onnx", x)
    assert per_token_uint8(model, [NAME]) == 1
    op_types = [node.op_type for node in model.graph.node]
    assert "MatMul" not in op_types and "MatMulInteger" in op_types
    # With a bias Add after it, the shift's constant is folded into the bias instead of its own Add.
    assert any(node.name.endswith("_ShiftEffect") for node in model.graph.node) == (not with_bias)
    actual = run(model, tmp_path / "int8.onnx", x)
    # Relative to each token's own output size, including the small token beside the huge one.
    error = np.abs(actual - expected).max(axis=-1) / np.abs(expected).max(axis=-1)
    assert error.max() < 0.03, error


def test_symmetric_per_token_matmul_matches_float_and_ignores_other_tokens(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(INNER, OUTER)).astype(np.float32)
    # Signed inputs (a LayerNorm output), tokens of very different magnitude.
    x = rng.normal(size=(2, ROWS, INNER)).astype(np.float32)
    x[0, 0] *= 200.0
    x[1, 3] *= 0.05
    model = matmul_graph(weight, None)
    expected = run(model, tmp_path / "float.onnx", x)
    assert per_token_symmetric(model, [NAME]) == 1
    assert "MatMul" not in [node.op_type for node in model.graph.node]
    actual = run(model, tmp_path / "int8.onnx", x)
    error = np.abs(actual - expected).max(axis=-1) / np.abs(expected).max(axis=-1)
    assert error.max() < 0.03, error
    # What the other text in the run holds does not change this one's result at all.
    changed = x.copy()
    changed[1] *= 1000.0
    assert np.array_equal(run(model, tmp_path / "int8.onnx", changed)[0], actual[0])
