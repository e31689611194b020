"""``compkit encode-labels``: a split's ground-truth labels written as a submission CSV.

A sanity check of the whole submission path (row order, RLE, validation, scoring): the result scores 1.0.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from compkit.data.labelled import open_labelled
from compkit.submission.layouts import write_submission
from compkit.util.console import output_console


def encode_labels(
    data: str | Path,
    out: str | Path,
    split: str = "test",
    gt: str | Path | None = None,
    console: Console | None = None,
) -> Path:
    console = console or output_console()
    dataset = open_labelled(data, split, gt)
    path = write_submission(out, dataset, dataset.read_mask, console, description="encoding labels")
    console.print(f"[green]wrote[/green] {path} ({len(dataset.samples)} images x {len(dataset.classes)} classes)")
    console.print(f"next: compkit score {path} --data {data} --split {split}")
    return path
