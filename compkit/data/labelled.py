"""Labelled splits for scoring: train labels live in the dataset; test labels where the format finds them (e.g. a
described layout's ``test/1st_manual``), else in a ground-truth folder, by default ``DATA_gt`` beside ``DATA``."""

from __future__ import annotations

from pathlib import Path

from compkit.data.formats import SegmentationDataset, dataset_folder, open_dataset
from compkit.util.errors import CompkitError

GROUND_TRUTH_SUFFIX = "_gt"  # DATA's test labels in DATA_gt beside it


def ground_truth_dir(data: str | Path) -> Path:
    """Where ``compkit synth`` puts the test labels: ``DATA_gt`` beside ``DATA``."""
    data = dataset_folder(data)
    return data.with_name(data.name + GROUND_TRUTH_SUFFIX)


def open_labelled(data: str | Path, split: str = "test", gt: str | Path | None = None) -> SegmentationDataset:
    """A split with labels for every image: train labels live in the dataset; test labels where the format finds
    them in the dataset, else in ``--gt`` (default ``DATA_gt``)."""
    if split == "test" and gt is None:
        own = open_dataset(data, split)
        if own.has_labels:
            dataset = own
        else:
            default = ground_truth_dir(data)
            if not default.is_dir():
                raise CompkitError(data, f"no ground truth for the test images: pass --gt (looked for {default})")
            dataset = open_dataset(data, split, labels=default)
    else:
        dataset = open_dataset(data, split, labels=gt)
    if not dataset.has_labels:
        raise CompkitError(data, f"the {split} split has no labels to score against")
    unlabelled = [s for s in dataset.samples if s.label_path is None]
    if unlabelled:
        raise CompkitError(
            unlabelled[0].image_path,
            f"{len(unlabelled)} of {len(dataset)} {split} images have no labels to score against",
        )
    return dataset
