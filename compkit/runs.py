"""Run and fold folders: ``runs/<name>/fold<k>/`` with the resolved ``recipe.yaml`` that trained it."""
from __future__ import annotations

import re
from pathlib import Path

from compkit.errors import CompkitError
from compkit.recipe import Recipe, load_recipe

RECIPE_FILE = "recipe.yaml"
PRETRAINED_FILE = "pretrained.json"  # the weights a fold started from: name, tag, repository, revision, file, sha256
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
