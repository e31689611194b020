"""The model-family interface and its registry.

A family is everything compkit needs to know about one kind of model: which recipe settings it honours
(:meth:`ModelFamily.check`), which pretrained weights it starts from (:meth:`ModelFamily.pretrained`), how it
trains a fold (:meth:`ModelFamily.train_fold`, leaving ``best.pt`` with ``family`` in it), and how a trained fold
predicts (:meth:`ModelFamily.load` -> a :class:`compkit.inference.predictor.Predictor`). Stages only ever talk to
this interface; adding a family is adding a module that calls :func:`register_family`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from rich.console import Console

from compkit.data import SegmentationDataset
from compkit.data.cache import SampleCache
from compkit.inference.predictor import InferenceSettings, Predictor
from compkit.pretrained.weights import CachedWeights, PretrainedWeights, WeightsCache
from compkit.training.distributed import DistContext
from compkit.training.recipe import Recipe
from compkit.training.trainer import RunObserver
from compkit.util.errors import CompkitError
from compkit.util.registry import Registry, doc_summary


@dataclass(frozen=True)
class FoldData:
    """What one fold trains and validates on: the dataset's cached images, split by image id."""

    dataset: SegmentationDataset
    cache: SampleCache
    fold: int
    train_ids: list[str]
    val_ids: list[str]
    pseudo: SampleCache | None = None  # pseudo-labelled images added to the training side

    @property
    def train_positions(self) -> list[int]:
        return [self.cache.position[i] for i in self.train_ids]

    @property
    def val_positions(self) -> list[int]:
        return [self.cache.position[i] for i in self.val_ids]


@dataclass(frozen=True)
class FoldRun:
    """Where a fold trains and what it starts from."""

    folder: Path
    resume: bool = False
    weights_cache: WeightsCache | None = None  # where the pretrained weights are (default: the standard caches)
    start: CachedWeights | None = None  # the pretrained weights the model starts from, located in that cache


@dataclass(frozen=True)
class FoldJob:
    """Everything one fold's training needs: the resolved recipe, the data, the run, who trains; the family writes
    into ``run.folder``."""

    recipe: Recipe
    data: FoldData
    run: FoldRun
    context: DistContext
    observer: RunObserver = field(default_factory=RunObserver)  # told each validation; may stop the run


@dataclass
class FoldOutcome:
    best_dice: float
    best_epoch: int
    epochs: int


class ModelFamily(ABC):
    name: ClassVar[str]
    #: Whether probabilities are calibrated enough that 0.5 is a fair threshold; when not, validation also
    #: reports ``val_dice_mean_tuned`` (the dice at the best threshold per class).
    calibrated: ClassVar[bool] = True
    #: Whether a fold trains under torchrun with several processes.
    supports_distributed: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def claims(cls, arch: str) -> bool:
        """Whether ``model.arch`` names one of this family's models (to infer the family of older recipes)."""

    def pretrained(self, recipe: Recipe) -> PretrainedWeights | None:
        """The pretrained weights the recipe's model starts from (None: random weights); raises CompkitError naming
        the setting for weights this family cannot use. Must not reach the network."""
        return None

    @classmethod
    def weights_named(cls, reference: str) -> PretrainedWeights | None:
        """The pretrained weights a name stands for in ``compkit weights pull NAME`` (an encoder such as
        ``resnet50.ssl``, a release file such as ``yolov8x-seg.pt``), or None when the name is not this family's."""
        return None

    def normalisation(self, recipe: Recipe, cache: WeightsCache) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The mean and std the model's pretrained weights expect (fractions of 255), for a recipe that leaves
        ``data.mean``/``data.std`` null; None where the family scales pixels itself."""
        return None

    @abstractmethod
    def check(self, recipe: Recipe, num_classes: int, console: Console) -> None:
        """Fail (CompkitError naming the setting) on any setting this family cannot honour, before any data is read;
        print a warning naming both where a close substitute is used instead."""

    def check_inference(self, settings: InferenceSettings, console: Console) -> InferenceSettings:
        """The same for prediction settings (TTA, window, batch); returns the settings that will be used."""
        return settings

    @abstractmethod
    def train_fold(self, job: FoldJob) -> FoldOutcome:
        """Train one fold into ``job.folder`` (``best.pt`` holding ``model`` and ``family``, ``results.csv``)."""

    @abstractmethod
    def load(
        self, recipe: Recipe, classes: list[str] | tuple[str, ...], checkpoint: dict[str, Any], device: torch.device
    ) -> Predictor:
        """A trained fold's predictor from its checkpoint."""

    def export_onnx(self, predictor: Predictor, recipe: Recipe, path: Path, opset: int) -> dict[str, Any]:
        """Write the network of a predictor this family loaded (:meth:`load`) to ``path`` as an ONNX model with
        dynamic batch, height and width, which :meth:`load_onnx` wraps back into the same predictor; returns the
        metadata entries that say what its input and outputs are. Raises CompkitError with the reason where the
        model cannot export."""
        raise CompkitError("compkit export onnx", f"the {self.name} family does not export to ONNX")

    def load_onnx(
        self, recipe: Recipe, classes: list[str] | tuple[str, ...], path: Path, device: torch.device
    ) -> Predictor:
        """A trained fold's predictor from its exported ONNX model (onnxruntime computing the network)."""
        raise CompkitError("--engine onnx", f"the {self.name} family does not predict with onnxruntime")


FAMILIES: Registry[type[ModelFamily]] = Registry("family", option="model.family")


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: register a family under its ``name`` (described by its docstring's first line)."""
    return FAMILIES.register(cls.name, cls, doc_summary(cls.__doc__))


def create_family(name: str) -> ModelFamily:
    return FAMILIES.get(name)()


def family_of(recipe: Recipe, console: Console | None = None) -> ModelFamily:
    """The recipe's family, the recipe left as it is; without ``model.family`` it is inferred from ``model.arch``
    (with a note)."""
    name = recipe.model.family
    if name is None:
        claimed = FAMILIES.names(where=lambda cls: cls.claims(recipe.model.arch))
        if not claimed:
            known = ", ".join(FAMILIES)
            raise CompkitError(
                "model.family", f"no family builds model.arch {recipe.model.arch!r}: set model.family ({known})"
            )
        name = claimed[0]
        if console is not None:
            console.print(f"note: model.family not set; {name!r} inferred from model.arch {recipe.model.arch!r}")
    return create_family(name)


def resolve_family(recipe: Recipe, console: Console | None = None) -> ModelFamily:
    """The recipe's family; a recipe without ``model.family`` gets the one inferred from ``model.arch``, once (with
    a note)."""
    family = family_of(recipe, console)
    if recipe.model.family is None:
        recipe.model.family = family.name
    return family
