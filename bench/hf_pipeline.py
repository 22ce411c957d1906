"""A Hugging Face `Pipeline` over the multi-task PyTorch model: the per-message baseline."""

from __future__ import annotations

from typing import Any

import torch
from transformers import Pipeline, PreTrainedTokenizerFast

from model.calibration import softmax
from model.labels import SENTIMENT_LABELS, TOPIC_LABELS
from model.network import MultiTaskClassifier
from model.text import normalize_text


class MultiTaskPipeline(Pipeline):  # type: ignore[misc]
    """Text -> {topic, sentiment, probabilities}, one message at a time as pipelines run."""

    def __init__(
        self,
        network: MultiTaskClassifier,
        tokenizer: PreTrainedTokenizerFast,
        temperatures: dict[str, float],
        max_tokens: int,
    ) -> None:
        self.temperatures = temperatures
        self.max_tokens = max_tokens
        # Pipeline expects a PreTrainedModel; these two attributes are all it reads of one here.
        network.config = network.encoder_config
        network.device = torch.device("cpu")  # type: ignore[assignment]
        super().__init__(model=network, tokenizer=tokenizer, device=torch.device("cpu"))

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return {}, {}, {}

    def preprocess(self, text: str) -> dict[str, torch.Tensor]:
        """Normalise and tokenise one message into the network's input tensors."""
        assert self.tokenizer is not None
        encoded: dict[str, torch.Tensor] = self.tokenizer(
            normalize_text(text), truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def _forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        topic, sentiment = self.model(inputs["input_ids"], inputs["attention_mask"])
        return {"topic": topic, "sentiment": sentiment}

    def postprocess(self, outputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Calibrated probabilities of both heads and their top labels."""
        topic = softmax(outputs["topic"].numpy(), self.temperatures["topic"])[0]
        sentiment = softmax(outputs["sentiment"].numpy(), self.temperatures["sentiment"])[0]
        return {
            "topic": TOPIC_LABELS[int(topic.argmax())],
            "sentiment": SENTIMENT_LABELS[int(sentiment.argmax())],
            "topic_probs": topic,
            "sentiment_probs": sentiment,
        }
