"""The classifier: ONNX inference engine, labels and the model directory format.

Training and export (`model.train`, `model.export`) need the `train` extra (PyTorch);
everything importable from here needs only ONNX Runtime and tokenizers.
"""

from model.engine import Engine, Prediction, cuda_usable
from model.labels import SENTIMENT_LABELS, TOPIC_LABELS
from model.manifest import DEFAULT_MODEL_DIR, ModelIntegrityError, read_manifest
from model.registry import ModelRegistry, RegistryError

__all__ = [
    "DEFAULT_MODEL_DIR",
    "SENTIMENT_LABELS",
    "TOPIC_LABELS",
    "Engine",
    "ModelIntegrityError",
    "ModelRegistry",
    "Prediction",
    "RegistryError",
    "cuda_usable",
    "read_manifest",
]
