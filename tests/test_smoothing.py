"""Activation smoothing keeps the graph's outputs and flattens outlier channels before int8."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from model.smoothing import channel_abs_max, smooth

GAIN = np.array([1.0, 0.5, 2.0, 60.0], dtype=np.float32)  # channel 3 is the outlier


def tiny_graph(path: Path) -> None:
    """input_ids -> float -> 4 channels (one 60x larger) -> MatMul with a 4x3 weight."""
    weight = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_float"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["ids_float", "axis"], ["column"]),
        helper.make_node("Mul", ["column", "gain"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "weight"], ["logits"], name="dense/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", 3])],
        [
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis"),
            numpy_helper.from_array(GAIN, "gain"),
            numpy_helper.from_array(weight, "weight"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what torch.onnx writes at opset 17; ONNX Runtime may lag the onnx package
    onnx.save(model, str(path))


def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    ids = np.arange(1, 13, dtype=np.int64).reshape(3, 4)
    return [(ids, np.ones_like(ids)), (ids[:1] * 2, np.ones_like(ids[:1]))]


def run(path: Path, input_ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output: np.ndarray = session.run(
        None, {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
    )[0]
    return output


def test_smoothing_leaves_outputs_unchanged(tmp_path: Path) -> None:
    original, smoothed = tmp_path / "original.onnx", tmp_path / "smoothed.onnx"
    tiny_graph(original)
    assert smooth(original, smoothed, batches()) == 1
    probe = np.array([[3, 7, 0, 11]], dtype=np.int64)
    np.testing.assert_allclose(run(smoothed, probe), run(original, probe), rtol=1e-5, atol=1e-4)


def test_smoothing_flattens_the_outlier_channel(tmp_path: Path) -> None:
    original, smoothed = tmp_path / "original.onnx", tmp_path / "smoothed.onnx"
    tiny_graph(original)
    smooth(original, smoothed, batches(), alpha=0.5)
    before = channel_abs_max(onnx.load(str(original)), ["hidden"], batches())["hidden"]
    model = onnx.load(str(smoothed))
    matmul_input = next(node for node in model.graph.node if node.op_type == "MatMul").input[0]
    after = channel_abs_max(model, [matmul_input], batches())[matmul_input]
    assert before.max() / before.min() > 100
    assert after.max() / after.min() < before.max() / before.min() / 5


def test_excluded_nodes_stay_unsmoothed(tmp_path: Path) -> None:
    original, smoothed = tmp_path / "original.onnx", tmp_path / "smoothed.onnx"
    tiny_graph(original)
    assert smooth(original, smoothed, batches(), exclude={"dense/MatMul"}) == 0
    model = onnx.load(str(smoothed))
    assert [node.op_type for node in model.graph.node].count("Mul") == 1  # only the graph's own gain
    probe = np.array([[3, 7, 0, 11]], dtype=np.int64)
    np.testing.assert_array_equal(run(smoothed, probe), run(original, probe))
