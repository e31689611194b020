"""Run and fold folders: ``runs/<name>/fold<k>/`` with the resolved ``recipe.yaml`` that trained it."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from compkit.data.splits import fingerprint
from compkit.errors import CompkitError
from compkit.fileio import read_json, write_json
from compkit.recipe import Recipe, load_recipe

RECIPE_FILE = "recipe.yaml"
RUN_FILE = "run.json"  # what a fold was trained on: family, the split's fingerprint, its validation images
FOLD_NAME = re.compile(r"fold(\d+)")


def fold_dirs(path: str | Path) -> list[Path]:
    """Fold folders under a run folder (``runs/name`` -> ``fold0``, ``fold1``, ...), or the fold folder itself."""
    path = Path(path)
    if (path / RECIPE_FILE).is_file():
        return [path]
    folds = sorted((p for p in path.glob("fold*") if (p / RECIPE_FILE).is_file()), key=lambda p: fold_number(p))
    if not folds:
        raise CompkitError(path, "not a run or fold folder (no recipe.yaml, no fold*/ folders)")
    return folds


def fold_number(folder: Path) -> int:
    match = FOLD_NAME.fullmatch(folder.name)
    if match is None:
        raise CompkitError(folder, "a fold folder must be named fold<k> (fold0, fold1, ...)")
    return int(match.group(1))


def fold_recipe(folder: Path) -> Recipe:
    """The resolved recipe a fold was trained with."""
    return load_recipe(folder / RECIPE_FILE)


def write_run_record(folder: Path, record: dict[str, Any]) -> None:
    write_json(folder / RUN_FILE, record)


def read_run_record(folder: Path) -> dict[str, Any]:
    """A fold's run record; ``{}`` for runs from before records were written."""
    path = folder / RUN_FILE
    if not path.is_file():
        return {}
    record = read_json(path)
    if not isinstance(record, dict):
        raise CompkitError(path, "not a compkit run record (not a JSON object)")
    return record


def check_fold_split(folder: Path, splits: dict[str, Any], splits_file: Path) -> None:
    """A fold's validation predictions are out-of-fold only for the split it was trained on: refuse otherwise."""
    trained_on = read_run_record(folder).get("splits_fingerprint")
    if trained_on is not None and trained_on != fingerprint(splits):
        raise CompkitError(
            folder,
            f"was trained on another split than {splits_file} holds now: its validation images are not out-of-fold "
            "(retrain it, or restore the splits file it was trained on)",
        )
