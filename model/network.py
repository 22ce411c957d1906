"""The multi-task network: one BERT encoder, mean pooling, a topic head and a sentiment head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel

from model.labels import IGNORE_INDEX, SENTIMENT_LABELS, TOPIC_LABELS


class MultiTaskClassifier(nn.Module):
    """Shared encoder with two linear heads; returns (topic_logits, sentiment_logits)."""

    def __init__(self, encoder: nn.Module, hidden_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder_config: Any = getattr(encoder, "config", None)
        self.dropout = nn.Dropout(dropout)
        self.topic_head = nn.Linear(hidden_size, len(TOPIC_LABELS))
        self.sentiment_head = nn.Linear(hidden_size, len(SENTIMENT_LABELS))

    @classmethod
    def from_base(cls, base_dir: Path) -> MultiTaskClassifier:
        """Build the network around a local Hugging Face BERT-family checkpoint directory."""
        encoder = AutoModel.from_pretrained(str(base_dir), local_files_only=True)
        return cls(encoder, int(encoder.config.hidden_size))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of both heads for a padded batch."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        pooled = self.dropout(pooled)
        return self.topic_head(pooled), self.sentiment_head(pooled)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors that the mask marks as real (the base was trained this way)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over rows that carry a label; zero (not NaN) when none does."""
    has_label = labels != IGNORE_INDEX
    if not bool(has_label.any()):
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits[has_label], labels[has_label])


def multitask_loss(
    topic_logits: torch.Tensor,
    sentiment_logits: torch.Tensor,
    topic_labels: torch.Tensor,
    sentiment_labels: torch.Tensor,
    sentiment_weight: float = 1.0,
) -> torch.Tensor:
    """Weighted sum of both heads' losses, each masked to the rows that have that head's label."""
    return masked_cross_entropy(topic_logits, topic_labels) + sentiment_weight * masked_cross_entropy(
        sentiment_logits, sentiment_labels
    )
