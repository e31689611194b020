"""The model-family interface and its registry.

A family is everything compkit needs to know about one kind of model: which recipe settings it honours
(:meth:`ModelFamily.check`), which pretrained weights it starts from (:meth:`ModelFamily.pretrained`), how it trains a fold (:meth:`ModelFamily.train_fold`, leaving ``best.pt`` with
``family`` in it), and how a trained fold predicts (:meth:`ModelFamily.load` -> a
:class:`compkit.inference.predictor.Predictor`). Stages only ever talk to this interface; adding a family is adding a
module that calls :func:`register_family`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from rich.console import Console

from compkit.data import SegmentationDataset
from compkit.data.cache import SampleCache
from compkit.training.distributed import DistInfo
from compkit.util.errors import CompkitError
from compkit.inference.predictor import InferenceSettings, Predictor
from compkit.training.recipe import Recipe
from compkit.util.registry import Registry, doc_summary
from compkit.pretrained.weights import PretrainedWeights, WeightsCache


@dataclass
class FoldJob:
    """Everything one fold's training needs; the family writes into ``folder``."""

    recipe: Recipe
    dataset: SegmentationDataset
    cache: SampleCache
    fold: int
    train_ids: list[str]
    val_ids: list[str]
    folder: Path
    resume: bool
    dist: DistInfo
    device: torch.device
    console: Console
    pseudo: SampleCache | None = None
    weights_cache: WeightsCache | None = None  # where the pretrained weights were located (default: the standard caches)

    @property
    def train_positions(self) -> list[int]:
        return [self.cache.position[i] for i in self.train_ids]

    @property
    def val_positions(self) -> list[int]:
        return [self.cache.position[i] for i in self.val_ids]


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
    def load(self, recipe: Recipe, classes: list[str] | tuple[str, ...], checkpoint: dict[str, Any], device: torch.device) -> Predictor:
        """A trained fold's predictor from its checkpoint."""


FAMILIES: Registry[type[ModelFamily]] = Registry("family", option="model.family")


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: register a family under its ``name`` (described by its docstring's first line)."""
    return FAMILIES.register(cls.name, cls, doc_summary(cls.__doc__))


def create_family(name: str) -> ModelFamily:
    return FAMILIES.get(name)()


def resolve_family(recipe: Recipe, console: Console | None = None) -> ModelFamily:
    """The recipe's family; a recipe without ``model.family`` gets it inferred from ``model.arch`` once (with a note)."""
    if recipe.model.family is None:
        claimed = FAMILIES.names(where=lambda cls: cls.claims(recipe.model.arch))
        if not claimed:
            raise CompkitError("model.family", f"no family builds model.arch {recipe.model.arch!r}: set model.family ({', '.join(FAMILIES)})")
        recipe.model.family = claimed[0]
        if console is not None:
            console.print(f"note: model.family not set; {recipe.model.family!r} inferred from model.arch {recipe.model.arch!r}")
    return create_family(recipe.model.family)
