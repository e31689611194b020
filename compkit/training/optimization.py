"""Optimizers (timm's factory: Lion included) and learning-rate schedules (torch's schedulers)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import lr_scheduler

from compkit.training.recipe import OptimConfig, SchedConfig


def create_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2  # timm is slow to import; only training needs it

    kwargs: dict[str, Any] = {}
    if cfg.name in ("sgd", "rmsprop"):
        kwargs["momentum"] = cfg.momentum
    return create_optimizer_v2(model, opt=cfg.name, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 25.0, 1e4  # torch's OneCycleLR defaults: start at max/25, end at start/1e4


def lr_factor(cfg: SchedConfig, step: int, total: int, steps_per_epoch: int, base_lr: float) -> float:
    """The learning rate at optimizer ``step`` of ``total``, as a fraction of the base rate: a pure function of
    the step, so every schedule works for any length (a 10-step run too) and a resumed run whose ``train.epochs``
    grew simply continues on the longer curve.

    - ``cosine``: linear warm-up over ``warmup_epochs`` from 1% of the rate, then cosine annealing to ``min_lr``
      at the last step;
    - ``onecycle``: cosine ramp from rate/25 to the rate over ``pct_start`` of the run, then cosine annealing to
      rate/25/1e4 (torch's OneCycleLR);
    - ``step``: warm-up, then times ``factor`` every ``step_epochs`` epochs;
    - ``none`` and ``plateau``: warm-up, then constant (plateau lowers it on validation, outside this function).
    """
    total = max(1, total)
    step = min(max(0, step), total)
    if cfg.name == "onecycle":
        p = step / total
        start = 1.0 / ONECYCLE_DIV
        if p < cfg.pct_start:
            return start + (1.0 - start) * (1.0 - math.cos(math.pi * p / cfg.pct_start)) / 2.0
        q = (p - cfg.pct_start) / max(1e-12, 1.0 - cfg.pct_start)
        end = start / ONECYCLE_FINAL_DIV
        return end + (1.0 - end) * (1.0 + math.cos(math.pi * q)) / 2.0
    warmup = min(total - 1, int(round(cfg.warmup_epochs * steps_per_epoch)))
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    if cfg.name == "cosine":
        floor = min(1.0, cfg.min_lr / base_lr) if base_lr > 0 else 0.0
        q = (step - warmup) / max(1, total - warmup)
        return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * q)) / 2.0
    if cfg.name == "step":
        return cfg.factor ** ((step - warmup) // max(1, cfg.step_epochs * steps_per_epoch))
    return 1.0


class Schedule:
    """One object for every schedule: ``after_step()`` each optimizer step, ``after_validation(dice)`` each
    validation. The per-step rate is :func:`lr_factor` of the step; plateau also scales it down when validation
    dice stops improving. The state is the step count (and plateau's), so :meth:`load_state_dict` into a
    schedule built for more epochs resumes on the longer schedule."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedConfig, steps_per_epoch: int, epochs: int):
        self.cfg, self.optimizer = cfg, optimizer
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total = self.steps_per_epoch * max(1, epochs)
        self.base = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        for group, base in zip(optimizer.param_groups, self.base, strict=True):
            group["initial_lr"] = base
        self.step_count = 0
        self.plateau_scale = 1.0
        self.plateau = None
        if cfg.name == "plateau":
            self.plateau = lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr
            )
        self._apply()

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            rate = (
                base * lr_factor(self.cfg, self.step_count, self.total, self.steps_per_epoch, base) * self.plateau_scale
            )
            group["lr"] = max(rate, self.cfg.min_lr) if self.plateau is not None else rate

    def after_step(self) -> None:
        self.step_count += 1
        self._apply()

    def after_validation(self, dice: float) -> None:
        if self.plateau is not None and math.isfinite(dice):
            self.plateau.step(dice)
            # ReduceLROnPlateau lowered the groups' rates in place: keep that as a scale on top of the warm-up.
            self.plateau_scale = self.optimizer.param_groups[0]["lr"] / max(
                1e-30,
                self.base[0] * lr_factor(self.cfg, self.step_count, self.total, self.steps_per_epoch, self.base[0]),
            )
            self._apply()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_count,
            "plateau_scale": self.plateau_scale,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Checkpoints from before: torch schedulers' state, whose step count is ``last_epoch``.
        self.step_count = int(state["step"] if "step" in state else (state.get("per_step") or {}).get("last_epoch", 0))
        self.plateau_scale = float(state.get("plateau_scale", 1.0))
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
        self._apply()


def create_schedule(optimizer: torch.optim.Optimizer, cfg: SchedConfig, steps_per_epoch: int, epochs: int) -> Schedule:
    return Schedule(optimizer, cfg, steps_per_epoch, epochs)
