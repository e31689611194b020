"""``compkit score``: the leaderboard metric of a submission CSV against local ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from compkit.data.labelled import open_labelled
from compkit.evaluation.metrics import DiceMeter, dice_table
from compkit.submission.layouts import submission_layout, validate
from compkit.util.console import output_console, transient_progress


def evaluate(
    submission: str | Path,
    data: str | Path,
    gt: str | Path | None = None,
    split: str = "test",
    console: Console | None = None,
) -> DiceMeter:
    """``submission`` against the labels, image by image: the meter holds the per-image dice and the pooled counts.

    Where the dataset marks pixels to ignore (a field-of-view mask), they are left out of both the prediction and
    the truth: dice over the field of view, as retinal-vessel papers report it."""
    console = console or output_console()
    dataset = open_labelled(data, split, gt)
    layout = submission_layout(dataset)
    rows = validate(submission, dataset, layout=layout)
    rle_of = {(r.image_name, r.class_name): r.rle for r in rows}
    meter = DiceMeter(dataset.classes)
    with transient_progress(console) as progress:
        task = progress.add_task("scoring", total=len(dataset.samples))
        for sample in dataset.samples:
            truth = dataset.read_mask(sample)
            shape = truth.shape[1:]
            name = layout.names[sample.image_id]
            pred = np.stack([layout.decode(rle_of[(name, c)], shape) for c in dataset.classes])
            ignore = dataset.read_ignore(sample, shape)
            if ignore is not None:  # pixels outside the field of view count for neither side
                keep = ~ignore.astype(bool)
                pred, truth = pred & keep, truth & keep
            meter.update(pred, truth)
            progress.advance(task)
    return meter


def score(
    submission: str | Path,
    data: str | Path,
    gt: str | Path | None = None,
    split: str = "test",
    console: Console | None = None,
) -> float:
    """Mean dice of ``submission`` (per image and class, mean over images per class, then over classes); also prints
    the dice pooled over all pixels (the pixel-level F1 of retinal-vessel papers). Ignored pixels count for neither."""
    console = console or output_console()
    meter = evaluate(submission, data, gt, split, console)
    console.print(dice_table(meter.classes, meter.per_class(), f"{Path(submission).name}: dice per class"))
    console.print(
        f"pooled dice (pixel F1 over all images' pixels, mean over classes): {float(meter.pooled().mean()):.4f}"
    )
    mean = meter.mean()
    console.print(f"mean dice: {mean:.4f}")
    return mean
