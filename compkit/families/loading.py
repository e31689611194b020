"""A trained fold folder back as a predictor: its recipe, its family (from the recipe and the checkpoint), and the
engine that computes its network.

Engines are a registry: ``torch`` (eager PyTorch from the fold's checkpoint) and ``onnx`` (onnxruntime from the
fold's ``model.onnx``, written by ``compkit export onnx``). Each family says how its predictor wraps either one, so
TTA, sliding windows and resampling are the same code whichever engine runs the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from compkit.families.base import ModelFamily, resolve_family
from compkit.inference.onnx_engine import ONNX_FILE, check_current
from compkit.inference.predictor import Predictor
from compkit.training.checkpoint import check_classes, fold_checkpoint, load_checkpoint
from compkit.training.recipe import Recipe
from compkit.training.runs import fold_recipe
from compkit.util.errors import CompkitError
from compkit.util.registry import Registry

DEFAULT_ENGINE = "torch"


@dataclass(frozen=True)
class Engine:
    """How a fold's network is computed: its predictor from the fold folder, and the classes the model records."""

    #: (fold folder, its recipe, its family, the classes, the device) -> the fold's predictor
    load: Callable[[Path, Recipe, ModelFamily, list[str], torch.device], Predictor]
    #: fold folder -> the classes the model was trained on (None: not recorded)
    classes: Callable[[Path], list[str] | None]


@dataclass
class FoldModel:
    folder: Path
    recipe: Recipe
    family: ModelFamily
    predictor: Predictor
    engine: str = DEFAULT_ENGINE


def _torch_predictor(folder: Path, recipe: Recipe, family: ModelFamily, classes, device: torch.device) -> Predictor:
    path = fold_checkpoint(folder)
    checkpoint = load_checkpoint(path)
    stored = checkpoint.get("family", family.name)  # checkpoints from before families were recorded
    if stored != family.name:
        raise CompkitError(path, f"checkpoint of the {stored!r} family, but the fold's recipe says {family.name!r}")
    check_classes(checkpoint, classes, path)
    return family.load(recipe, classes, checkpoint, device)


def _onnx_predictor(folder: Path, recipe: Recipe, family: ModelFamily, classes, device: torch.device) -> Predictor:
    path = folder / ONNX_FILE
    metadata = check_current(path, fold_checkpoint(folder))
    check_classes(metadata, classes, path)
    if metadata.get("family", family.name) != family.name:
        raise CompkitError(path, f"exported from the {metadata['family']!r} family, the recipe says {family.name!r}")
    return family.load_onnx(recipe, classes, path, device)


ENGINES: Registry[Engine] = Registry("engine", option="--engine")
ENGINES.register(
    DEFAULT_ENGINE,
    Engine(_torch_predictor, lambda folder: load_checkpoint(fold_checkpoint(folder)).get("classes")),
    "PyTorch eager, from the fold's checkpoint (best.pt)",
)
ENGINES.register(
    "onnx",
    Engine(_onnx_predictor, lambda folder: check_current(folder / ONNX_FILE, fold_checkpoint(folder))["classes"]),
    f"onnxruntime, from the fold's {ONNX_FILE} (compkit export onnx)",
)


def fold_classes(folder: Path, engine: str = DEFAULT_ENGINE) -> list[str] | None:
    """The classes a fold was trained on, as its checkpoint (or, for the onnx engine, its exported model) records
    them; None for checkpoints from before they did."""
    return ENGINES.get(engine).classes(folder)


def load_fold(
    folder: Path,
    classes,
    device: torch.device,
    console: Console | None = None,
    recipe: Recipe | None = None,
    engine: str = DEFAULT_ENGINE,
) -> FoldModel:
    """The fold's predictor in its recipe's family for ``classes`` (the dataset's), computed by ``engine``: torch
    from the best (else last) checkpoint, onnx from its exported model; ``recipe``: the fold's recipe where the
    caller has already read it."""
    load = ENGINES.get(engine).load
    recipe = recipe or fold_recipe(folder)
    family = resolve_family(recipe, console)
    return FoldModel(folder, recipe, family, load(folder, recipe, family, list(classes), device), engine)
