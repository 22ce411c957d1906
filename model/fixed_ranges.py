"""Fixed int8 input ranges for the attention projections, so a text's result ignores its batch-mates.

ONNX Runtime's dynamic quantisation (DynamicQuantizeLinear) picks one scale per run from the
largest value anywhere in the padded micro-batch. A text's probabilities then depend on which
texts share its run: on the dev split, 1-2 % of labels changed between runs of 1, 8 and 64.
Each such node is replaced here by a QuantizeLinear whose scale and zero point come from the
range its input took on calibration (training) texts. Values outside that range saturate.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model.graph_edit import replace_node
from model.probe import Batch, intermediate_values


def observed_ranges(
    model: onnx.ModelProto, tensor_names: list[str], batches: Iterable[Batch]
) -> dict[str, tuple[float, float]]:
    """(min, max) of each named tensor over the calibration batches, widened to include 0."""
    ranges = {name: (0.0, 0.0) for name in tensor_names}
    for values in intermediate_values(model, tensor_names, batches):
        for name, value in zip(tensor_names, values, strict=True):
            low, high = ranges[name]
            ranges[name] = (min(low, float(value.min())), max(high, float(value.max())))
    return ranges


def fix_dynamic_ranges(model: onnx.ModelProto, batches: Iterable[Batch]) -> int:
    """Replace every DynamicQuantizeLinear with a calibrated uint8 QuantizeLinear; returns how many."""
    graph = model.graph
    dynamic = [node for node in graph.node if node.op_type == "DynamicQuantizeLinear"]
    ranges = observed_ranges(model, [node.input[0] for node in dynamic], batches)
    for node in dynamic:
        low, high = ranges[node.input[0]]
        scale = max(high - low, 1e-8) / 255
        zero_point = int(np.clip(round(-low / scale), 0, 255))
        quantized, scale_name, zero_point_name = node.output
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, np.float32), scale_name),
                numpy_helper.from_array(np.array(zero_point, np.uint8), zero_point_name),
            ]
        )
        fixed = helper.make_node(
            "QuantizeLinear",
            [node.input[0], scale_name, zero_point_name],
            [quantized],
            name=f"{node.name}_fixed",
        )
        replace_node(graph, node, [fixed])
    return len(dynamic)
