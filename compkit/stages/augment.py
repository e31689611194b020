"""``compkit augment``: offline augmentation -> a new dataset with the originals plus transformed samples.

RICAP-style mosaics (four images' patches around a random split point) and rotations (and mirrors), with labels
transformed exactly as the pixels (masks warped, polygons traced back from them). Every new sample records its
source patients, and the output carries the source's folds: new images train only where their sources train,
and never validate (:mod:`compkit.data.splits`).
Hand-bone datasets are written as polygon JSONs, other formats as mask folders (the ``masks`` layout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console

from compkit.data import Sample, SegmentationDataset, open_dataset
from compkit.data.splits import (
    DEFAULT_FOLDS,
    DEFAULT_SEED,
    SPLITS_FILE,
    assign_folds,
    check_current,
    fold_of_patients,
    is_augmented,
    load_splits,
    make_splits,
    patient_of,
    splits_path,
)
from compkit.data.writer import DatasetWriter
from compkit.training.runs import refuse_nonempty
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError
from compkit.util.fileio import AtomicFolder, link_or_copy, write_json
from compkit.util.locks import OutputLock


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


def _link_test_split(data: Path, staging: Path) -> None:
    """The test set travels along (linked), so the new dataset predicts and submits as before."""
    test_dir = data / "test"
    if test_dir.is_dir():
        for path in test_dir.rglob("*"):
            if path.is_file():
                link_or_copy(path, staging / "test" / path.relative_to(test_dir))


@dataclass(frozen=True)
class _Augmentations:
    """What the output adds: per original, a rotated (with ``flip`` also mirrored) copy at each of ``angles``; and
    ``mosaics`` mosaics, drawn with ``seed``."""

    angles: list[float]
    flip: bool
    mosaics: int
    seed: int


class _SampleWriter:
    """Writes the originals and the new samples, counting the new ones and advancing the progress bar by each."""

    def __init__(self, dataset: SegmentationDataset, writer: DatasetWriter, advance: Callable[[], None]) -> None:
        self.dataset, self.writer, self.advance = dataset, writer, advance
        self.made = 0

    def original_and_rotations(self, sample: Sample, augmentations: _Augmentations) -> None:
        self.writer.original(sample)
        self.advance()
        if not augmentations.angles:
            return
        image, mask = self.dataset.read_image(sample), self.dataset.read_mask(sample)
        for degrees in augmentations.angles:
            suffix = f"rot{int(round(degrees))}" + ("f" if augmentations.flip else "")
            rotated = rotate(image, mask, degrees, augmentations.flip)
            stem = Path(sample.image_id)
            new_id = stem.with_name(f"{stem.stem}_{suffix}{stem.suffix}").as_posix()
            metadata = {"augmented": True, "sources": [sample.image_id], "source_patients": [sample.patient]}
            self._new(new_id, *rotated, metadata)

    def mosaic(self, n: int, pool: list[Sample], rng: np.random.Generator) -> None:
        """Mosaic ``n``: four images drawn from ``pool``, one fold's (so the mosaic stays out of its training)."""
        picks = [pool[i] for i in rng.choice(len(pool), size=4, replace=len(pool) < 4)]
        parts = [(self.dataset.read_image(s), self.dataset.read_mask(s)) for s in picks]
        image, mask = mosaic(parts, rng)
        patients = sorted({s.patient for s in picks})
        new_id = f"{picks[0].patient}/mosaic{n:05d}.png"
        metadata = {"augmented": True, "sources": [s.image_id for s in picks], "source_patients": patients}
        self._new(new_id, image, mask, metadata)

    def _new(self, image_id: str, image: np.ndarray, mask: np.ndarray, metadata: dict) -> None:
        self.writer.new(image_id, image, mask, metadata)
        self.made += 1
        self.advance()


def _source_splits(data: str | Path, dataset: SegmentationDataset, console: Console) -> dict:
    """The source's folds: its current splits file, or a default split made now (and said so)."""
    if splits_path(data).is_file():
        splits = load_splits(data)
        check_current(splits, dataset, splits_path(data))
        return splits
    folds = min(DEFAULT_FOLDS, len({patient_of(s) for s in dataset.samples}))
    splits = make_splits(dataset, folds, DEFAULT_SEED, None)
    console.print(
        f"{data} has no {SPLITS_FILE}: new images follow a {folds}-fold split (seed {DEFAULT_SEED}), "
        "written to the output"
    )
    return splits


def _write_samples(
    dataset: SegmentationDataset,
    staging: Path,
    augmentations: _Augmentations,
    fold_images: list[list[Sample]],
    console: Console,
) -> int:
    """The originals and the new samples into ``staging``; returns how many new ones were made. Mosaic ``n`` takes
    its images from fold ``n`` (round robin): ``fold_images`` holds each fold's validation images."""
    rng = np.random.default_rng(augmentations.seed)
    writer = dataset.writer(staging)
    total = len(dataset) * (1 + len(augmentations.angles)) + augmentations.mosaics
    with transient_progress(console) as progress:
        task = progress.add_task("augmenting", total=total)
        samples = _SampleWriter(dataset, writer, lambda: progress.advance(task))
        for sample in dataset.samples:
            samples.original_and_rotations(sample, augmentations)
        for n in range(augmentations.mosaics):
            samples.mosaic(n, fold_images[n % len(fold_images)], rng)
    writer.finish()
    return samples.made


def _write_carried_splits(dataset: SegmentationDataset, splits: dict, staging: Path, made: int) -> None:
    """The source's folds over the written dataset: each new image trains where its sources train."""
    written = open_dataset(staging, "train")
    folds = assign_folds(written, fold_of_patients(dataset, splits), len(splits["folds"]))
    write_json(splits_path(staging), {**splits, "augmented": made, "folds": folds})


def augment(
    data: str | Path,
    out: str | Path,
    mosaics: int = 0,
    rotations: list[float] | tuple[float, ...] = (),
    flip: bool = False,
    seed: int = 0,
    exist_ok: bool = False,
    console: Console | None = None,
) -> Path:
    """Write the originals of ``data`` plus augmented samples to ``out``, with folds that cannot leak.

    The source's folds (its ``splits.json``, or a 5-fold split made now) decide everything: a mosaic takes its four
    images from one fold's validation images, every new image trains only in the folds its sources train in, and
    ``out/splits.json`` carries those folds over, so validation stays originals only. ``exist_ok``: replace an
    ``out`` that is not empty.
    """
    console = console or output_console()
    if mosaics < 0:
        raise CompkitError("--mosaic", f"must be 0 or more, got {mosaics}")
    if not mosaics and not rotations and not flip:
        raise CompkitError(None, "nothing to do: ask for --mosaic N, --rotate DEG or --flip")
    dataset = open_dataset(data, "train")
    out = Path(out).absolute()
    refuse_nonempty(out, exist_ok)
    if any(is_augmented(s) for s in dataset.samples):
        raise CompkitError(data, "is itself augmented: augment the original dataset instead")
    splits = _source_splits(data, dataset, console)
    by_id = {s.image_id: s for s in dataset.samples}
    fold_images = [[by_id[i] for i in fold["val"]] for fold in splits["folds"]]
    augmentations = _Augmentations(list(rotations) or ([0.0] if flip else []), flip, mosaics, seed)
    with OutputLock(out), AtomicFolder(out) as staging:
        refuse_nonempty(out, exist_ok)  # again, now that no other process can write it
        made = _write_samples(dataset, staging, augmentations, fold_images, console)
        _link_test_split(Path(data), staging)
        _write_carried_splits(dataset, splits, staging, made)
    console.print(
        f"[green]wrote[/green] {out}: {len(dataset)} originals + {made} augmented samples, "
        f"with {splits_path(out)} (the source's folds)"
    )
    console.print(f"next: compkit train --recipe tiny --data {out} --fold all")
    return out
