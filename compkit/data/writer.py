"""Writing labelled samples as a new dataset (``compkit augment``, ``compkit pseudo``).

Each format owns its writer (:attr:`SegmentationDataset.writer_class`) and says which of its files travel
along (:meth:`SegmentationDataset.meta_files`); formats without a layout of their own (ISIC, COCO) are written as
the ``masks`` layout, which any format's masks can be written as. Stages call ``dataset.writer(out)`` and never
name a format.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from compkit.data.formats import IGNORE_DIR, SegmentationDataset, ignore_file_name
from compkit.data.sample import Sample


def trace_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[list[int]]]:
    """Outer contours of a binary mask as [[x, y], ...] polygons."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c[:, 0, :].tolist() for c in contours if len(c) >= min_points]


class DatasetWriter(ABC):
    """Writes samples into ``out`` in one format's layout, as the training split."""

    def __init__(self, out: Path, dataset: SegmentationDataset):
        self.out, self.dataset = out, dataset

    def original(self, sample: Sample) -> None:
        """A sample as it is (a layout may link its files instead of rewriting them)."""
        self.new(
            sample.image_id,
            self.dataset.read_image(sample),
            self.dataset.read_mask(sample),
            {"source_patients": [sample.patient]},
        )

    def labelled(self, sample: Sample, mask: np.ndarray, metadata: dict | None = None) -> None:
        """A sample's image with new labels (pseudo-labels)."""
        self.new(sample.image_id, self.dataset.read_image(sample), mask, metadata)

    @abstractmethod
    def new(self, image_id: str, image: np.ndarray, mask: np.ndarray, metadata: dict | None = None) -> None:
        """A new image (BGR) with its (C, H, W) mask; ``metadata["source_patients"]`` keeps folds from leaking."""

    def ignore(self, image_id: str, mask: np.ndarray) -> None:
        """Pixels the loss ignores (C, H, W), beside any layout (see :meth:`SegmentationDataset.read_ignore`)."""
        target = self.out / IGNORE_DIR / ignore_file_name(image_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, np.packbits(mask.reshape(mask.shape[0], -1), axis=-1))

    def finish(self) -> None:
        """Copy the files that travel with the source's samples (meta tables)."""
        for path in self.dataset.meta_files():
            shutil.copyfile(path, self.out / path.name)
