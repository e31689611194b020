"""Generalisation check: the planned recipe (`compkit plan`) vs `tiny`, the same time budget, on synthetic dataset
variants the defaults were not tuned on (other sizes, contrast, noise, patient counts and bone widths than the
demo's hand bones; fundus lesions; skin lesions; a non-square one), in the same run on the same machine; and real
data: ``drive``, the DRIVE retinal vessels read in place from ../shared/data/DRIVE (J. Staal et al.,
"Ridge-based vessel segmentation in color images of the retina", IEEE TMI 23(4), 2004; 20 training, 20 test
images; skipped with a line where ../shared is absent).

Each variant: synth (or, for real data, check-data --out and split --out beside the read-only data) -> split
(2 folds) -> for each recipe: train every fold within the budget -> soft ensemble (OOF-tuned thresholds) -> submit ->
score on the held-out test labels. The table gives each recipe's test mean dice (per image, as `compkit score`),
its pooled dice (over all test pixels at once: for DRIVE the papers' pixel-level F1 inside the field of view,
about 0.82-0.83 for the published state of the art), the image size trained at, the difference, and each
pipeline's wall time against the budget. ``tune`` (``--recipes plan tune``): a study around the recipe planned for a
quarter of the budget (TUNE_TRIALS trials of the lr-loss space on fold 0, in three quarters), then its best recipe
on every fold in what is left: the same total wall time as the plan alone.

Run: .venv/bin/python benchmarks/quality.py [--budget 10m] [--recipes plan tune] [--variants handbone-thin fundus drive ...] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compkit.planning.planner import PLAN_NAME, PlanMachine, describe_seconds, parse_budget, plan_recipe, write_plan
from compkit.stages.check_data import check_data
from compkit.stages.ensemble import ensemble
from compkit.stages.score import evaluate
from compkit.stages.split import split
from compkit.stages.submit import submit
from compkit.stages.synth import synth
from compkit.stages.train import train
from compkit.stages.tune import tune
from compkit.util.fileio import read_yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts, not a package
from baseline import plain_smp

# name -> (synth kind, synth arguments): none of these is the demo's data (40 patients, 512 px, standard contrast).
VARIANTS = {
    "handbone-thin": (
        "handbone",
        {
            "patients": 16,
            "test_patients": 4,
            "size": 384,
            "seed": 7,
            "options": {"contrast": 0.7, "noise": 1.8, "bone_width": 0.8},
        },
    ),
    "handbone-portrait": (
        "handbone",
        {
            "patients": 12,
            "test_patients": 4,
            "size": 320,
            "seed": 11,
            "options": {"contrast": 1.3, "noise": 0.6, "bone_width": 1.2, "aspect": 0.75},
        },
    ),
    "fundus": (
        "fundus",
        {"patients": 20, "test_patients": 5, "size": 256, "seed": 3, "options": {"lesion_scale": 1.5}},
    ),
    "skin": ("isic", {"patients": 40, "test_patients": 10, "size": 192, "seed": 5, "options": {"contrast": 0.7}}),
    # A few seconds' worth, for the benchmark's own test.
    "smoke": (
        "handbone",
        {"patients": 3, "test_patients": 1, "size": 96, "seed": 1, "options": {"contrast": 0.8, "bone_width": 1.3}},
    ),
}
# name -> folder under ../shared/data: real data sets, read in place (never copied), skipped where absent.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_VARIANTS = {"drive": "DRIVE"}
DEFAULT_VARIANTS = (
    "handbone-thin",
    "handbone-portrait",
    "fundus",
    "skin",
    "drive",
)  # drive: skipped where ../shared is absent
RECIPES = (PLAN_NAME, "tiny")
BASELINE = "baseline"  # the plain smp script of benchmarks/baseline.py
# `--recipes plan tune`: a search around the planned recipe, then its best recipe trained on every fold, in the same
# total wall time as the plan alone: the study gets TUNE_SHARE of the budget (TUNE_TRIALS trials on fold 0, each its
# fair share), the final training the rest (the recipe planned for that rest is the search's base).
TUNE_NAME = "tune"
TUNE_SHARE = 0.75
TUNE_TRIALS = 8
TUNE_SPACE = "lr-loss"


def tuned_recipe(data: Path, work: Path, budget_s: float, overrides: list[str], quiet: Console) -> tuple[Path, float]:
    """A study around the recipe planned for the final training's share; its best.yaml and the seconds left."""
    started = time.time()
    final_s = budget_s * (1 - TUNE_SHARE)
    splits = next((o.partition("=")[2] for o in overrides if o.startswith("data.splits=")), None)
    planned = plan_recipe(data, final_s, PlanMachine(), splits=splits, console=quiet)
    work.mkdir(parents=True, exist_ok=True)
    base = write_plan(planned, work / f"{PLAN_NAME}.yaml")
    study = tune(
        base,
        TUNE_SPACE,
        data=data,
        trials=TUNE_TRIALS,
        budget=budget_s * TUNE_SHARE,
        out=work / "studies",
        overrides=overrides,
        study="tune",
        console=quiet,
    )
    if study.best_recipe is None:
        raise RuntimeError(f"no trial of {study.folder} completed")
    return study.best_recipe, max(1.0, budget_s - (time.time() - started))


def run_pipeline(recipe: str, data: Path, work: Path, budget_s: float, overrides: list[str], quiet: Console) -> dict:
    """Train every fold within the budget (``tune``: search first, within the same budget), ensemble, submit and
    score; the test dice and the wall time."""
    started = time.time()
    name, trained = recipe, recipe
    if recipe == TUNE_NAME:
        trained, budget_s = tuned_recipe(data, work, budget_s, overrides, quiet)
    runs = train(trained, data=data, fold="all", overrides=overrides, out=work / "runs", budget=budget_s, console=quiet)
    ens = ensemble([runs.run_dir], method="soft", name=name, out=work / "ensembles", console=quiet)
    csv = submit(ens, out=work / f"{name}.csv", console=quiet)
    meter = evaluate(csv, data, console=quiet)
    seconds = time.time() - started
    resolved = read_yaml(Path(runs[0]["folder"]) / "recipe.yaml")
    return {
        "dice": meter.mean(),
        "pooled": float(meter.pooled().mean()),
        "size": resolved["data"]["image_size"],
        "seconds": seconds,
        "epochs": [r["epochs"] for r in runs],
        "encoder": resolved["model"]["encoder"],
        "batch_size": resolved["train"]["batch_size"],
    }


def prepare_real(name: str, work: Path, quiet: Console) -> tuple[Path, Path] | None:
    """A real data set read in place: its description and splits written under ``work`` (the data stays untouched).
    None where ../shared/data lacks it."""
    source = SHARED_DATA / REAL_VARIANTS[name]
    if not source.is_dir():
        return None
    work.mkdir(parents=True, exist_ok=True)
    description, splits = work / "dataset.yaml", work / "splits.json"
    if not description.is_file():
        check_data(source, out=description, console=quiet)
    split(description, folds=2, seed=0, out=splits, console=quiet)
    return description, splits


@contextlib.contextmanager
def user_cache(folder: Path) -> Iterator[None]:
    """The preprocessing cache of read-only data goes to $COMPKIT_CACHE: into ``folder`` for this block, unless set."""
    if "COMPKIT_CACHE" in os.environ:
        yield
        return
    os.environ["COMPKIT_CACHE"] = str(folder)
    try:
        yield
    finally:
        os.environ.pop("COMPKIT_CACHE", None)


def benchmark(
    variants: list[str],
    budget: str,
    workdir: Path,
    recipes: tuple[str, ...] = RECIPES,
    overrides: list[str] | None = None,
    baseline: bool = True,
    console: Console | None = None,
) -> list[dict]:
    """Each variant's row: per recipe its pipeline's figures, and with ``baseline`` the plain smp script's
    (:mod:`baseline`) at the reference recipe's (the last one's) encoder, size, batch and epochs."""
    console = console or Console()
    quiet = Console(quiet=True)
    budget_s = parse_budget(budget)
    rows = []
    for name in variants:
        extra: list[str] = []
        cache: Path | None = None
        splits: Path | None = None
        if name in REAL_VARIANTS:
            prepared = prepare_real(name, workdir / name, quiet)
            if prepared is None:
                console.print(f"{name}: skipped, {SHARED_DATA / REAL_VARIANTS[name]} is absent")
                continue
            data, splits = prepared
            extra = [f"data.splits={splits}"]
            cache = workdir / name / "cache"
            row = {
                "variant": name,
                "kind": "real",
                "budget_s": budget_s,
                "source": str(SHARED_DATA / REAL_VARIANTS[name]),
            }
        else:
            kind, arguments = VARIANTS[name]
            data = workdir / name / "data"
            if not data.is_dir():
                synth(data, kind=kind, console=quiet, **arguments)
                split(data, folds=2, seed=0, console=quiet)
            row = {
                "variant": name,
                "kind": kind,
                "budget_s": budget_s,
                **{k: v for k, v in arguments.items() if k != "seed"},
            }
        for recipe in recipes:
            console.print(f"{name}: {recipe} with a {describe_seconds(budget_s)} budget ...")
            with user_cache(cache) if cache else contextlib.nullcontext():
                row[recipe] = run_pipeline(
                    recipe, data, workdir / name / recipe, budget_s, [*(overrides or []), *extra], quiet
                )
            result = row[recipe]
            console.print(
                f"  test mean dice {result['dice']:.4f}, pooled {result['pooled']:.4f} at {result['size']} px in {result['seconds']:.0f} s "
                f"(epochs per fold {result['epochs']})"
            )
        if baseline:
            reference = row[recipes[-1]]
            console.print(f"{name}: the plain smp baseline at {recipes[-1]}'s settings ...")
            row[BASELINE] = plain_smp(
                data, reference["encoder"], reference["size"], reference["epochs"], splits, reference["batch_size"]
            )
            result = row[BASELINE]
            console.print(
                f"  test mean dice {result['dice']:.4f}, pooled {result['pooled']:.4f} at {result['size']} px "
                f"in {result['seconds']:.0f} s"
            )
        rows.append(row)
    return rows


def table(rows: list[dict], recipes: tuple[str, ...] = RECIPES) -> Table:
    """One row per variant: each pipeline's test dice (per image and pooled), size and wall time, the first recipe
    against the reference (the last), and the reference against the plain baseline where it ran."""
    pipelines = (*recipes, BASELINE) if rows and all(BASELINE in r for r in rows) else recipes
    out = Table(
        title=(
            "test dice at the same time budget (higher is better): mean per image, and pooled over all pixels "
            "(DRIVE: the papers' F1 in the field of view)"
        )
    )
    comparisons = _comparisons(rows, recipes)
    columns = (
        "variant",
        "budget",
        *(f"{p} dice" for p in pipelines),
        *(f"{p} pooled" for p in pipelines),
        *(f"{p} px" for p in pipelines),
        *(f"{a} - {b}" for a, b in comparisons),
        *(f"{p} wall" for p in pipelines),
    )
    for column in columns:
        out.add_column(column, justify="left" if column == "variant" else "right")
    for row in rows:
        out.add_row(
            row["variant"],
            describe_seconds(row["budget_s"]),
            *(f"{row[p]['dice']:.4f}" for p in pipelines),
            *(f"{row[p]['pooled']:.4f}" for p in pipelines),
            *(str(row[p]["size"]) for p in pipelines),
            *(f"{row[a]['dice'] - row[b]['dice']:+.4f}" for a, b in comparisons),
            *(
                f"{row[p]['seconds']:.0f} s" + (" (over)" if row[p]["seconds"] > row["budget_s"] else "")
                for p in pipelines
            ),
        )
    return out


def _comparisons(rows: list[dict], recipes: tuple[str, ...]) -> list[tuple[str, str]]:
    """The pairs compared: the first recipe against the reference (the last), the reference against the baseline."""
    pairs = [(recipes[0], recipes[-1])] if len(recipes) > 1 else []
    if rows and all(BASELINE in r for r in rows):
        pairs.append((recipes[-1], BASELINE))
    return pairs


def verdicts(rows: list[dict], recipes: tuple[str, ...]) -> list[str]:
    """One line per comparison: how many variants the first beats the second on, and the worst difference."""
    lines = []
    for a, b in _comparisons(rows, recipes):
        wins = sum(r[a]["dice"] > r[b]["dice"] for r in rows)
        worst = min(rows, key=lambda r: r[a]["dice"] - r[b]["dice"])
        lines.append(
            f"{a} beats {b} on {wins} of {len(rows)} variants; worst difference "
            f"{worst[a]['dice'] - worst[b]['dice']:+.4f} ({worst['variant']})"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="10m", help="time budget of each recipe's whole pipeline (10m, 90s)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        choices=sorted([*VARIANTS, *REAL_VARIANTS]),
        help="drive: the real DRIVE set from ../shared/data (skipped where absent)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keeps the data and runs (default: a temporary folder)"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the plain smp baseline (benchmarks/baseline.py)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument(
        "--recipes", nargs="+", default=list(RECIPES), help="recipes to compare (the last is the reference)"
    )
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 200)  # the table's 11 columns, readable in a log file too
    recipes = tuple(r for given in args.recipes for r in given.split(",") if r)  # plan tune, or plan,tune
    with tempfile.TemporaryDirectory() as tmp:
        rows = benchmark(
            args.variants,
            args.budget,
            args.workdir or Path(tmp),
            recipes=recipes,
            baseline=not args.no_baseline,
            console=console,
        )
    console.print(table(rows, recipes))
    for line in verdicts(rows, recipes):
        console.print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
