"""``compkit pseudo``: pseudo-labels from an ensemble's confident test predictions, written as a dataset.

An image is kept when every class is confident: few pixels with probability between 0.1 and 0.9 compared
with the pixels it predicts. Hand-bone datasets get polygons traced from the masks' contours (as the seed team
did), so the result opens like the original labels; mask-based formats get one mask folder per class
(the ``masks`` layout). A recipe's ``data.pseudo: DIR`` adds these samples to the training side of every fold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from compkit.data import open_dataset
from compkit.evaluation.postprocess import upsample_mask
from compkit.stores.members import check_covers, dataset_root, open_stores_member, resolve_thresholds
from compkit.training.runs import refuse_nonempty
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError
from compkit.util.fileio import AtomicFolder
from compkit.util.locks import OutputLock

UNCERTAIN = (0.1, 0.9)
PSEUDO_FILE = "pseudo.json"  # the source, the confidence asked for and the kept test images


def confidence(probs: np.ndarray) -> np.ndarray:
    """Per class: 1 - uncertain / (uncertain + predicted) pixels (1 for a class predicted confidently empty)."""
    flat = probs.reshape(probs.shape[0], -1)
    uncertain = np.count_nonzero((flat > UNCERTAIN[0]) & (flat < UNCERTAIN[1]), axis=1)
    predicted = np.count_nonzero(flat >= UNCERTAIN[1], axis=1)
    return 1.0 - uncertain / np.maximum(uncertain + predicted, 1)


def pseudo(
    source: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    min_confidence: float = 0.8,
    max_images: int | None = None,
    threshold: str = "auto",
    soft: bool = False,
    exist_ok: bool = False,
    console: Console | None = None,
) -> Path:
    """Write the confident test images of ``source`` (an ensemble or run) as a labelled dataset at ``out``.

    ``soft``: also write each image's uncertain pixels (probability between 0.1 and 0.9) as an ignore mask,
    which training leaves out of the loss. ``exist_ok``: replace ``out``.
    """
    console = console or output_console()
    member = open_stores_member(source, "pseudo-labelling")
    root = dataset_root(member, data)
    if not 0 <= min_confidence <= 1:
        raise CompkitError("--min-confidence", f"must be between 0 and 1, got {min_confidence}")
    if max_images is not None and max_images < 1:
        raise CompkitError("--max-images", f"must be at least 1, got {max_images}")
    out = Path(out).absolute()
    refuse_nonempty(out, exist_ok)
    test = open_dataset(root, "test")
    check_covers(member, test)
    thresholds = resolve_thresholds(member, threshold, console)

    scored = []
    with transient_progress(console) as progress:
        task = progress.add_task("scoring confidence", total=len(test.samples))
        for sample in test.samples:
            scored.append((float(confidence(member.test_probs(sample.image_id)).min()), sample))
            progress.advance(task)
    chosen = sorted((s for s in scored if s[0] >= min_confidence), key=lambda s: -s[0])[: max_images or None]
    if not chosen:
        raise CompkitError(
            source, f"no test image reaches --min-confidence {min_confidence} (best: {max(s[0] for s in scored):.3f})"
        )

    pixels = ignored = 0
    with OutputLock(out), AtomicFolder(out) as staging:
        refuse_nonempty(out, exist_ok)  # again, now that no other process can write it
        writer = test.writer(staging)
        with transient_progress(console) as progress:
            task = progress.add_task("writing pseudo-labels", total=len(chosen))
            for _, sample in chosen:
                q = member.test_uint8(sample.image_id)
                size = test.image_shape(sample)
                masks = np.stack([upsample_mask(q[c], size, thresholds[c]) for c in range(len(test.classes))])
                pixels += int(masks.sum())
                writer.labelled(sample, masks, {"pseudo": True})
                if soft:
                    uncertain = np.stack(
                        [
                            upsample_mask(q[c], size, UNCERTAIN[0]) & ~upsample_mask(q[c], size, UNCERTAIN[1])
                            for c in range(len(test.classes))
                        ]
                    )
                    ignored += int(uncertain.sum())
                    writer.ignore(sample.image_id, uncertain)
                progress.advance(task)
        writer.finish()
        (staging / PSEUDO_FILE).write_text(
            json.dumps(
                {"source": str(source), "min_confidence": min_confidence, "images": [s.image_id for _, s in chosen]},
                indent=1,
            )
        )
    table = Table(title=f"pseudo-labels -> {out}")
    for column in ("kept images", "of test images", "labelled pixels", "ignored pixels", "lowest confidence kept"):
        table.add_column(column, justify="right")
    table.add_row(
        str(len(chosen)), str(len(test.samples)), f"{pixels:,}", f"{ignored:,}" if soft else "-", f"{chosen[-1][0]:.3f}"
    )
    console.print(table)
    return out
