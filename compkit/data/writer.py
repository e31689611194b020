"""Writing labelled samples as a new dataset (``compkit augment``, ``compkit pseudo``).

Hand-bone datasets are written in their own layout (images under ``train/DCM``, polygons traced from the masks
into ``train/outputs_json``); every other format as the ``masks`` layout (``train/Original_Images`` plus one
``<Class>_Masks`` folder per class), which any format's masks can be written as.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from compkit.data.formats import SegmentationDataset
from compkit.data.sample import Sample


def trace_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[list[int]]]:
    """Outer contours of a binary mask as [[x, y], ...] polygons."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c[:, 0, :].tolist() for c in contours if len(c) >= min_points]


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class DatasetWriter:
    """Writes samples into ``out`` in the layout family of ``dataset``."""

    def __init__(self, out: Path, dataset: SegmentationDataset):
        self.out, self.dataset = out, dataset
        self.handbone = dataset.format_name == "handbone"

    def original(self, sample: Sample) -> None:
        """A sample as it is (hand bones: image and label JSON linked, not rewritten)."""
        if self.handbone:
            link_or_copy(sample.image_path, self.out / "train" / "DCM" / sample.image_id)
            link_or_copy(sample.label_path, self.out / "train" / "outputs_json" / Path(sample.image_id).with_suffix(".json"))
        else:
            # The masks layout drops the source's CSVs: record the patient so folds still group by it.
            metadata = {"source_patients": [sample.patient]}
            self.new(sample.image_id, self.dataset.read_image(sample), self.dataset.read_mask(sample), metadata)

    def labelled(self, sample: Sample, mask: np.ndarray, metadata: dict | None = None) -> None:
        """A sample's image with new labels (pseudo-labels)."""
        if self.handbone:
            link_or_copy(sample.image_path, self.out / "train" / "DCM" / sample.image_id)
            self._labels(sample.image_id, mask, metadata or {})
        else:
            self.new(sample.image_id, self.dataset.read_image(sample), mask, metadata)

    def new(self, image_id: str, image: np.ndarray, mask: np.ndarray, metadata: dict | None = None) -> None:
        """A new image (BGR) with its (C, H, W) mask; ``metadata["source_patients"]`` keeps folds from leaking."""
        if self.handbone:
            path = self.out / "train" / "DCM" / image_id
        else:
            image_id = Path(image_id).with_suffix(".png").as_posix()
            path = self.out / "train" / "Original_Images" / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        self._labels(image_id, mask, metadata or {})

    def _labels(self, image_id: str, mask: np.ndarray, metadata: dict) -> None:
        if self.handbone:
            annotations = [
                {"id": f"{c}-{n}", "type": "poly_seg", "attributes": {}, "points": points, "label": name}
                for c, name in enumerate(self.dataset.classes)
                for n, points in enumerate(trace_polygons(mask[c]))
            ]
            label = self.out / "train" / "outputs_json" / Path(image_id).with_suffix(".json")
            label.parent.mkdir(parents=True, exist_ok=True)
            data = {"filename": Path(image_id).name, "metadata": metadata, "attributes": {}, "last_workers": {}, "annotations": annotations}
            label.write_text(json.dumps(data), encoding="utf-8")
            return
        for c, cls in enumerate(self.dataset.classes):
            target = self.out / "train" / f"{cls}_Masks" / image_id
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), mask[c].astype(np.uint8) * 255)
        if metadata.get("source_patients"):  # the masks layout keeps image-level values in a CSV
            table = self.out / "augmented.csv"
            with open(table, "a", encoding="utf-8") as f:
                if f.tell() == 0:
                    f.write("image,source_patients\n")
                f.write(f"{image_id},{'|'.join(metadata['source_patients'])}\n")
