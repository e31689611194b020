"""A trained fold folder back as a predictor: its recipe, its family (from the recipe and the checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from compkit.families.base import ModelFamily, resolve_family
from compkit.inference.predictor import Predictor
from compkit.training.checkpoint import check_classes, fold_checkpoint, load_checkpoint
from compkit.training.recipe import Recipe
from compkit.training.runs import fold_recipe
from compkit.util.errors import CompkitError


@dataclass
class FoldModel:
    folder: Path
    recipe: Recipe
    family: ModelFamily
    predictor: Predictor


def load_fold(
    folder: Path, classes, device: torch.device, console: Console | None = None, recipe: Recipe | None = None
) -> FoldModel:
    """The fold's best (else last) checkpoint in its recipe's family, for ``classes`` (the dataset's); ``recipe``:
    the fold's recipe where the caller has already read it."""
    recipe = recipe or fold_recipe(folder)
    family = resolve_family(recipe, console)
    path = fold_checkpoint(folder)
    checkpoint = load_checkpoint(path)
    stored = checkpoint.get("family", family.name)  # checkpoints from before families were recorded
    if stored != family.name:
        raise CompkitError(path, f"checkpoint of the {stored!r} family, but the fold's recipe says {family.name!r}")
    check_classes(checkpoint, classes, path)
    return FoldModel(folder, recipe, family, family.load(recipe, classes, checkpoint, device))
