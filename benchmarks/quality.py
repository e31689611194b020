"""Generalisation check: the planned recipe (`compkit plan`) vs `tiny`, the same time budget, on synthetic dataset
variants the defaults were not tuned on (other sizes, contrast, noise, patient counts and bone widths than the
demo's hand bones; fundus lesions; skin lesions; a non-square one), in the same run on the same machine.

Each variant: synth -> split (2 folds) -> for each recipe: train every fold within the budget -> soft ensemble
(OOF-tuned thresholds) -> submit -> score on the held-out test labels. The table gives each recipe's test mean dice,
the difference, and each pipeline's wall time against the budget.

Run: .venv/bin/python benchmarks/quality.py [--budget 10m] [--variants handbone-thin fundus ...] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compkit.ensemble import ensemble
from compkit.planning import PLAN_NAME, describe_seconds, parse_budget
from compkit.score import score
from compkit.split import split
from compkit.submit import submit
from compkit.synth import synth
from compkit.train import train

# name -> (synth kind, synth arguments): none of these is the demo's data (40 patients, 512 px, standard contrast).
VARIANTS = {
    "handbone-thin": ("handbone", {"patients": 16, "test_patients": 4, "size": 384, "seed": 7, "options": {"contrast": 0.7, "noise": 1.8, "bone_width": 0.8}}),
    "handbone-portrait": ("handbone", {"patients": 12, "test_patients": 4, "size": 320, "seed": 11, "options": {"contrast": 1.3, "noise": 0.6, "bone_width": 1.2, "aspect": 0.75}}),
    "fundus": ("fundus", {"patients": 20, "test_patients": 5, "size": 256, "seed": 3, "options": {"lesion_scale": 1.5}}),
    "skin": ("isic", {"patients": 40, "test_patients": 10, "size": 192, "seed": 5, "options": {"contrast": 0.7}}),
    # A few seconds' worth, for the benchmark's own test.
    "smoke": ("handbone", {"patients": 3, "test_patients": 1, "size": 96, "seed": 1, "options": {"contrast": 0.8, "bone_width": 1.3}}),
}
DEFAULT_VARIANTS = ("handbone-thin", "handbone-portrait", "fundus", "skin")
RECIPES = (PLAN_NAME, "tiny")


def run_pipeline(recipe: str, data: Path, work: Path, budget_s: float, overrides: list[str], quiet: Console) -> dict:
    """Train every fold within the budget, ensemble, submit and score; the test dice and the wall time."""
    started = time.time()
    runs = train(recipe, data=data, fold="all", overrides=overrides, runs_dir=work / "runs", budget=budget_s, console=quiet)
    ens = ensemble([runs.run_dir], method="soft", name=recipe, out_dir=work / "ensembles", console=quiet)
    csv = submit(ens, out=work / f"{recipe}.csv", console=quiet)
    dice = score(csv, data, console=quiet)
    return {"dice": dice, "seconds": time.time() - started, "epochs": [r["epochs"] for r in runs]}


def benchmark(variants: list[str], budget: str, workdir: Path, recipes: tuple[str, ...] = RECIPES, overrides: list[str] | None = None, console: Console | None = None) -> list[dict]:
    console = console or Console()
    quiet = Console(quiet=True)
    budget_s = parse_budget(budget)
    rows = []
    for name in variants:
        kind, arguments = VARIANTS[name]
        data = workdir / name / "data"
        if not data.is_dir():
            synth(data, kind=kind, console=quiet, **arguments)
            split(data, folds=2, seed=0, console=quiet)
        row = {"variant": name, "kind": kind, "budget_s": budget_s, **{k: v for k, v in arguments.items() if k != "seed"}}
        for recipe in recipes:
            console.print(f"{name}: {recipe} with a {describe_seconds(budget_s)} budget ...")
            row[recipe] = run_pipeline(recipe, data, workdir / name / recipe, budget_s, list(overrides or []), quiet)
            console.print(f"  test mean dice {row[recipe]['dice']:.4f} in {row[recipe]['seconds']:.0f} s (epochs per fold {row[recipe]['epochs']})")
        rows.append(row)
    return rows


def table(rows: list[dict], recipes: tuple[str, ...] = RECIPES) -> Table:
    out = Table(title="test mean dice at the same time budget (higher is better)")
    for column in ("variant", "budget", *(f"{r} dice" for r in recipes), "difference", *(f"{r} wall" for r in recipes)):
        out.add_column(column, justify="left" if column == "variant" else "right")
    for row in rows:
        dice = [row[r]["dice"] for r in recipes]
        out.add_row(
            row["variant"],
            describe_seconds(row["budget_s"]),
            *(f"{d:.4f}" for d in dice),
            f"{dice[0] - dice[-1]:+.4f}",
            *(f"{row[r]['seconds']:.0f} s" + (" (over)" if row[r]["seconds"] > row["budget_s"] else "") for r in recipes),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="10m", help="time budget of each recipe's whole pipeline (10m, 90s)")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=sorted(VARIANTS))
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the data and runs (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), help="recipes to compare (the last is the reference)")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        rows = benchmark(args.variants, args.budget, args.workdir or Path(tmp), recipes=tuple(args.recipes), console=console)
    recipes = tuple(args.recipes)
    console.print(table(rows, recipes))
    if len(recipes) > 1:
        first, reference = recipes[0], recipes[-1]
        wins = sum(r[first]["dice"] > r[reference]["dice"] for r in rows)
        worst = min(r[first]["dice"] - r[reference]["dice"] for r in rows)
        console.print(f"{first} beats {reference} on {wins} of {len(rows)} variants; worst difference {worst:+.4f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
