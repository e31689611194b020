from __future__ import annotations

import pytest
import torch

from compkit.training.losses import LOSSES, create_loss
from compkit.training.recipe import LOSS_TERMS


def test_registry_covers_the_recipe_terms():
    assert set(LOSSES) == set(LOSS_TERMS)


@pytest.mark.parametrize("term", LOSS_TERMS)
def test_each_term_builds_steps_and_prefers_the_truth(term):
    torch.manual_seed(0)
    target = (torch.rand(2, 3, 16, 16) > 0.7).float()
    loss = create_loss({term: 1.0})
    good = loss(target * 8 - 4, target)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    bad = loss(logits, target)
    bad.backward()
    assert torch.isfinite(bad) and logits.grad is not None and logits.grad.abs().sum() > 0
    assert good < bad
    assert set(loss.terms) == {term}


def test_weighted_sum():
    target = (torch.rand(1, 2, 8, 8) > 0.5).float()
    logits = torch.randn(1, 2, 8, 8)
    both = create_loss({"bce": 0.25, "dice": 2.0})
    total = both(logits, target)
    expected = 0.25 * create_loss({"bce": 1})(logits, target) + 2.0 * create_loss({"dice": 1})(logits, target)
    assert torch.allclose(total, expected)
