from __future__ import annotations

import pytest
import torch

from compkit.training.optimization import create_optimizer, create_schedule
from compkit.training.recipe import OPTIMIZERS, SCHEDULERS, OptimConfig, SchedConfig


def tiny_problem():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    return model, lambda: torch.nn.functional.mse_loss(model(x), y)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_steps_and_lowers_the_loss(name):
    model, loss_fn = tiny_problem()
    optimizer = create_optimizer(model, OptimConfig(name=name, lr=1e-2, weight_decay=0.0))
    before = loss_fn().item()
    for _ in range(20):
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    assert loss_fn().item() < before
    if name == "lion":
        assert type(optimizer).__name__ == "Lion"


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("warmup", [0.0, 1.0])
def test_each_schedule_steps_and_round_trips(name, warmup):
    model, loss_fn = tiny_problem()
    optimizer = create_optimizer(model, OptimConfig(name="adamw", lr=1e-2))
    schedule = create_schedule(
        optimizer, SchedConfig(name=name, warmup_epochs=warmup, patience=0, step_epochs=1), steps_per_epoch=5, epochs=4
    )
    lrs = []
    for _epoch in range(4):
        for _ in range(5):
            optimizer.zero_grad()
            loss_fn().backward()
            optimizer.step()
            schedule.after_step()
            lrs.append(schedule.lr)
        schedule.after_validation(0.5)  # never improves: plateau reduces
    if name == "none" and not warmup:
        assert len(set(lrs)) == 1
    else:
        assert len(set(lrs)) > 1, f"{name} never changed the learning rate"
    if warmup and name != "onecycle":  # onecycle warms up on its own (pct_start)
        assert lrs[0] < 0.5 * max(lrs)
    state = schedule.state_dict()
    again = create_schedule(
        create_optimizer(model, OptimConfig(name="adamw", lr=1e-2)), SchedConfig(name=name, warmup_epochs=warmup), 5, 4
    )
    again.load_state_dict(state)
    assert again.state_dict().keys() == state.keys()
