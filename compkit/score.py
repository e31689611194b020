"""``compkit score``: the leaderboard metric of a submission CSV against local ground truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from compkit import rle as rle_codec
from compkit.data import SegmentationDataset, open_dataset
from compkit.errors import CompkitError
from compkit.metrics import DiceMeter
from compkit.submission import validate
from compkit.synth import ground_truth_dir


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


def dice_table(classes: tuple[str, ...], dice: np.ndarray, title: str = "Dice per class") -> Table:
    """A rich table of per-class dice, the weakest classes marked."""
    table = Table(title=title)
    table.add_column("class")
    table.add_column("dice", justify="right")
    weakest = set(np.argsort(dice)[:3].tolist())
    for i, (name, value) in enumerate(zip(classes, dice, strict=True)):
        table.add_row(name, f"[red]{value:.4f}[/red]" if i in weakest else f"{value:.4f}")
    return table


def score(
    submission: str | Path,
    data: str | Path,
    gt: str | Path | None = None,
    split: str = "test",
    console: Console | None = None,
) -> float:
    """Mean dice of ``submission`` (per image and class, mean over images per class, then over classes)."""
    console = console or Console()
    dataset = open_labelled(data, split, gt)
    rows = validate(submission, dataset)
    meter = DiceMeter(dataset.classes)
    per_image = len(dataset.classes)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scoring", total=len(dataset.samples))
        for i, sample in enumerate(dataset.samples):
            truth = dataset.read_mask(sample)
            shape = truth.shape[1:]
            pred = np.stack(
                [rle_codec.decode(r.rle, shape, dataset.rle_order) for r in rows[i * per_image : (i + 1) * per_image]]
            )
            meter.update(pred, truth)
            progress.advance(task)
    console.print(dice_table(dataset.classes, meter.per_class(), f"{Path(submission).name}: dice per class"))
    mean = meter.mean()
    console.print(f"mean dice: {mean:.4f}")
    return mean
