"""`finsent export`: one ONNX graph with both calibrated heads, in fp32, int8 and fp16 variants."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import optimizer
from onnxruntime.transformers.fusion_options import FusionOptions
from torch import nn

from model.batching import length_sorted_batches, pad_batch
from model.calibration import softmax
from model.checkpoint import REPORT_FILE, load_checkpoint
from model.data import splits_of_run
from model.dev_eval import predict_logits
from model.engine import CPU_BATCH_SIZE, GPU_BATCH_SIZE, Device, OnnxSession, cuda_usable
from model.fixed_ranges import fix_dynamic_ranges
from model.manifest import VARIANT_FILES, write_manifest
from model.network import MultiTaskClassifier
from model.per_token import per_token_symmetric, per_token_uint8
from model.probe import Batch
from model.progress import log_to_stderr
from model.smoothing import smooth, smoothing_targets
from model.tokenization import TOKENIZER_FILE, encode_texts, load_tokenizer

OPSET = 17
# Embedding tables bigger than this are stored as fp16 (ONNX Runtime folds the Cast at load).
FP16_EMBEDDING_MIN_ELEMENTS = 1_000_000
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("topic_probs", "sentiment_probs")
# Minimum argmax agreement with PyTorch per variant; below it export fails.
PARITY_AGREEMENT = {"fp32": 0.999, "int8": 0.98, "fp16": 0.99}
# Layers whose feed-forward output MatMul stays float; every other layer's is quantised per token.
# Quantised alone, each layer's moves the probabilities on the calibration (training) texts less the
# deeper it sits, and layer 0's most (mean |p difference| on sentiment 0.0027, against 0.0022 for
# layer 1 and 0.0003 for layer 5; measured for the shipped model with
# `python bench/ffn_int8.py --layer-effect`, bench/results/ffn_int8.json).
FLOAT_FFN_LAYERS = (0,)
# Training texts whose activation ranges set the smoothing scales.
CALIBRATION_ROWS = 512
PARITY_MAX_PROB_DIFF = {"fp32": 1e-3, "int8": 0.5, "fp16": 0.05}


class CalibratedHeads(nn.Module):
    """The trained network with temperature-scaled softmax on both heads, as served."""

    def __init__(
        self, network: MultiTaskClassifier, topic_temperature: float, sentiment_temperature: float
    ) -> None:
        super().__init__()
        self.network = network
        self.topic_temperature = topic_temperature
        self.sentiment_temperature = sentiment_temperature

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated probabilities of both heads."""
        topic_logits, sentiment_logits = self.network(input_ids, attention_mask)
        return (
            torch.softmax(topic_logits / self.topic_temperature, dim=-1),
            torch.softmax(sentiment_logits / self.sentiment_temperature, dim=-1),
        )


@dataclass(frozen=True)
class ParityResult:
    """How closely one ONNX variant reproduces the PyTorch model on the same texts."""

    variant: str
    rows: int
    topic_agreement: float
    sentiment_agreement: float
    max_prob_diff: float
    passed: bool
    margin: float = 0.0
    rows_compared: int | None = None

    def as_json(self) -> dict[str, Any]:
        """Plain dict for the manifest and model card."""
        return dict(self.__dict__)


class ParityError(RuntimeError):
    """An exported variant disagrees with PyTorch beyond the allowed tolerance."""


def export_fp32(heads: CalibratedHeads, path: Path) -> None:
    """Trace the calibrated model to ONNX with dynamic batch and sequence axes."""
    sample_ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    sample_mask = (sample_ids != 0).long()
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes.update({name: {0: "batch"} for name in OUTPUT_NAMES})
    with warnings.catch_warnings():
        # The TorchScript exporter is used on purpose: ONNX Runtime's BERT fusions match its graph.
        # Its deprecation notice and tracer cautions (a padding check that is constant for BERT's
        # square mask, an index op) are settled by the parity check against PyTorch on texts of
        # every length, so they are not repeated at every export and retrain.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            heads,
            (sample_ids, sample_mask),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )


def optimize_graph(raw_path: Path, out_path: Path, num_heads: int, hidden_size: int, for_cpu: bool) -> Any:
    """Apply ONNX Runtime's transformer fusions (attention, layer norm, GELU) for CPU or GPU.

    CPU graphs keep residual Add + LayerNormalization unfused: ONNX Runtime 1.31's CPU
    SkipLayerNormalization kernel is slower than the pair (`bench/results/cpu_graph.json`).
    """
    options = FusionOptions("bert")
    options.enable_skip_layer_norm = not for_cpu
    options.enable_bias_skip_layer_norm = not for_cpu
    optimized = optimizer.optimize_model(
        str(raw_path),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
    )
    optimized.save_model_to_file(str(out_path))
    return optimized


def ffn_output_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of each layer's feed-forward output MatMul (input: GELU output, wide range)."""
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and node.name.endswith("/output/dense/MatMul")
        and "attention" not in node.name
    ]


def calibration_batches(report: dict[str, Any], out_dir: Path, rows: int = CALIBRATION_ROWS) -> list[Batch]:
    """Padded runs of training texts (never dev) shaped as the engine runs them, for smoothing."""
    config = report["config"]
    train = splits_of_run(config).train
    texts = train["text"].sample(n=min(rows, len(train)), random_state=config["seed"]).tolist()
    token_ids = encode_texts(load_tokenizer(out_dir, int(config["max_tokens"])), texts)
    runs = length_sorted_batches([len(ids) for ids in token_ids], CPU_BATCH_SIZE)
    return [pad_batch([token_ids[i] for i in run]) for run in runs]


def projection_matmuls(model: onnx.ModelProto, exclude: Collection[str]) -> list[str]:
    """Names of the MatMuls with a weight initialiser (attention output, feed-forward input), less exclude."""
    return [
        node.name
        for node in smoothing_targets(model)
        if node.op_type == "MatMul" and node.name not in exclude
    ]


def quantize_int8(
    fp32_path: Path, out_path: Path, batches: list[Batch], float_layers: Collection[int] = FLOAT_FFN_LAYERS
) -> None:
    """Smooth, then int8 with no activation scale shared between the texts of a run.

    A scale taken per run (ONNX Runtime's dynamic quantisation) makes a text's labels depend on
    its batch-mates, so: the attention's Q/K/V projection gets a fixed input range from the
    calibration texts (model/fixed_ranges.py); every other weight MatMul gets one scale per token
    (model/per_token.py). Each layer's feed-forward output MatMul reads the GELU output, whose
    range varies most from token to token; those use the GELU-shifted uint8 code, except in
    float_layers, where they stay float, and are never smoothed: per-token scales need no
    smoothing, and a float MatMul would only pay for the Mul.
    """
    fp32_model = onnx.load(str(fp32_path))
    feed_forward_outputs = ffn_output_matmuls(fp32_model)
    projections = projection_matmuls(fp32_model, exclude=feed_forward_outputs)
    smoothed_path = out_path.with_suffix(".smoothed.onnx")
    smooth(fp32_path, smoothed_path, batches, exclude=feed_forward_outputs)
    dynamic_int8(smoothed_path, out_path, op_types_to_quantize=["Attention"])
    smoothed_path.unlink()
    model = onnx.load(str(out_path))
    per_token_symmetric(model, projections)
    per_token_uint8(
        model, [name for layer, name in enumerate(feed_forward_outputs) if layer not in float_layers]
    )
    fix_dynamic_ranges(model, batches)
    onnx.save(model, str(out_path))
    store_large_embeddings_fp16(out_path)


class _DropPreProcessHint(logging.Filter):
    """ONNX Runtime suggests its quantisation pre-processing (shape inference and graph
    optimisation) for every graph not marked as pre-processed; ours is already optimised with the
    transformer fusions, which that pre-processing would not apply, so the hint is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def dynamic_int8(in_path: Path, out_path: Path, **selection: Any) -> None:
    """ONNX Runtime dynamic quantisation, int8 weights per channel, of the nodes ``selection`` picks."""
    hint_filter = _DropPreProcessHint()
    logging.getLogger().addFilter(hint_filter)
    try:
        quantize_dynamic(
            str(in_path),
            str(out_path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # Fused contrib ops defeat ONNX shape inference; their outputs are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            **selection,
        )
    finally:
        logging.getLogger().removeFilter(hint_filter)


def store_large_embeddings_fp16(path: Path) -> None:
    """Rewrite big float embedding tables as fp16 initialisers followed by a Cast to float.

    Halves the word-embedding table on disk (47 MB -> 23 MB) at no accuracy cost; ONNX
    Runtime constant-folds the Cast when the session loads, so inference pays nothing.
    """
    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    casts = []
    for node in graph.node:
        if node.op_type not in ("EmbedLayerNormalization", "Gather"):
            continue
        for name in node.input:
            tensor = initializers.pop(name, None)
            if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT:
                continue
            values = onnx.numpy_helper.to_array(tensor)
            if values.size < FP16_EMBEDDING_MIN_ELEMENTS:
                continue
            graph.initializer.remove(tensor)
            graph.initializer.append(onnx.numpy_helper.from_array(values.astype(np.float16), f"{name}_fp16"))
            casts.append(
                onnx.helper.make_node(
                    "Cast", [f"{name}_fp16"], [name], to=onnx.TensorProto.FLOAT, name=f"{name}_to_float"
                )
            )
    for cast in reversed(casts):
        graph.node.insert(0, cast)
    onnx.save(graph_model, str(path))


def check_parity(
    variant: str,
    session: OnnxSession,
    token_ids: list[list[int]],
    reference: tuple[np.ndarray, np.ndarray],
    margin: float = 0.0,
    run_size: int = CPU_BATCH_SIZE,
) -> ParityResult:
    """Compare an ONNX session's probabilities with PyTorch's on the same token ids, in the engine's run size.

    margin > 0 leaves out of the argmax agreement the rows whose PyTorch top-two probabilities
    (in either head) are closer than margin: near-ties that any quantisation flips at random,
    which dominate barely-trained (CI-sized) models. The max probability difference covers all rows.
    When no row clears the margin, agreement is measured on all rows rather than on none (a check
    that compared nothing would pass anything); rows_compared in the result says which happened.
    """
    topic = np.zeros_like(reference[0])
    sentiment = np.zeros_like(reference[1])
    # int8 activations are quantised per run, so agreement depends on the run size the engine uses.
    for batch in length_sorted_batches([len(ids) for ids in token_ids], run_size):
        input_ids, attention_mask = pad_batch([token_ids[i] for i in batch])
        topic[batch], sentiment[batch] = session.run(input_ids, attention_mask)
    decided = (_top_two_gap(reference[0]) >= margin) & (_top_two_gap(reference[1]) >= margin)
    if not decided.any():
        decided[:] = True
    topic_agreement = float(np.mean((topic.argmax(1) == reference[0].argmax(1))[decided]))
    sentiment_agreement = float(np.mean((sentiment.argmax(1) == reference[1].argmax(1))[decided]))
    max_diff = float(max(np.abs(topic - reference[0]).max(), np.abs(sentiment - reference[1]).max()))
    passed = (
        min(topic_agreement, sentiment_agreement) >= PARITY_AGREEMENT[variant]
        and max_diff <= PARITY_MAX_PROB_DIFF[variant]
    )
    return ParityResult(
        variant,
        len(token_ids),
        topic_agreement,
        sentiment_agreement,
        max_diff,
        passed,
        margin,
        int(decided.sum()),
    )


def _top_two_gap(probs: np.ndarray) -> np.ndarray:
    ordered = np.sort(probs, axis=1)
    return np.asarray(ordered[:, -1] - ordered[:, -2])


def export(
    train_dir: Path,
    out_dir: Path,
    parity_texts: list[str],
    version: str,
    log: Callable[[str], None] = log_to_stderr,
    parity_margin: float = 0.0,
) -> dict[str, Any]:
    """Export, optimise, quantise and parity-check; write a model directory with its manifest."""
    checkpoint_dir = train_dir / "checkpoint"
    report = json.loads((train_dir / REPORT_FILE).read_text())
    temperatures = report["temperatures"]
    network = load_checkpoint(checkpoint_dir, attention="eager")
    config = network.encoder_config
    heads = CalibratedHeads(network, temperatures["topic"], temperatures["sentiment"]).eval()
    max_tokens = int(report["config"]["max_tokens"])

    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = out_dir / ".export-work"
    work_dir.mkdir(exist_ok=True)
    raw_path = work_dir / "raw.onnx"
    log("exporting the PyTorch graph to ONNX ...")
    export_fp32(heads, raw_path)
    paths = {variant: out_dir / name for variant, name in VARIANT_FILES.items()}
    log("optimising (transformer fusions) ...")
    heads_and_size = (config.num_attention_heads, config.hidden_size)
    optimize_graph(raw_path, paths["fp32"], *heads_and_size, for_cpu=True)
    shutil.copyfile(checkpoint_dir / TOKENIZER_FILE, out_dir / TOKENIZER_FILE)
    log("smoothing activation outliers into the weights, then quantising to int8 ...")
    quantize_int8(paths["fp32"], paths["int8"], calibration_batches(report, out_dir))
    log("converting to fp16 ...")
    gpu_graph = optimize_graph(raw_path, work_dir / "gpu.onnx", *heads_and_size, for_cpu=False)
    gpu_graph.convert_float_to_float16(keep_io_types=True)
    gpu_graph.save_model_to_file(str(paths["fp16"]))
    shutil.rmtree(work_dir)

    tokenizer = load_tokenizer(out_dir, max_tokens)
    token_ids = encode_texts(tokenizer, parity_texts)
    topic_logits, sentiment_logits = predict_logits(network, token_ids)
    reference = (
        softmax(topic_logits, temperatures["topic"]).astype(np.float32),
        softmax(sentiment_logits, temperatures["sentiment"]).astype(np.float32),
    )
    parity: dict[str, Any] = {}
    variants = ["fp32", "int8"] + (["fp16"] if cuda_usable() else [])
    for variant in variants:
        device: Device = "cuda" if variant == "fp16" else "cpu"
        session = OnnxSession(paths[variant], device=device)
        run_size = GPU_BATCH_SIZE if device == "cuda" else CPU_BATCH_SIZE
        result = check_parity(variant, session, token_ids, reference, parity_margin, run_size)
        parity[variant] = result.as_json()
        log(f"parity {variant}: {json.dumps(result.as_json())}")
        if not result.passed:
            raise ParityError(
                f"{variant} variant disagrees with PyTorch: topic agreement "
                f"{result.topic_agreement:.4f}, sentiment agreement {result.sentiment_agreement:.4f}, "
                f"max probability difference {result.max_prob_diff:.4f}"
            )
    if "fp16" not in parity:
        parity["fp16"] = {"skipped": "no usable CUDA device; fp16 runs only on GPU"}
    for variant, path in paths.items():
        onnx.checker.check_model(str(path))
        log(f"{variant}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return write_manifest(
        out_dir,
        version=version,
        max_tokens=max_tokens,
        temperatures=temperatures,
        training_report=report,
        parity=parity,
        max_positions=int(config.max_position_embeddings),
    )


def evaluate_variant(model_dir: Path, variant: str, dev_rows: Any) -> dict[str, Any]:
    """Dev accuracy and macro-F1 per task of one exported variant, through the serving engine."""
    from model.dev_eval import evaluate_heads
    from model.engine import Engine

    engine = Engine(model_dir, variant=variant, device="cpu", verify=False)
    topic, sentiment = engine.probabilities(dev_rows["text"].tolist())
    # Probabilities are already calibrated; log() turns them back into logits for the report.
    scores = evaluate_heads(np.log(topic + 1e-12), np.log(sentiment + 1e-12), dev_rows)
    result = {
        f"{variant} {task}": {"accuracy": scores[task]["accuracy"], "macro_f1": scores[task]["macro_f1"]}
        for task in ("topic", "sentiment")
    }
    for source in sorted(set(dev_rows["source"])):
        in_source = (dev_rows["source"] == source).to_numpy()
        part = evaluate_heads(
            np.log(topic[in_source] + 1e-12),
            np.log(sentiment[in_source] + 1e-12),
            dev_rows[in_source].reset_index(drop=True),
        )
        for task in ("topic", "sentiment"):
            if part[task]["support"]:
                result[f"{variant} {task}, {source} only (n={part[task]['support']})"] = {
                    "accuracy": part[task]["accuracy"],
                    "macro_f1": part[task]["macro_f1"],
                }
    return result
