"""A trained run as a Python object, for notebooks: ``compkit.load_run(path).predict(image)``.

``predict`` takes an image as OpenCV reads it (BGR, or grey) at any size and returns per-class probabilities
``(C, H, W)`` at that size: each fold predicts the image prepared as in training (border crop, CLAHE, resizing)
with the run's TTA and sliding window, the folds are averaged, and the result is resized back (and pasted into
the cropped box, the rest background).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console

from compkit.data.cache import foreground_box, prepare_image
from compkit.families import FoldModel, load_fold
from compkit.families.loading import DEFAULT_ENGINE, ENGINES, fold_classes
from compkit.inference.predictor import InferenceSettings, inference_settings
from compkit.stores.probabilities import resample
from compkit.training.device import resolve_device
from compkit.training.recipe import Recipe
from compkit.training.runs import fold_dirs, fold_recipe
from compkit.util.errors import CompkitError


@dataclass
class RunModel:
    path: Path
    classes: list[str]
    folds: list[FoldModel] = field(default_factory=list)

    @property
    def recipe(self) -> Recipe:
        return self.folds[0].recipe

    def predict(self, image: np.ndarray, tta: str | None = None, window: int | None = None) -> np.ndarray:
        """(C, H, W) float32 probabilities of one image (BGR or grey, as ``cv2.imread`` gives it)."""
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.dtype != np.uint8:
            raise CompkitError("image", "expected an 8-bit image as OpenCV reads it ((H, W, 3) BGR or (H, W) grey)")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        height, width = image.shape[:2]
        total = None
        for fold in self.folds:
            data = fold.recipe.data
            box = foreground_box(image) if data.crop_border else None
            clahe = data.clahe.model_dump() if data.clahe else None
            prepared = prepare_image(image, data.image_size, clahe, box)
            settings: InferenceSettings = fold.family.check_inference(
                inference_settings(fold.recipe, tta, window), Console(quiet=True)
            )  # substitutions were reported at training
            probs = fold.predictor.predict(prepared[None], settings)[0]
            y0, y1, x0, x1 = box or (0, height, 0, width)
            full = np.zeros((len(self.classes), height, width), np.float32)
            full[:, y0:y1, x0:x1] = resample(probs, (y1 - y0, x1 - x0))
            total = full if total is None else total + full
        return total / len(self.folds)


def load_run(
    path: str | Path, classes: list[str] | None = None, device: str = "auto", engine: str = DEFAULT_ENGINE
) -> RunModel:
    """A run (or one fold) folder with its checkpoints, ready to predict images; ``classes`` default to those
    the models were trained on. ``engine``: ``torch``, or ``onnx`` (onnxruntime on the folds' exported models,
    ``compkit export onnx``)."""
    folders = fold_dirs(path)
    ENGINES.get(engine, where="engine")
    torch_device = resolve_device(device, "device")
    if classes is None:
        classes = fold_classes(folders[0], engine)
        if classes is None:
            raise CompkitError(
                path, "its checkpoints do not record their classes (trained before they did): pass classes="
            )
    with torch.inference_mode():
        folds = [
            load_fold(folder, classes, torch_device, recipe=fold_recipe(folder), engine=engine) for folder in folders
        ]
    return RunModel(Path(path), list(classes), folds)
