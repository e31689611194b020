"""``compkit augment``: offline augmentation -> a new dataset with the originals plus transformed samples.

RICAP-style mosaics (four images' patches around a random split point) and rotations (and mirrors), with labels
transformed exactly as the pixels (masks warped, polygons traced back from them). Every new sample records its
source patients, and the output carries the source's folds: new images train only where their sources train,
and never validate (:mod:`compkit.data.splits`).
Hand-bone datasets are written as polygon JSONs, other formats as mask folders (the ``masks`` layout).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.progress import Progress

from compkit.data import open_dataset
from compkit.data.splits import (
    DEFAULT_FOLDS,
    DEFAULT_SEED,
    assign_folds,
    check_current,
    fold_of_patients,
    is_augmented,
    load_splits,
    make_splits,
    patient_of,
    splits_path,
)
from compkit.data.writer import link_or_copy
from compkit.util.errors import CompkitError
from compkit.util.fileio import AtomicFolder, write_json
from compkit.util.locks import OutputLock
from compkit.training.runs import refuse_nonempty


def rotate(image: np.ndarray, mask: np.ndarray, degrees: float, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = np.stack([cv2.warpAffine(m, matrix, (w, h), flags=cv2.INTER_NEAREST) for m in mask])
    if flip:
        image, mask = image[:, ::-1].copy(), mask[:, :, ::-1].copy()
    return image, mask


def mosaic(parts: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """RICAP: the output split at a random point into four rectangles, each cropped from one image at random."""
    h, w = parts[0][0].shape[:2]
    cy, cx = int(rng.uniform(0.3, 0.7) * h), int(rng.uniform(0.3, 0.7) * w)
    image = np.zeros_like(parts[0][0])
    mask = np.zeros_like(parts[0][1])
    boxes = [(0, cy, 0, cx), (0, cy, cx, w), (cy, h, 0, cx), (cy, h, cx, w)]
    for (y0, y1, x0, x1), (img, msk) in zip(boxes, parts, strict=True):
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            msk = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in msk])
        ph, pw = y1 - y0, x1 - x0
        sy, sx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        image[y0:y1, x0:x1] = img[sy : sy + ph, sx : sx + pw]
        mask[:, y0:y1, x0:x1] = msk[:, sy : sy + ph, sx : sx + pw]
    return image, mask


def augment(
    data: str | Path,
    out: str | Path,
    mosaics: int = 0,
    rotations: list[float] | tuple[float, ...] = (),
    flip: bool = False,
    seed: int = 0,
    force: bool = False,
    console: Console | None = None,
) -> Path:
    """Write the originals of ``data`` plus augmented samples to ``out``, with folds that cannot leak.

    The source's folds (its ``splits.json``, or a 5-fold split made now) decide everything: a mosaic takes its four
    images from one fold's validation images, every new image trains only in the folds its sources train in, and
    ``out/splits.json`` carries those folds over, so validation stays originals only.
    """
    console = console or Console()
    if mosaics < 0:
        raise CompkitError("--mosaic", f"must be 0 or more, got {mosaics}")
    if not mosaics and not rotations and not flip:
        raise CompkitError(None, "nothing to do: ask for --mosaic N, --rotate DEG or --flip")
    dataset = open_dataset(data, "train")
    out = Path(out).absolute()
    refuse_nonempty(out, force)
    if any(is_augmented(s) for s in dataset.samples):
        raise CompkitError(data, "is itself augmented: augment the original dataset instead")
    if splits_path(data).is_file():
        splits = load_splits(data)
        check_current(splits, dataset, splits_path(data))
    else:
        folds = min(DEFAULT_FOLDS, len({patient_of(s) for s in dataset.samples}))
        splits = make_splits(dataset, folds, DEFAULT_SEED, None)
        console.print(f"{data} has no splits.json: new images follow a {folds}-fold split (seed {DEFAULT_SEED}), written to the output")
    by_id = {s.image_id: s for s in dataset.samples}
    fold_images = [[by_id[i] for i in fold["val"]] for fold in splits["folds"]]
    rng = np.random.default_rng(seed)
    angles = list(rotations) or ([0.0] if flip else [])
    made = 0
    with OutputLock(out), AtomicFolder(out) as staging:
        refuse_nonempty(out, force)  # again, now that no other process can write it
        writer = dataset.writer(staging)
        total = len(dataset) * (1 + len(angles)) + mosaics
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("augmenting", total=total)
            for sample in dataset.samples:
                writer.original(sample)
                progress.advance(task)
                if angles:
                    image, mask = dataset.read_image(sample), dataset.read_mask(sample)
                    for degrees in angles:
                        suffix = f"rot{int(round(degrees))}" + ("f" if flip else "")
                        rotated = rotate(image, mask, degrees, flip)
                        stem = Path(sample.image_id)
                        new_id = stem.with_name(f"{stem.stem}_{suffix}{stem.suffix}").as_posix()
                        writer.new(new_id, *rotated, {"augmented": True, "sources": [sample.image_id], "source_patients": [sample.patient]})
                        made += 1
                        progress.advance(task)
            for n in range(mosaics):
                pool = fold_images[n % len(fold_images)]  # one fold's images: the mosaic stays out of that fold's training
                picks = [pool[i] for i in rng.choice(len(pool), size=4, replace=len(pool) < 4)]
                parts = [(dataset.read_image(s), dataset.read_mask(s)) for s in picks]
                image, mask = mosaic(parts, rng)
                patients = sorted({s.patient for s in picks})
                new_id = f"{picks[0].patient}/mosaic{n:05d}.png"
                writer.new(new_id, image, mask, {"augmented": True, "sources": [s.image_id for s in picks], "source_patients": patients})
                made += 1
                progress.advance(task)
        writer.finish()
        test_dir = Path(data) / "test"
        if test_dir.is_dir():  # the test set travels along (linked), so the new dataset predicts and submits as before
            for path in test_dir.rglob("*"):
                if path.is_file():
                    link_or_copy(path, staging / "test" / path.relative_to(test_dir))
        written = open_dataset(staging, "train")
        carried = {**splits, "augmented": made, "folds": assign_folds(written, fold_of_patients(dataset, splits), len(splits["folds"]))}
        write_json(splits_path(staging), carried)
    console.print(f"[green]wrote[/green] {out}: {len(dataset)} originals + {made} augmented samples, with {out / 'splits.json'} (the source's folds)")
    console.print(f"next: compkit train --recipe tiny --data {out} --fold all")
    return out
