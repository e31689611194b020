"""``compkit runs``: one table of every run, search trial and ensemble found, CV and leaderboard side by side.

Rows come from what each folder already holds: a run's folds' ``run.json`` (model, size, epochs, best validation
dice, wall time, the recipe keys changed from the base it was trained from), an ensemble's ``members.json``
(out-of-fold dice at 0.5, tuned in-sample, cross-validated; a run ensembled alone lends it these figures too), and
``lb.json`` (public-leaderboard scores, from ``compkit submit --lb`` or ``compkit runs --lb NAME=SCORE``).
"""

from __future__ import annotations

import datetime
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compkit.data.splits import load_splits
from compkit.stores.leaderboard import LB_FILE, latest_lb, parse_score, record_lb
from compkit.stores.members import ENSEMBLES_DIR, MEMBERS_FILE, read_members_file
from compkit.training.recipe import load_recipe
from compkit.training.runs import (
    FOLD_PREFIX,
    RECIPE_FILE,
    RUN_FILE,
    RUNS_DIR,
    fold_dirs,
    read_run_record,
    recipe_changes,
    saved_recipe,
)
from compkit.tuning.space import brief
from compkit.util.console import output_console
from compkit.util.errors import CompkitError
from compkit.util.fileio import write_csv

SORTS = ("cv", "val", "lb", "date", "name")
COLUMNS = (
    "name",
    "kind",
    "model",
    "size",
    "epochs",
    "folds",
    "val_dice",
    "oof_dice_at_0.5",
    "oof_dice_in_sample",
    "oof_dice_cross_validated",
    "lb",
    "wall_s",
    "date",
    "changes",
)
#: Keys a run resolves for itself (the data folder, the family, the encoder's normalisation, the budget's share):
#: never a change from its base.
RESOLVED_KEYS = ("name", "data.root", "model.family", "data.mean", "data.std", "train.time_budget")
MAX_DEPTH = 4  # folders below each DIR searched for runs and ensembles


@dataclass(frozen=True)
class Found:
    folder: Path
    kind: str  # run, trial or ensemble


def _is_run(folder: Path) -> bool:
    return any((child / RECIPE_FILE).is_file() for child in folder.glob(f"{FOLD_PREFIX}*"))


def find_experiments(paths: list[Path]) -> list[Found]:
    """Runs, trials and ensembles in or under ``paths`` (a fold folder stands for its run)."""
    found: dict[Path, Found] = {}

    def visit(folder: Path, depth: int) -> None:
        if (folder / MEMBERS_FILE).is_file():
            found.setdefault(folder.resolve(), Found(folder, "ensemble"))
            return
        if (folder / RECIPE_FILE).is_file() and (folder / RUN_FILE).is_file():  # a fold folder
            folder = folder.parent
        if _is_run(folder):
            records = [read_run_record(f) for f in fold_dirs(folder) if (f / RUN_FILE).is_file()]
            kind = "trial" if any("study" in r for r in records) else "run"
            found.setdefault(folder.resolve(), Found(folder, kind))
            return
        if depth < MAX_DEPTH:
            for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                visit(child, depth + 1)

    for path in paths:
        if not path.is_dir():
            raise CompkitError(path, "no such folder of runs or ensembles")
        visit(path, 0)
    return list(found.values())


def _parse_time(text: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _base_recipe(record: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved recipe the run was made from: the one its command named with --recipe, else the recipe of its
    name (None where neither loads from here)."""
    words = shlex.split(record.get("command") or "")
    named = words[words.index("--recipe") + 1] if "--recipe" in words[:-1] else None
    for ref in dict.fromkeys(r for r in (named, recipe.get("name")) if r):
        try:
            return load_recipe(ref).model_dump(mode="json")
        except CompkitError:
            continue
    return None


def describe_changes(record: dict[str, Any], recipe: dict[str, Any]) -> str:
    """The recipe keys that differ from the run's base recipe (``optim.lr 0.001 → 0.0003``); where the base no
    longer loads, the run's --set settings as given."""
    base = _base_recipe(record, recipe)
    if base is None:
        return "; ".join(record.get("overrides") or [])
    changes = [(k, a, b) for k, a, b in recipe_changes(base, recipe) if k not in RESOLVED_KEYS]
    return "; ".join(f"{key} {brief(a, 30)} → {brief(b, 30)}" for key, a, b in changes)


def _fold_total(record: dict[str, Any]) -> int | None:
    splits_file = record.get("splits_file")
    if not splits_file or not Path(splits_file).is_file():
        return None
    try:
        return len(load_splits(Path(splits_file).parent, splits_file)["folds"])
    except CompkitError:
        return None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def run_row(found: Found) -> dict[str, Any]:
    folds = fold_dirs(found.folder)
    records = [read_run_record(f) for f in folds if (f / RUN_FILE).is_file()]
    recipe = records[0].get("recipe") if records else saved_recipe(folds[0])
    model = recipe.get("model", {})
    ended = [r for r in records if r.get("ended")]
    epochs = sorted({r["epochs"] for r in ended if r.get("epochs") is not None})
    wall = 0.0
    for r in ended:
        start, end = _parse_time(r.get("started")), _parse_time(r.get("ended"))
        wall += (end - start).total_seconds() if start and end else 0.0
    total = _fold_total(records[0]) if records else None
    dates = [r["ended"] for r in ended]
    return {
        "name": str(found.folder),
        "kind": found.kind,
        "model": f"{model.get('family') or '?'} {model.get('arch')}/{model.get('encoder')}",
        "size": recipe.get("data", {}).get("image_size"),
        "epochs": "-" if not epochs else str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}",
        "folds": f"{len(ended)}/{total}" if total else str(len(ended)),
        "val_dice": _mean([float(r["best_dice"]) for r in ended if r.get("best_dice") is not None]),
        "oof_dice_at_0.5": None,
        "oof_dice_in_sample": None,
        "oof_dice_cross_validated": None,
        "lb": latest_lb(found.folder),
        "wall_s": round(wall, 1) if ended else None,
        "date": max(dates)[:16].replace("T", " ") if dates else "",
        "changes": describe_changes(records[0], recipe) if records else "",
    }


def ensemble_row(found: Found) -> dict[str, Any]:
    info = read_members_file(found.folder / MEMBERS_FILE)
    members = info.get("members") or []
    families = ", ".join(info.get("families") or []) or "?"
    modified = datetime.datetime.fromtimestamp((found.folder / MEMBERS_FILE).stat().st_mtime)
    return {
        "name": str(found.folder),
        "kind": "ensemble",
        "model": f"{info.get('method', 'soft')} vote of {len(members)} ({families})",
        "size": None,
        "epochs": "-",
        "folds": str(sum(int(m.get("folds") or 0) for m in members)),
        "val_dice": None,
        **{key: info.get(key) for key in ("oof_dice_at_0.5", "oof_dice_in_sample", "oof_dice_cross_validated")},
        "lb": latest_lb(found.folder),
        "wall_s": None,
        "date": modified.strftime("%Y-%m-%d %H:%M"),
        "changes": " + ".join(Path(m["path"]).name for m in members if "path" in m),
    }


def _lend_ensemble_figures(rows: list[dict[str, Any]], found: list[Found]) -> None:
    """A run ensembled alone (its folds averaged, thresholds tuned out of fold) shows that ensemble's OOF figures."""
    by_folder = {f.folder.resolve(): row for f, row in zip(found, rows, strict=True) if f.kind != "ensemble"}
    for f, row in zip(found, rows, strict=True):
        if f.kind != "ensemble":
            continue
        members = read_members_file(f.folder / MEMBERS_FILE).get("members") or []
        if len(members) == 1 and "path" in members[0]:
            run = by_folder.get(Path(members[0]["path"]).resolve())
            if run is not None and run["oof_dice_at_0.5"] is None:
                for key in ("oof_dice_at_0.5", "oof_dice_in_sample", "oof_dice_cross_validated"):
                    run[key] = row[key]


def _sort_key(sort: str):
    def score(value: float | None) -> tuple[int, float]:
        return (0, -value) if value is not None else (1, 0.0)

    if sort == "cv":  # the cross-validated estimate first; rows without one by validation dice after them
        return lambda r: (*score(r["oof_dice_cross_validated"]), *score(r["val_dice"]))
    if sort in ("val", "lb"):
        column = "val_dice" if sort == "val" else "lb"
        return lambda r: score(r[column])
    return lambda r: r[sort]


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(rows: list[dict[str, Any]], sort: str) -> Table:
    table = Table(title=f"runs, trials and ensembles (sorted by {sort})")
    headers = {
        "val_dice": "val dice",
        "oof_dice_at_0.5": "OOF @0.5",
        "oof_dice_in_sample": "OOF tuned (in-sample)",
        "oof_dice_cross_validated": "OOF CV",
        "lb": "LB",
        "wall_s": "wall",
    }
    numeric = {"size", "epochs", "folds", "val_dice", "lb", "wall_s", *headers}
    for column in COLUMNS:
        table.add_column(headers.get(column, column), justify="right" if column in numeric else "left")
    for r in rows:
        cells = []
        for column in COLUMNS:
            value = r[column]
            if column in ("val_dice", "oof_dice_at_0.5", "oof_dice_in_sample", "oof_dice_cross_validated", "lb"):
                cells.append(_figure(value))
            elif column == "wall_s":
                cells.append("-" if value is None else f"{value / 60:.1f} min")
            else:
                cells.append(escape("-" if value is None or value == "" else str(value)))
        table.add_row(*cells)
    return table


def _resolve_named(name: str, found: list[Found]) -> Path:
    """The run or ensemble folder ``name`` means: a folder path, else the one listed folder it names."""
    if Path(name).is_dir():
        return Path(name)
    matches = [f.folder for f in found if f.folder.name == name or str(f.folder).endswith(os.sep + name)]
    if len(matches) != 1:
        listed = ", ".join(str(f.folder) for f in found[:8])
        problem = "names several folders" if matches else "is no run or ensemble found here"
        raise CompkitError("--lb", f"{name!r} {problem} ({listed or 'none listed'}): give its folder")
    return matches[0]


def _record_scores(assignments: list[str], found: list[Found], console: Console) -> None:
    for assignment in assignments:
        name, sep, value = assignment.rpartition("=")
        if not sep or not name:
            raise CompkitError("--lb", f"{assignment!r} is not NAME=SCORE (e.g. ensembles/tiny=0.9712)")
        folder = _resolve_named(name, found)
        score = parse_score(value)
        record_lb(folder, score)
        console.print(f"recorded leaderboard score {score} for {folder} ({LB_FILE})")


def runs(
    paths: list[str | Path] | None = None,
    sort: str = "cv",
    csv: str | Path | None = None,
    lb: list[str] | tuple[str, ...] = (),
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Every run, search trial and ensemble in or under ``paths`` (default: ./runs and ./ensembles), one row each
    (:data:`COLUMNS`), sorted by ``sort`` (cv, val, lb, date, name); ``csv`` also writes them to a file; ``lb``
    (``NAME=SCORE``) records public-leaderboard scores first."""
    console = console or output_console()
    if sort not in SORTS:
        raise CompkitError("--sort", f"must be one of {', '.join(SORTS)}, got {sort!r}")
    folders = [Path(p) for p in paths] if paths else [Path(p) for p in (RUNS_DIR, ENSEMBLES_DIR) if Path(p).is_dir()]
    if not folders:
        raise CompkitError(None, f"no ./{RUNS_DIR} or ./{ENSEMBLES_DIR} here: name the folders (compkit runs DIR ...)")
    found = find_experiments(folders)
    _record_scores(list(lb), found, console)
    rows = [ensemble_row(f) if f.kind == "ensemble" else run_row(f) for f in found]
    _lend_ensemble_figures(rows, found)
    rows.sort(key=_sort_key(sort), reverse=sort == "date")  # scores best first, dates newest first
    if not rows:
        console.print(f"no runs or ensembles in {', '.join(map(str, folders))}; start one with compkit train")
        return rows
    console.print(_table(rows, sort))
    counts = {kind: sum(r["kind"] == kind for r in rows) for kind in ("run", "trial", "ensemble")}
    summary = f"{counts['run']} runs, {counts['trial']} trials, {counts['ensemble']} ensembles"
    if csv is not None:
        write_csv(Path(csv), rows)
        summary += f"; wrote {csv}"
    console.print(f"{summary}; record a leaderboard score: compkit runs --lb NAME=SCORE (or compkit submit --lb SCORE)")
    return rows
