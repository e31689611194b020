"""Model families: one interface (:class:`ModelFamily`) that every kind of model implements, and a registry.

``smp`` (segmentation-models-pytorch, compkit's own training loop) and ``ultralytics`` (YOLO-seg) are built in;
a recipe picks one with ``model.family``. Adding a family is adding a module that calls :func:`register_family`
and importing it here, so that :data:`FAMILIES` lists every family whatever was imported before.
"""

from compkit.families import smp as _smp  # noqa: F401  (each module registers its family)
from compkit.families import ultralytics as _ultralytics  # noqa: F401
from compkit.families.base import (
    FAMILIES,
    FoldData,
    FoldJob,
    FoldOutcome,
    FoldRun,
    ModelFamily,
    create_family,
    family_of,
    register_family,
    resolve_family,
)
from compkit.families.loading import FoldModel, load_fold

__all__ = [
    "FAMILIES",
    "FoldData",
    "FoldJob",
    "FoldModel",
    "FoldOutcome",
    "FoldRun",
    "ModelFamily",
    "create_family",
    "family_of",
    "load_fold",
    "register_family",
    "resolve_family",
]
