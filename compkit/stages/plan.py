"""``compkit plan``: a recipe fitted to a dataset, this machine and a time budget, with one line of reasons per
decision (the planning itself lives in :mod:`compkit.planning`). The plan is an ordinary recipe file that extends a
base recipe: read it, edit it, train it with ``compkit train --recipe PLAN.yaml``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from compkit.planning.planner import BASE_RECIPE, PlanMachine, plan_recipe, write_plan
from compkit.training.runs import output_folder
from compkit.util.console import output_console

DEFAULT_OUT = "plan.yaml"


def plan(
    data: str | Path,
    budget: str | float = "10m",
    device: str = "auto",
    memory: str | None = None,
    folds: int | None = None,
    out: str | Path | None = None,
    exist_ok: bool = False,
    base: str = BASE_RECIPE,
    console: Console | None = None,
) -> Path:
    """Plan a recipe for ``data`` within ``budget`` (``10m``, ``6h``: the whole pipeline) on ``device``; writes it to
    ``out`` (default ``plan.yaml``, or ``plan-2.yaml`` when taken) and returns the path."""
    console = console or output_console()
    target = output_folder(Path(out or DEFAULT_OUT), explicit=out is not None, exist_ok=exist_ok)
    planned = plan_recipe(data, budget, PlanMachine(device, memory), folds=folds, base=base, console=console)
    for line in planned.reasons:
        console.print(f"  {line}")
    write_plan(planned, target)
    console.print(f"wrote {target}; next: compkit train --recipe {target} --data {data} --fold all")
    return target
