import torch

from model.labels import IGNORE_INDEX
from model.network import masked_cross_entropy, mean_pool, multitask_loss


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
