"""Read a graph's intermediate tensors on calibration batches (for smoothing and fixed input ranges)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

Batch = tuple[np.ndarray, np.ndarray]


def intermediate_values(
    model: onnx.ModelProto, tensor_names: list[str], batches: Iterable[Batch]
) -> Iterator[list[np.ndarray]]:
    """Per batch, the values of the named float tensors, in the order named."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known_outputs = {output.name for output in probe.graph.output}
    wanted = list(dict.fromkeys(tensor_names))
    for name in wanted:
        if name not in known_outputs:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    positions = [wanted.index(name) for name in tensor_names]
    for input_ids, attention_mask in batches:
        values = session.run(wanted, {"input_ids": input_ids, "attention_mask": attention_mask})
        yield [values[position] for position in positions]
