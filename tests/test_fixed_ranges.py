"""Fixed int8 input ranges (model/fixed_ranges.py): one text's result never depends on its batch-mates."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from model.fixed_ranges import fix_dynamic_ranges

WIDTH = 6


def dynamic_round_trip() -> onnx.ModelProto:
    """input_ids as float -> DynamicQuantizeLinear -> DequantizeLinear: the int8 view of the input."""
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "scale", "zero_point"], name="quantize"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "round_trip",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", WIDTH]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", WIDTH]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, path: Path, ids: np.ndarray) -> np.ndarray:
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output: np.ndarray = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    return output


def test_fixed_range_makes_each_row_independent_of_the_others(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    calibration = [(rng.integers(-50, 100, size=(4, WIDTH)), np.ones((4, WIDTH), np.int64)) for _ in range(3)]
    row = np.array([[3, -7, 12, 40, 0, -20]], np.int64)
    with_big_mate = np.concatenate([row, np.full((1, WIDTH), 100_000, np.int64)])
    model = dynamic_round_trip()
    # Dynamic: a large value elsewhere in the run coarsens this row's steps.
    alone, batched = (
        run(model, tmp_path / "d.onnx", row)[0],
        run(model, tmp_path / "d.onnx", with_big_mate)[0],
    )
    assert not np.array_equal(alone, batched)

    assert fix_dynamic_ranges(model, calibration) == 1
    assert "DynamicQuantizeLinear" not in [node.op_type for node in model.graph.node]
    alone, batched = (
        run(model, tmp_path / "f.onnx", row)[0],
        run(model, tmp_path / "f.onnx", with_big_mate)[0],
    )
    assert np.array_equal(alone, batched)
    # Within the calibrated range [-50, 99] values come back within half a step (150 / 255 / 2).
    assert np.abs(alone - row[0]).max() <= 150 / 255 / 2 + 1e-4
    # Outside it they saturate at the range's ends instead of wrapping.
    assert run(model, tmp_path / "f.onnx", with_big_mate)[1].max() < 100
