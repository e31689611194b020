"""Labelled splits for scoring: train labels live in the dataset, test labels (for local scoring of synthetic
or held-out data) in a ground-truth folder, by default ``DATA_gt`` beside ``DATA``."""
from __future__ import annotations

from pathlib import Path

from compkit.data.formats import SegmentationDataset, open_dataset
from compkit.errors import CompkitError


def ground_truth_dir(data: str | Path) -> Path:
    """Where ``compkit synth`` puts the test labels: ``DATA_gt`` beside ``DATA``."""
    data = Path(data)
    return data.with_name(data.name + "_gt")


def open_labelled(data: str | Path, split: str = "test", gt: str | Path | None = None) -> SegmentationDataset:
    """A split with labels: train labels live in the dataset, test labels in ``--gt`` (default ``DATA_gt``)."""
    if split == "test" and gt is None:
        default = ground_truth_dir(data)
        if not default.is_dir():
            raise CompkitError(data, f"no ground truth for the test images: pass --gt (looked for {default})")
        gt = default
    dataset = open_dataset(data, split, labels=gt)
    if not dataset.has_labels:
        raise CompkitError(data, f"the {split} split has no labels to score against")
    return dataset
