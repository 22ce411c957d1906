"""Quantisation-aware training rounds exactly as ONNX Runtime's int8 kernels will, and only while training."""

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from model.quant_aware import (  # noqa: E402
    fake_quantize_activation,
    fake_quantize_weight,
    feed_forward_outputs,
    simulate_int8_feed_forward,
)


def ort_dynamic_quantize_roundtrip(values: np.ndarray) -> np.ndarray:
    """values through ONNX Runtime's DynamicQuantizeLinear and back to float."""
    graph = helper.make_graph(
        [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "scale", "zero"]),
            helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"]),
        ],
        "roundtrip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(values.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(values.shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": values})[0])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**31 - 1),
    st.floats(min_value=1e-3, max_value=50.0),
    st.floats(min_value=-1.0, max_value=1.0),
)
def test_activation_rounding_matches_onnx_runtime(seed: int, spread: float, shift: float) -> None:
    values = (np.random.default_rng(seed).standard_normal((4, 16)) * spread + shift * spread).astype(
        np.float32
    )
    ours = fake_quantize_activation(torch.from_numpy(values)).numpy()
    theirs = ort_dynamic_quantize_roundtrip(values)
    step = (max(values.max(), 0) - min(values.min(), 0)) / 255
    # Equal up to float rounding of the scale: never more than one quantisation step apart, almost always equal.
    assert np.abs(ours - theirs).max() <= step * 1.001
    assert np.mean(np.isclose(ours, theirs, atol=step * 1e-3)) > 0.95


def test_weight_rounding_is_per_output_channel_int8() -> None:
    weight = torch.randn(6, 32) * torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0, 1000.0])[:, None]
    rounded = fake_quantize_weight(weight)
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    levels = rounded / scale
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert levels.abs().max() <= 127.001
    # Each channel keeps its own resolution: the small rows are not flattened by the large ones.
    assert ((rounded - weight).abs() <= scale / 2 + 1e-6).all()


def test_rounding_passes_gradients_straight_through() -> None:
    values = torch.randn(3, 8, requires_grad=True)
    fake_quantize_activation(values).sum().backward()
    assert values.grad is not None
    assert torch.equal(values.grad, torch.ones_like(values))


def tiny_bert() -> Any:
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    return transformers.BertModel(config)


def test_simulation_changes_training_forward_only() -> None:
    encoder = tiny_bert()
    ids = torch.randint(1, 100, (2, 7))
    encoder.eval()
    with torch.no_grad():
        plain = encoder(input_ids=ids).last_hidden_state
    names_before = set(encoder.state_dict())
    handles = simulate_int8_feed_forward(encoder)
    assert len(handles) == len(feed_forward_outputs(encoder)) == 2
    with torch.no_grad():
        assert torch.equal(encoder(input_ids=ids).last_hidden_state, plain)  # eval: the float network
        encoder.train()
        torch.manual_seed(1)
        simulated = encoder(input_ids=ids).last_hidden_state
        for handle in handles:
            handle.remove()
        torch.manual_seed(1)
        unsimulated = encoder(input_ids=ids).last_hidden_state
    assert not torch.equal(simulated, unsimulated)  # same dropout, only the rounding differs
    assert (simulated - unsimulated).abs().max() < 0.5
    assert set(encoder.state_dict()) == names_before  # the checkpoint format is unchanged


def test_simulation_needs_a_bert_layout() -> None:
    with pytest.raises(ValueError, match="BERT-style"):
        simulate_int8_feed_forward(torch.nn.Linear(2, 2))


def test_export_quantises_feed_forward_outputs_only_for_quant_aware_runs(tmp_path: object) -> None:
    from model.export import ffn_output_matmuls, nodes_kept_float

    path = tmp_path / "ffn.onnx"  # type: ignore[operator]
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel().tolist())
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="/encoder/layer.0/output/dense/MatMul")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    onnx.save(helper.make_model(graph), str(path))
    assert ffn_output_matmuls(onnx.load(str(path))) == [node.name]
    assert nodes_kept_float(path, {"config": {}}) == [node.name]
    assert nodes_kept_float(path, {"config": {"quant_aware": True}}) == []
