from pathlib import Path

import pytest
import torch

from model.labels import IGNORE_INDEX
from model.network import distillation_loss, head_loss, masked_cross_entropy, mean_pool, multitask_loss


def test_rows_without_a_label_do_not_contribute() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    labelled_only = masked_cross_entropy(logits[:1], torch.tensor([0]))
    mixed = masked_cross_entropy(logits, torch.tensor([0, IGNORE_INDEX]))
    assert torch.isclose(labelled_only, mixed)


def test_head_without_labels_gets_zero_loss_and_no_gradient() -> None:
    topic = torch.randn(4, 20, requires_grad=True)
    sentiment = torch.randn(4, 3, requires_grad=True)
    loss = multitask_loss(topic, sentiment, torch.tensor([1, 2, 3, 4]), torch.full((4,), IGNORE_INDEX))
    loss.backward()
    assert torch.isfinite(loss)
    assert sentiment.grad is not None and torch.all(sentiment.grad == 0)
    assert topic.grad is not None and torch.any(topic.grad != 0)


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).item() == 2.0


def test_layer_decay_scales_learning_rate_by_depth_and_spares_norms_from_weight_decay() -> None:
    from transformers import BertConfig, BertModel

    from model.network import MultiTaskClassifier
    from model.train import parameter_groups

    encoder = BertModel(
        BertConfig(
            vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16
        )
    )
    network = MultiTaskClassifier(encoder, 8)
    groups = parameter_groups(network, learning_rate=1.0, weight_decay=0.01, layer_decay=0.5)
    setting = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(network.named_parameters())
    assert len(setting) == len(named)
    assert setting[id(named["topic_head.weight"])] == (1.0, 0.01)
    assert setting[id(named["sentiment_head.bias"])] == (1.0, 0.0)
    assert setting[id(named["encoder.encoder.layer.1.output.dense.weight"])] == (0.5, 0.01)
    assert setting[id(named["encoder.encoder.layer.0.output.LayerNorm.weight"])] == (0.25, 0.0)
    assert setting[id(named["encoder.embeddings.word_embeddings.weight"])] == (0.125, 0.01)

    one_rate = parameter_groups(network, learning_rate=1.0, weight_decay=0.01, layer_decay=1.0)
    assert sorted((g["lr"], g["weight_decay"]) for g in one_rate) == [(1.0, 0.0), (1.0, 0.01)]


def test_distillation_pulls_the_student_towards_the_teacher_only_by_its_weight() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    labels = torch.tensor([0, IGNORE_INDEX])
    same = torch.softmax(logits, dim=-1)
    other = torch.tensor([[0.1, 0.8, 0.1], [0.6, 0.2, 0.2]])
    assert torch.isclose(distillation_loss(logits, same), torch.tensor(0.0), atol=1e-6)
    assert distillation_loss(logits, other) > 0.1
    gold = masked_cross_entropy(logits, labels)
    assert torch.isclose(head_loss(logits, labels), gold)
    assert torch.isclose(head_loss(logits, labels, other, 0.0), gold)
    assert torch.isclose(head_loss(logits, labels, other, 1.0), distillation_loss(logits, other))
    half = head_loss(logits, labels, other, 0.5)
    assert torch.isclose(half, 0.5 * gold + 0.5 * distillation_loss(logits, other))


def test_unlabelled_rows_learn_from_the_teacher_when_distilling() -> None:
    sentiment = torch.zeros(2, 3, requires_grad=True)
    teacher = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    no_labels = torch.full((2,), IGNORE_INDEX)
    loss = multitask_loss(
        torch.zeros(2, 20),
        sentiment,
        torch.tensor([1, 2]),
        no_labels,
        teacher_probs=(None, teacher),
        distill_weight=0.5,
    )
    loss.backward()
    assert sentiment.grad is not None
    # Gradient descent moves each row's logits towards the teacher's favourite class.
    assert sentiment.grad[0].argmin() == 0 and sentiment.grad[1].argmin() == 2


def test_teacher_ensemble_averages_each_head_over_the_teachers_that_trained_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np

    from model import train

    outputs = {
        "full": {
            "topic": np.full((2, 20), 0.05, dtype=np.float32),
            "sentiment": np.array([[0.6, 0.2, 0.2]] * 2),
        },
        "sentiment-only": {"topic": None, "sentiment": np.array([[0.2, 0.2, 0.6]] * 2)},
    }
    monkeypatch.setattr(train, "teacher_probabilities", lambda path, *_: outputs[path.name])
    mean = train.ensemble_probabilities((Path("full"), Path("sentiment-only")), ["a", "b"], 128, False)
    assert mean["topic"] is not None and np.allclose(mean["topic"], 0.05)
    assert mean["sentiment"] is not None and np.allclose(mean["sentiment"], [[0.4, 0.2, 0.4]] * 2)
    alone = train.ensemble_probabilities((Path("sentiment-only"),), ["a", "b"], 128, False)
    assert alone["topic"] is None
