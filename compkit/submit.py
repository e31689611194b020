"""``compkit submit``: an ensemble's (or a run's) test probabilities -> a validated submission CSV.

Each image's probabilities are upsampled to its original size one class at a time (memory stays flat),
thresholded (tuned per class where the ensemble has thresholds), postprocessed, run-length encoded and written
in the competition's row order. The CSV is validated before it is renamed into place.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from rich.console import Console

from compkit.data import Sample, open_dataset
from compkit.errors import CompkitError
from compkit.members import MEMBERS_FILE, check_covers, dataset_root, open_member, resolve_thresholds
from compkit.postprocess import apply_rule, upsample_mask
from compkit.submission import expected_keys, read_rows, validate, write_submission


def newest_ensemble(ensembles_dir: str | Path) -> Path:
    candidates = sorted(Path(ensembles_dir).glob(f"*/{MEMBERS_FILE}"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise CompkitError(ensembles_dir, "no ensemble found: run `compkit ensemble runs/*` first, or name a run folder")
    return candidates[-1].parent


def check_sample(mine: list[tuple[str, str]], sample_csv: str | Path) -> None:
    """Our rows (image_name, class) must match a sample submission's, in order."""
    theirs = [(r.image_name, r.class_name) for r in read_rows(sample_csv)]
    if len(mine) != len(theirs):
        raise CompkitError(sample_csv, f"sample submission has {len(theirs)} rows, ours has {len(mine)}")
    for line, (a, b) in enumerate(zip(mine, theirs, strict=True), start=2):
        if a != b:
            raise CompkitError(sample_csv, f"line {line}: sample has {b[0]} / {b[1]}, ours has {a[0]} / {a[1]}")


def submit(
    source: str | Path | None = None,
    out: str | Path | None = None,
    threshold: str = "auto",
    sample: str | Path | None = None,
    data: str | Path | None = None,
    ensembles_dir: str | Path = "ensembles",
    console: Console | None = None,
) -> Path:
    console = console or Console()
    source = Path(source) if source else newest_ensemble(ensembles_dir)
    member = open_member(source)
    name = member.path.parent.name if member.kind == "csv" and member.path.name == "vote.csv" else member.name
    out = Path(out) if out else Path("submissions") / f"{name}.csv"
    dataset = open_dataset(dataset_root(member, data), "test")
    if sample:
        check_sample(expected_keys(dataset), sample)

    if member.kind == "csv":  # a hard vote of CSVs is already a submission
        validate(member.path, dataset)
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(member.path, tmp)
            tmp.replace(out)
        except OSError as e:
            raise CompkitError(out, f"cannot write: {e.strerror or e}") from None
    else:
        if list(member.classes) != list(dataset.classes):
            raise CompkitError(source, "the store's classes differ from the dataset's")
        check_covers(member, dataset)
        thresholds = resolve_thresholds(member, threshold, console)
        rules = member.postprocess or {}

        def mask_for(sample: Sample) -> np.ndarray:
            q = member.test_uint8(sample.image_id)
            size = dataset.image_shape(sample)
            mask = np.empty((len(dataset.classes), *size), np.bool_)
            box = member.box(sample.image_id)
            if box is not None:  # the probabilities cover a crop of the image: outside it is background
                mask[:] = False
                y0, y1, x0, x1 = box
            for c, name in enumerate(dataset.classes):
                if box is None:
                    upsample_mask(q[c], size, thresholds[c], out=mask[c])
                else:
                    mask[c, y0:y1, x0:x1] = upsample_mask(q[c], (y1 - y0, x1 - x0), thresholds[c])
                if name in rules:
                    mask[c] = apply_rule(mask[c], rules[name])
            return mask

        write_submission(out, dataset, mask_for, console, description=f"submitting {member.name}")
    console.print(f"[green]wrote[/green] {out} ({len(dataset.samples)} images x {len(dataset.classes)} classes)")
    return out
