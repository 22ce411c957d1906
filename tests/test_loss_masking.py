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
