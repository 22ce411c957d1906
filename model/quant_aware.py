"""Quantisation-aware fine-tuning of the feed-forward output layers (Jacob et al., CVPR 2018).

The int8 export leaves each layer's feed-forward output MatMul in float: its input is the GELU
output, whose range is wide, and ONNX Runtime's dynamic quantisation gives a whole run one scale
(quantising them cost 4 points of argmax agreement, bench/results/ffn_int8.json). Those six MatMuls
are 40 % of the int8 graph's CPU time. Training a few steps with that same rounding simulated
(straight-through gradients) teaches the weights to tolerate it, so the export can quantise them.

Only training mode is affected: evaluation, calibration and the saved checkpoint are the plain
float network, which is what the PyTorch rows of the benchmark and the parity check run.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

# ONNX Runtime's DynamicQuantizeLinear: asymmetric uint8 over the whole tensor, range holding 0.
ACTIVATION_RANGE = (0, 255)
# quantize_dynamic's per-channel QInt8 weights: symmetric, one scale per output channel.
WEIGHT_RANGE = (-127, 127)


def fake_quantize_activation(values: torch.Tensor) -> torch.Tensor:
    """Round values as DynamicQuantizeLinear would (one uint8 scale for the tensor); identity gradient."""
    low = torch.clamp(values.detach().min(), max=0.0)
    high = torch.clamp(values.detach().max(), min=0.0)
    scale = torch.clamp((high - low) / ACTIVATION_RANGE[1], min=1e-8)
    zero_point = torch.clamp(torch.round(-low / scale), *ACTIVATION_RANGE).to(torch.int32)
    return torch.fake_quantize_per_tensor_affine(
        values, scale.reshape(1), zero_point.reshape(1), *ACTIVATION_RANGE
    )


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Round an nn.Linear weight [out, in] to symmetric int8 per output channel; identity gradient."""
    scale = torch.clamp(weight.detach().abs().amax(dim=1) / WEIGHT_RANGE[1], min=1e-8)
    zero_point = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, *WEIGHT_RANGE)


def feed_forward_outputs(encoder: nn.Module) -> list[nn.Linear]:
    """Each BERT layer's feed-forward output Linear (encoder.layer[i].output.dense)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(
            "quantisation-aware training needs a BERT-style encoder (encoder.layer[i].output.dense)"
        )
    return [layer.output.dense for layer in layers]


def _simulate_int8(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
) -> torch.Tensor | None:
    if not module.training:
        return None
    assert isinstance(module, nn.Linear)
    rounded = fake_quantize_activation(inputs[0])
    return nn.functional.linear(rounded, fake_quantize_weight(module.weight), module.bias)


def simulate_int8_feed_forward(encoder: nn.Module) -> list[RemovableHandle]:
    """Make every feed-forward output Linear compute through int8 rounding while training."""
    # A forward hook that returns a value replaces the module's output; the float output it
    # discards costs one extra MatMul per layer, cheaper than swapping modules in and out.
    return [linear.register_forward_hook(_simulate_int8) for linear in feed_forward_outputs(encoder)]
