"""Optimizers (timm's factory: Lion included) and learning-rate schedules (torch's schedulers)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import lr_scheduler

from compkit.recipe import OptimConfig, SchedConfig


def create_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {}
    if cfg.name in ("sgd", "rmsprop"):
        kwargs["momentum"] = cfg.momentum
    return create_optimizer_v2(model, opt=cfg.name, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


class Schedule:
    """One object for every schedule: ``after_step()`` each optimizer step, ``after_validation(dice)`` each
    validation. Warm-up is linear over the first ``warmup_epochs``; plateau watches validation dice."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedConfig, steps_per_epoch: int, epochs: int):
        self.cfg = cfg
        total = max(1, steps_per_epoch * epochs)
        warmup = min(total - 1, int(round(cfg.warmup_epochs * steps_per_epoch))) if cfg.name != "onecycle" else 0
        self.per_step: lr_scheduler.LRScheduler | None = None
        self.plateau: lr_scheduler.ReduceLROnPlateau | None = None
        main: lr_scheduler.LRScheduler | None = None
        if cfg.name == "cosine":
            main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=cfg.min_lr)
        elif cfg.name == "step":
            main = lr_scheduler.StepLR(optimizer, step_size=cfg.step_epochs * steps_per_epoch, gamma=cfg.factor)
        elif cfg.name == "onecycle":
            max_lr = [g["lr"] for g in optimizer.param_groups]
            main = lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=cfg.pct_start)
        elif cfg.name == "plateau":
            self.plateau = lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr
            )
        if warmup > 0:
            warm = lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
            if main is not None:
                main = lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup])
            else:
                main = warm
        self.per_step = main
        self.optimizer = optimizer

    def after_step(self) -> None:
        if self.per_step is not None:
            self.per_step.step()

    def after_validation(self, dice: float) -> None:
        if self.plateau is not None and math.isfinite(dice):
            self.plateau.step(dice)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "per_step": self.per_step.state_dict() if self.per_step is not None else None,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.per_step is not None and state.get("per_step") is not None:
            self.per_step.load_state_dict(state["per_step"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])


def create_schedule(optimizer: torch.optim.Optimizer, cfg: SchedConfig, steps_per_epoch: int, epochs: int) -> Schedule:
    return Schedule(optimizer, cfg, steps_per_epoch, epochs)
