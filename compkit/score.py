"""``compkit score``: the leaderboard metric of a submission CSV against local ground truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from compkit import rle as rle_codec
from compkit.data.labelled import open_labelled
from compkit.errors import CompkitError
from compkit.metrics import DiceMeter, dice_table
from compkit.submission import validate


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
