"""Per-token uint8 quantisation of MatMuls, first of all the feed-forward outputs (input: GELU output).

ONNX Runtime's dynamic quantisation gives a whole activation tensor one scale. The GELU output's
range differs a lot from token to token, so one scale per run costs the quiet tokens their
resolution (argmax agreement with PyTorch fell to 95-96 %). Here each token gets its own scale.
GELU is bounded below (its minimum is -0.16997), so the input is shifted by GELU_SHIFT to be
non-negative and quantised to all 256 uint8 steps with zero point 0, twice the steps a symmetric
int8 code would give the (almost all positive) values. The shift's effect on the product,
-GELU_SHIFT * column sums of W, is a constant folded into the following bias Add.

Per node: x' = x + c; s = max(x') / 255 per token; q = round(x' / s) as uint8;
y = s * (q @ W_q) * w_scale - c * sum(W), with W_q int8 per output column (ONNX Runtime's u8 x s8
integer MatMul, the fast path on x86).

Other MatMuls (signed inputs such as a LayerNorm output) get per_token_symmetric: s = max|x| / 127
per token, coded as uint8 around zero point 128. Either way no token's scale depends on another
token, so a text's result does not depend on the texts that share its micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model.graph_edit import replace_node

GELU_SHIFT = 0.17  # just above |min GELU(x)| = 0.16997, so x + GELU_SHIFT >= 0
_CONSTANTS: dict[str, np.ndarray] = {
    "per_token_shift": np.array(GELU_SHIFT, np.float32),
    "per_token_inv255": np.array(1.0 / 255, np.float32),
    "per_token_eps": np.array(1e-8, np.float32),
    "per_token_one": np.array(1.0, np.float32),
    "per_token_inv127": np.array(1.0 / 127, np.float32),
    "per_token_zero_point": np.array(128, np.uint8),
}


def _bias_add(
    graph: onnx.GraphProto, tensor: str, initializers: dict[str, onnx.TensorProto]
) -> onnx.NodeProto | None:
    """The Add that is the only consumer of tensor and adds a 1-D initialiser (the layer's bias), if any."""
    consumers = [node for node in graph.node if tensor in node.input]
    if len(consumers) != 1 or consumers[0].op_type != "Add":
        return None
    other = [name for name in consumers[0].input if name != tensor]
    add: onnx.NodeProto = consumers[0]
    if len(other) == 1 and other[0] in initializers and len(initializers[other[0]].dims) == 1:
        return add
    return None


def _quantized_weight(graph: onnx.GraphProto, prefix: str, weight: np.ndarray) -> None:
    """Add weight as int8 per output column (symmetric) and its float column scales as initialisers."""
    weight_scale = np.maximum(np.abs(weight).max(axis=0), 1e-8) / 127
    quantized = np.clip(np.round(weight / weight_scale), -127, 127).astype(np.int8)
    graph.initializer.extend(
        [
            numpy_helper.from_array(quantized, f"{prefix}_weight"),
            numpy_helper.from_array(weight_scale.astype(np.float32), f"{prefix}_weight_scale"),
        ]
    )


def _token_scaled_matmul(
    p: str, values: str, magnitude: str, inverse_steps: str, zero_point: str | None, output: str
) -> list[onnx.NodeProto]:
    """Per token: scale = max(magnitude) * inverse_steps; values / scale as uint8; integer MatMul."""
    quantize_inputs = [f"{p}_steps", "per_token_one"] + ([zero_point] if zero_point else [])
    return [
        helper.make_node("ReduceMax", [magnitude], [f"{p}_max"], axes=[-1], keepdims=1, name=f"{p}_Max"),
        helper.make_node("Max", [f"{p}_max", "per_token_eps"], [f"{p}_max_safe"], name=f"{p}_Floor"),
        helper.make_node("Mul", [f"{p}_max_safe", inverse_steps], [f"{p}_scale"], name=f"{p}_Scale"),
        helper.make_node("Div", [values, f"{p}_scale"], [f"{p}_steps"], name=f"{p}_Steps"),
        # Scale 1: QuantizeLinear only rounds the steps (and adds the zero point) into uint8.
        helper.make_node("QuantizeLinear", quantize_inputs, [f"{p}_q"], name=f"{p}_Quantize"),
        *_integer_matmul(p, f"{p}_q", zero_point, output),
    ]


def _integer_matmul(prefix: str, quantized: str, zero_point: str | None, output: str) -> list[onnx.NodeProto]:
    """u8 x s8 integer MatMul of the quantised activation, then back to float: both scales applied."""
    inputs = [quantized, f"{prefix}_weight"] + ([zero_point] if zero_point else [])
    return [
        helper.make_node("MatMulInteger", inputs, [f"{prefix}_int32"], name=f"{prefix}_MatMul"),
        helper.make_node(
            "Cast", [f"{prefix}_int32"], [f"{prefix}_float"], to=onnx.TensorProto.FLOAT, name=f"{prefix}_Cast"
        ),
        helper.make_node(
            "Mul",
            [f"{prefix}_float", f"{prefix}_weight_scale"],
            [f"{prefix}_by_weight"],
            name=f"{prefix}_WeightScale",
        ),
        helper.make_node(
            "Mul", [f"{prefix}_by_weight", f"{prefix}_scale"], [output], name=f"{prefix}_TokenScale"
        ),
    ]


def _replace(graph: onnx.GraphProto, node: onnx.NodeProto, replacement: list[onnx.NodeProto]) -> None:
    """Put replacement where node was, and drop node's weight if nothing else reads it."""
    weight_name = node.input[1]
    replace_node(graph, node, replacement)
    if not any(weight_name in other.input for other in graph.node):
        graph.initializer.remove(next(tensor for tensor in graph.initializer if tensor.name == weight_name))


def _add_constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    graph.initializer.extend(
        numpy_helper.from_array(value, name) for name, value in _CONSTANTS.items() if name not in initializers
    )
    return initializers


# Builds a replacement's nodes: (graph, initialisers by name, the MatMul, its float weight, name prefix).
NodesFor = Callable[
    [onnx.GraphProto, dict[str, onnx.TensorProto], onnx.NodeProto, np.ndarray, str], list[onnx.NodeProto]
]


def _rewrite(model: onnx.ModelProto, node_names: Iterable[str], nodes_for: NodesFor) -> int:
    """Swap each named MatMul (weight initialiser) for nodes_for's int8 nodes; returns how many."""
    graph = model.graph
    initializers = _add_constants(graph)
    replaced = 0
    for name in node_names:
        node = next(node for node in graph.node if node.name == name and node.op_type == "MatMul")
        weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        prefix = f"{name}_per_token"
        _quantized_weight(graph, prefix, weight)
        _replace(graph, node, nodes_for(graph, initializers, node, weight, prefix))
        replaced += 1
    return replaced


def _gelu_shifted_nodes(
    graph: onnx.GraphProto,
    initializers: dict[str, onnx.TensorProto],
    node: onnx.NodeProto,
    weight: np.ndarray,
    p: str,
) -> list[onnx.NodeProto]:
    """Shift by GELU_SHIFT, uint8 per token with zero point 0; the shift's effect goes into the bias."""
    activation, output = node.input[0], node.output[0]
    shift_effect = (-GELU_SHIFT * weight.sum(axis=0)).astype(np.float32)
    bias_add = _bias_add(graph, output, initializers)
    if bias_add is not None:
        bias_name = next(name for name in bias_add.input if name != output)
        bias = numpy_helper.to_array(initializers[bias_name]) + shift_effect
        initializers[bias_name].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), bias_name))
        scaled_output = output
    else:
        graph.initializer.append(numpy_helper.from_array(shift_effect, f"{p}_shift_effect"))
        scaled_output = f"{p}_scaled_output"
    nodes = [
        helper.make_node("Add", [activation, "per_token_shift"], [f"{p}_shifted"], name=f"{p}_Shift"),
        # Steps already in [0, 255]: no zero point.
        *_token_scaled_matmul(p, f"{p}_shifted", f"{p}_shifted", "per_token_inv255", None, scaled_output),
    ]
    if bias_add is None:
        nodes.append(
            helper.make_node("Add", [scaled_output, f"{p}_shift_effect"], [output], name=f"{p}_ShiftEffect")
        )
    return nodes


def _symmetric_nodes(
    graph: onnx.GraphProto,
    initializers: dict[str, onnx.TensorProto],
    node: onnx.NodeProto,
    weight: np.ndarray,
    p: str,
) -> list[onnx.NodeProto]:
    """Scale max|x| / 127 per token, steps in [-127, 127] stored as uint8 around zero point 128."""
    activation = node.input[0]
    return [
        helper.make_node("Abs", [activation], [f"{p}_abs"], name=f"{p}_Abs"),
        *_token_scaled_matmul(
            p, activation, f"{p}_abs", "per_token_inv127", "per_token_zero_point", node.output[0]
        ),
    ]


def per_token_uint8(model: onnx.ModelProto, node_names: Iterable[str]) -> int:
    """Replace each named MatMul (GELU-output input, weight initialiser) in place; returns how many."""
    return _rewrite(model, node_names, _gelu_shifted_nodes)


def per_token_symmetric(model: onnx.ModelProto, node_names: Iterable[str]) -> int:
    """Replace each named MatMul (any float input, weight initialiser) with a per-token int8 one.

    Each token's scale is its own largest |value| / 127, coded as uint8 around zero point 128 (the
    u8 x s8 fast path). No token's result depends on any other token in the run, so a text scores
    the same whichever texts share its micro-batch. Returns how many nodes were replaced.
    """
    return _rewrite(model, node_names, _symmetric_nodes)
