"""Losses: a weighted sum of segmentation-models-pytorch's multilabel losses (and BCE), chosen by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _smp(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from segmentation_models_pytorch import losses

        cls = {
            "dice": losses.DiceLoss,
            "jaccard": losses.JaccardLoss,
            "focal": losses.FocalLoss,
            "tversky": losses.TverskyLoss,
            "lovasz": losses.LovaszLoss,
        }[name]
        return cls("multilabel", from_logits=True) if name != "focal" else cls("multilabel")

    return build


LOSSES: dict[str, Callable[[], nn.Module]] = {
    "bce": nn.BCEWithLogitsLoss,
    "dice": _smp("dice"),
    "jaccard": _smp("jaccard"),
    "focal": _smp("focal"),
    "tversky": _smp("tversky"),
    "lovasz": _smp("lovasz"),
}


class WeightedLoss(nn.Module):
    """sum_i w_i * loss_i(logits, target); ``terms`` holds each term's last value for logging."""

    def __init__(self, weights: dict[str, float]):
        super().__init__()
        self.weights = dict(weights)
        self.losses = nn.ModuleDict({name: LOSSES[name]() for name in weights})
        self.terms: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        terms = {}
        for name, loss in self.losses.items():
            value = loss(logits.float(), target.float())
            terms[name] = value.detach()
            total = total + self.weights[name] * value
        self.terms = terms
        return total


def create_loss(weights: dict[str, float]) -> WeightedLoss:
    return WeightedLoss(weights)
