"""Inference engine: tokenise, batch by length, run the ONNX graph, return calibrated scores."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from model.batching import length_sorted_batches, pad_batch
from model.labels import SENTIMENT_LABELS, TOPIC_LABELS
from model.manifest import DEFAULT_MODEL_DIR, read_manifest
from model.tokenization import encode_batch, encode_texts, load_tokenizer

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]

CPU_BATCH_SIZE = 8
GPU_BATCH_SIZE = 64
# Load-time fusions to skip on CPU: ONNX Runtime would re-fuse the CPU graphs' residual Add +
# LayerNormalization into SkipLayerNormalization, whose CPU kernel is the slower of the two.
CPU_DISABLED_FUSIONS = ["SkipLayerNormFusion"]


@lru_cache(maxsize=1)
def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, or None when onnxruntime has CUDA and the driver reports a GPU.

    onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU; asking
    for it there prints a wall of errors, so check the driver first.
    """
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider"
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver: libcuda.so.1 cannot be loaded"
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return "the NVIDIA driver failed to initialise"
    return None if count.value > 0 else "the NVIDIA driver reports no GPU"


def cuda_usable() -> bool:
    """True only when onnxruntime has the CUDA provider and the driver reports a GPU."""
    return cuda_problem() is None


def _tensorrt_usable() -> bool:
    return (
        "TensorrtExecutionProvider" in ort.get_available_providers()
        and os.environ.get("FINSENT_TENSORRT", "1") != "0"
        and ctypes.util.find_library("nvinfer") is not None
    )


def providers_for(device: Device) -> list[str]:
    """Execution providers to request: TensorRT/CUDA when a GPU is usable, else CPU only."""
    if device == "cpu" or (device == "auto" and not cuda_usable()):
        return ["CPUExecutionProvider"]
    if device == "cuda" and not cuda_usable():
        raise RuntimeError(f"device 'cuda': no usable CUDA GPU ({cuda_problem()})")
    gpu = ["TensorrtExecutionProvider"] if _tensorrt_usable() else []
    return [*gpu, "CUDAExecutionProvider", "CPUExecutionProvider"]


class OnnxSession:
    """An ONNX Runtime session over the two-head graph."""

    def __init__(self, path: Path, device: Device = "auto", threads: int = 0, spin: bool = True) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = providers_for(device)
        self.session = ort.InferenceSession(
            str(path),
            options,
            providers=providers,
            disabled_optimizers=CPU_DISABLED_FUSIONS if providers == ["CPUExecutionProvider"] else [],
        )
        self.providers: list[str] = self.session.get_providers()

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(topic_probs, sentiment_probs) for one padded batch."""
        topic, sentiment = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        return np.asarray(topic, dtype=np.float32), np.asarray(sentiment, dtype=np.float32)


@dataclass(frozen=True)
class Prediction:
    """One text's calibrated result."""

    topic: str
    topic_score: float
    sentiment: str
    sentiment_scores: dict[str, float]
    truncated: bool = False
    """The text was longer than the token budget and was scored on its first tokens."""


class Engine:
    """Loads a verified model directory and classifies texts in length-sorted micro-batches."""

    def __init__(
        self,
        model_dir: Path = DEFAULT_MODEL_DIR,
        *,
        variant: str = "auto",
        device: Device = "auto",
        batch_size: int | None = None,
        max_tokens: int | None = None,
        threads: int = 0,
        verify: bool = True,
        spin: bool = True,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir, verify=verify)
        self.version: str = self.manifest["version"]
        problem = cuda_problem() if device == "cuda" else None
        if problem is not None:
            raise RuntimeError(f"device 'cuda': no usable CUDA GPU ({problem})")
        on_gpu = device == "cuda" or (device == "auto" and cuda_usable())
        self.variant = self._choose_variant(variant, on_gpu)
        if device == "cuda" and self.variant == "int8":
            raise ValueError(
                f"device 'cuda': the int8 variant runs on CPU only and is what {self.model_dir} offers "
                f"(variants: {', '.join(sorted(self.manifest['variants']))}); use device 'cpu' or 'auto'"
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        # On CPU, small length-sorted runs beat one padded run: a stream micro-batch of 64 tweets
        # scores fastest as runs of 8 (bench/results/engine_batching.json has each run size measured).
        # A GPU wants wide runs to fill its cores.
        session_device: Device = "cuda" if on_gpu and self.variant != "int8" else "cpu"
        default_batch = GPU_BATCH_SIZE if session_device == "cuda" else CPU_BATCH_SIZE
        self.batch_size = default_batch if batch_size is None else batch_size
        graph_path = self.model_dir / self.manifest["variants"][self.variant]
        self.max_tokens = self._token_budget(max_tokens, self.manifest.get("max_positions"))
        self.tokenizer = load_tokenizer(self.model_dir, self.max_tokens)
        self.session = OnnxSession(graph_path, session_device, threads, spin)

    def _token_budget(self, requested: int | None, limit: int | None) -> int:
        """The requested budget (refused above the graph's positions), else the manifest's (capped)."""
        if requested is not None:
            if limit is not None and requested > limit:
                raise ValueError(
                    f"max_tokens {requested} is more than the {limit} positions the graph of "
                    f"{self.model_dir} holds; use at most {limit}"
                )
            return requested
        budget = int(self.manifest["max_tokens"])
        if limit is not None and budget > limit:
            log.warning(
                "model %s: manifest max_tokens %d is more than the %d positions its graph holds; "
                "truncating texts to %d tokens",
                self.model_dir,
                budget,
                limit,
                limit,
            )
            return limit
        return budget

    def _choose_variant(self, requested: str, on_gpu: bool) -> str:
        available = self.manifest["variants"]
        if requested != "auto":
            if requested not in available:
                raise ValueError(
                    f"model variant {requested!r} is not in {self.model_dir} "
                    f"(available: {', '.join(sorted(available))})"
                )
            return requested
        preference = ("fp16", "fp32", "int8") if on_gpu else ("int8", "fp32")
        for candidate in preference:
            if candidate in available:
                return candidate
        raise ValueError(f"{self.model_dir} has no variant usable on {'GPU' if on_gpu else 'CPU'}")

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually runs on."""
        return self.session.providers

    def probabilities(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated (topic, sentiment) probability matrices, rows in input order."""
        return self._run(encode_texts(self.tokenizer, texts))

    def _run(self, token_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        topic = np.zeros((len(token_ids), len(TOPIC_LABELS)), dtype=np.float32)
        sentiment = np.zeros((len(token_ids), len(SENTIMENT_LABELS)), dtype=np.float32)
        for batch in length_sorted_batches([len(ids) for ids in token_ids], self.batch_size):
            input_ids, attention_mask = pad_batch([token_ids[i] for i in batch])
            topic[batch], sentiment[batch] = self.session.run(input_ids, attention_mask)
        return topic, sentiment

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Topic, topic score, sentiment and all three sentiment probabilities per text."""
        encodings = encode_batch(self.tokenizer, texts)
        topic, sentiment = self._run([encoding.ids for encoding in encodings])
        results = []
        for topic_row, sentiment_row, encoding in zip(topic, sentiment, encodings, strict=True):
            best_topic = int(topic_row.argmax())
            results.append(
                Prediction(
                    topic=TOPIC_LABELS[best_topic],
                    topic_score=float(topic_row[best_topic]),
                    sentiment=SENTIMENT_LABELS[int(sentiment_row.argmax())],
                    sentiment_scores={
                        name: float(value)
                        for name, value in zip(SENTIMENT_LABELS, sentiment_row, strict=True)
                    },
                    truncated=bool(encoding.overflowing),
                )
            )
        return results
