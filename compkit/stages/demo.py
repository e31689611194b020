"""``compkit demo``: the whole pipeline on synthetic data, end to end, with one summary table.

synth -> split (2 folds) -> plan a recipe for the time budget (``compkit plan``) and train it on both folds (each
fold also predicts the test set with the plan's TTA) -> soft ensemble (thresholds tuned on OOF) -> submit -> score
against the synthetic ground truth; the wall time is printed against the budget.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compkit.planning.planner import describe_seconds, parse_budget
from compkit.stages.ensemble import ensemble
from compkit.stages.score import score
from compkit.stages.split import split
from compkit.stages.submit import submit
from compkit.stages.synth import synth
from compkit.stages.train import train
from compkit.stores.members import ENSEMBLES_DIR
from compkit.submission.layouts import SUBMISSIONS_DIR
from compkit.training.runs import RUNS_DIR
from compkit.util.console import output_console, rule


def demo(
    workdir: str | Path = "demo",
    patients: int = 40,
    test_patients: int = 10,
    size: int = 512,
    recipe: str = "plan",
    overrides: list[str] | tuple[str, ...] = (),
    budget: str | float | None = "10m",
    console: Console | None = None,
) -> float:
    """Run the demo in ``workdir``; returns the test mean dice. ``recipe="plan"`` plans for what is left of
    ``budget`` after synthesis and splitting; another recipe trains each fold for its share of it."""
    console = console or output_console()
    workdir = Path(workdir)
    data = workdir / "data"
    steps: list[tuple[str, float, str]] = []
    started = time.time()

    def step(name: str, detail: str, t0: float) -> None:
        steps.append((name, time.time() - t0, detail))
        rule(console, f"[bold]{name}[/bold] done in {time.time() - t0:.0f} s")

    t0 = time.time()
    synth(data, patients=patients, test_patients=test_patients, size=size, seed=0, exist_ok=True, console=console)
    step("synth", f"{2 * patients} train + {2 * test_patients} test images, {size} px", t0)
    t0 = time.time()
    split(data, folds=2, seed=21, stratify="sex", exist_ok=True, console=console)
    step("split", "2 patient-grouped folds, stratified by sex", t0)
    t0 = time.time()
    left = None if budget is None else max(1.0, parse_budget(budget) - (time.time() - started))
    runs = workdir / RUNS_DIR
    results = train(recipe, data=data, fold="all", overrides=list(overrides), out=runs, budget=left, console=console)
    step("train", ", ".join(f"fold {r['fold']} val dice {r['best_dice']:.4f}" for r in results), t0)
    t0 = time.time()
    ens = ensemble([results.run_dir], method="soft", name="demo", out=workdir / ENSEMBLES_DIR, console=console)
    step("ensemble", f"soft vote of {len(results)} folds, thresholds tuned on OOF -> {ens}", t0)
    t0 = time.time()
    csv = submit(ens, out=workdir / SUBMISSIONS_DIR / "demo.csv", console=console)
    step("submit", str(csv), t0)
    t0 = time.time()
    dice = score(csv, data, console=console)
    step("score", f"test mean dice {dice:.4f}", t0)

    wall = time.time() - started
    against = (
        ""
        if budget is None
        else f" of the {describe_seconds(parse_budget(budget))} budget"
        + (" (over)" if wall > parse_budget(budget) else "")
    )
    table = Table(title=f"compkit demo: test mean dice {dice:.4f} in {wall:.0f} s{against}")
    for column in ("step", "seconds", "result"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for name, seconds, detail in steps:
        table.add_row(name, f"{seconds:.0f}", detail)
    console.print(table)
    fold = results.run_dir / "fold0"
    console.print(
        f"wrote {workdir}: {data} (the synthetic X-rays), {results.run_dir} (per fold results.png: the curves, "
        f"val_overlays.png: the worst validation images; cv.csv), {ens} (oof_dice.csv: dice per class), {csv}"
    )
    console.print(f"look first: {fold / 'val_overlays.png'}; next: compkit inspect {ens} (where the errors are)")
    return dice
