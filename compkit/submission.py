"""Submission CSVs: the competition's row order, streaming writing, and validation that names the bad row.

Format: header ``image_name,class,rle``; images in the dataset's order (sorted by path relative to the image
folder), for each image one row per class in the dataset's class order; masks at the original image size,
run-length encoded (see :mod:`compkit.rle`). Hard-vote tools match rows by position, so order is part of the format.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from compkit import rle as rle_codec
from compkit.data import Sample, SegmentationDataset
from compkit.errors import CompkitError
from compkit.fileio import atomic_write

HEADER = ("image_name", "class", "rle")


@dataclass(frozen=True)
class Row:
    line: int  # line number in the file (the header is line 1)
    image_name: str
    class_name: str
    rle: str


def expected_keys(dataset: SegmentationDataset) -> list[tuple[str, str]]:
    """(image_name, class) of every row, in the required order."""
    return [(dataset.submission_name(s), c) for s in dataset.samples for c in dataset.classes]


def read_rows(path: str | Path) -> Iterator[Row]:
    """Rows of a submission CSV, header checked; raises CompkitError naming the line of a malformed row."""
    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise CompkitError(path, "submission file not found") from None
    except OSError as e:
        raise CompkitError(path, f"cannot read: {e.strerror or e}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != HEADER:
                raise CompkitError(path, f"line 1: header must be {','.join(HEADER)}, found {','.join(header or [])!r}")
            for line, fields in enumerate(reader, start=2):
                if len(fields) != 3:
                    raise CompkitError(path, f"line {line}: expected 3 fields (image_name,class,rle), found {len(fields)}")
                yield Row(line, fields[0], fields[1], fields[2])
        except (csv.Error, UnicodeDecodeError) as e:
            raise CompkitError(path, f"line {reader.line_num}: not a valid CSV row ({e})") from None


def validate(path: str | Path, dataset: SegmentationDataset, check_rle: bool = True) -> list[Row]:
    """Check a submission against the dataset: rows, order, classes and (optionally) every RLE string.

    Returns the rows in file order. The first problem raises CompkitError naming its line.
    """
    path = Path(path)
    rows = list(read_rows(path))
    expected = expected_keys(dataset)
    position = {key: i for i, key in enumerate(expected)}
    classes = set(dataset.classes)
    images = {name for name, _ in expected}
    seen: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row.image_name, row.class_name)
        if row.class_name not in classes:
            raise CompkitError(path, f"line {row.line}: unknown class {row.class_name!r}")
        if row.image_name not in images:
            raise CompkitError(path, f"line {row.line}: image {row.image_name!r} is not in the {dataset.split} set")
        if key in seen:
            raise CompkitError(path, f"line {row.line}: duplicate row for {row.image_name} / {row.class_name} (first on line {seen[key]})")
        seen[key] = row.line
    if len(seen) < len(expected):
        missing = [key for key in expected if key not in seen]
        raise CompkitError(
            path, f"{len(missing)} missing rows ({len(rows)} of {len(expected)} present); first missing: {missing[0][0]} / {missing[0][1]}"
        )
    for i, row in enumerate(rows):
        if position[(row.image_name, row.class_name)] != i:
            want = expected[i]
            raise CompkitError(
                path, f"line {row.line}: wrong row order: expected {want[0]} / {want[1]}, found {row.image_name} / {row.class_name}"
            )
    if check_rle:
        shapes = {dataset.submission_name(s): dataset.image_shape(s) for s in dataset.samples}
        for row in rows:
            try:
                rle_codec.validate(row.rle, shapes[row.image_name])
            except ValueError as e:
                raise CompkitError(path, f"line {row.line} ({row.image_name} / {row.class_name}): bad RLE: {e}") from None
    return rows


def write_submission(
    path: str | Path,
    dataset: SegmentationDataset,
    mask_for: Callable[[Sample], np.ndarray],
    console: Console | None = None,
    description: str = "encoding submission",
) -> Path:
    """Stream a submission: ``mask_for(sample)`` gives the (C, H, W) binary mask at the original size.

    Rows are written image by image (memory does not grow with the test set), then the file is validated and
    only then renamed into place.
    """
    path = Path(path)
    console = console or Console()
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(description, total=len(dataset.samples))
            for sample in dataset.samples:
                mask = mask_for(sample)
                if mask.shape[0] != len(dataset.classes):
                    raise ValueError(f"mask for {sample.image_id} has {mask.shape[0]} channels, expected {len(dataset.classes)}")
                name = dataset.submission_name(sample)
                for class_name, channel in zip(dataset.classes, mask, strict=True):
                    writer.writerow((name, class_name, rle_codec.encode(channel, dataset.rle_order)))
                progress.advance(task)
        handle.flush()
        validate(handle.name, dataset)
    return path
