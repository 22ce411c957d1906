"""Activation smoothing before int8 quantisation (SmoothQuant, Xiao et al., ICML 2023).

A few hidden channels of a BERT carry values ten times larger than the rest (measured on the
shipped model: the feed-forward input peaks at 28 against a channel median of 2). ONNX Runtime's
dynamic quantisation gives a whole activation tensor one scale, so those channels cost every other
channel its resolution. Dividing input channel j by s_j and multiplying weight row j by s_j leaves
each product unchanged while moving the outliers into the weights, which are quantised per channel.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model.probe import Batch, intermediate_values

SMOOTHED_OPS = ("MatMul", "Attention")
DEFAULT_ALPHA = 0.5


def smoothing_targets(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes whose second input is a 2-D weight initialiser: [input channels, outputs]."""
    weights = {tensor.name: tensor for tensor in model.graph.initializer if len(tensor.dims) == 2}
    return [node for node in model.graph.node if node.op_type in SMOOTHED_OPS and node.input[1] in weights]


def channel_abs_max(
    model: onnx.ModelProto, tensor_names: list[str], batches: Iterable[Batch]
) -> dict[str, np.ndarray]:
    """Largest |value| per last-axis channel of each named tensor over the calibration batches."""
    maxima: dict[str, np.ndarray] = {}
    for values in intermediate_values(model, tensor_names, batches):
        for name, value in zip(tensor_names, values, strict=True):
            channel_max = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            maxima[name] = np.maximum(maxima[name], channel_max) if name in maxima else channel_max
    if not maxima:
        raise ValueError("smoothing needs at least one calibration batch")
    return maxima


def smooth(
    fp32_path: Path,
    out_path: Path,
    batches: Iterable[Batch],
    alpha: float = DEFAULT_ALPHA,
    node_alpha: dict[str, float] | None = None,
    exclude: Collection[str] = (),
) -> int:
    """Write a smoothed copy of the graph (same outputs up to float rounding); returns nodes smoothed.

    alpha is the share of each channel's range moved into the weights; node_alpha overrides it by node name.
    Nodes named in exclude (those that stay in float) are left alone: their Mul would only cost time.
    """
    model = onnx.load(str(fp32_path))
    targets = [node for node in smoothing_targets(model) if node.name not in exclude]
    if not targets:
        onnx.save(model, str(out_path))
        return 0
    maxima = channel_abs_max(model, [node.input[0] for node in targets], batches)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    for index, node in enumerate(targets):
        weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        activation_max = np.maximum(maxima[node.input[0]], 1e-5)
        weight_max = np.maximum(np.abs(weight).max(axis=1), 1e-5)
        strength = (node_alpha or {}).get(node.name, alpha)
        scale = (activation_max**strength / weight_max ** (1 - strength)).astype(np.float32)
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], node.input[1]))
        inverse_name = f"smooth_inverse_scale_{index}"
        model.graph.initializer.append(
            numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse_name)
        )
        smoothed = f"{node.input[0]}_smoothed_{index}"
        mul = helper.make_node("Mul", [node.input[0], inverse_name], [smoothed], name=f"SmoothMul_{index}")
        node.input[0] = smoothed
        position = list(model.graph.node).index(node)
        model.graph.node.insert(position, mul)
    onnx.save(model, str(out_path))
    return len(targets)
