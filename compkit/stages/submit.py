"""``compkit submit``: an ensemble's (or a run's) test probabilities -> a validated submission CSV.

Each image's probabilities are upsampled to its original size one class at a time (memory stays flat),
thresholded (tuned per class where the ensemble has thresholds), postprocessed, cleared outside the dataset's field
of view (where it has one), run-length encoded and written in the competition's row order: a sample submission's
(``--sample``, or the dataset's ``sample_submission.csv``) header, rows, row order and id form where there is one.
The CSV is validated before it is renamed into place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from compkit.data import Sample, open_dataset
from compkit.evaluation.postprocess import apply_rule, upsample_mask
from compkit.stores.leaderboard import LB_FILE, parse_score, record_lb
from compkit.stores.members import (
    ENSEMBLES_DIR,
    MEMBERS_FILE,
    VOTE_CSV,
    check_covers,
    chosen_tuning,
    dataset_root,
    open_member,
)
from compkit.submission.layouts import SUBMISSIONS_DIR, convert_rows, submission_layout, validate, write_submission
from compkit.util.console import output_console
from compkit.util.errors import CompkitError
from compkit.util.fileio import atomic_write
from compkit.util.locks import OutputLock


def newest_ensemble(ensembles_dir: str | Path) -> Path:
    candidates = sorted(Path(ensembles_dir).glob(f"*/{MEMBERS_FILE}"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise CompkitError(
            ensembles_dir, "no ensemble found: run `compkit ensemble runs/*` first, or name a run folder"
        )
    return candidates[-1].parent


def submit(
    source: str | Path | None = None,
    out: str | Path | None = None,
    threshold: str = "auto",
    sample: str | Path | None = None,
    data: str | Path | None = None,
    ensembles_dir: str | Path = ENSEMBLES_DIR,
    tuning_from: str | Path | None = None,
    postprocess: str = "cv",
    lb: float | None = None,
    console: Console | None = None,
) -> Path:
    """Write ``source``'s submission CSV (default: the newest ensemble's, to ``submissions/NAME.csv``); returns
    its path. ``threshold``: 'auto', 'tuned' or a number; ``tuning_from``: an ensemble folder whose thresholds and
    postprocessing to apply instead of the source's (the local ensemble's, in a notebook that cannot tune);
    ``postprocess``: 'cv' applies the rules the ensemble kept (each confirmed by cross-validation), 'none' none.
    ``lb``: the public-leaderboard score this submission got, recorded in the source's ``lb.json`` (``compkit
    runs`` shows it beside the cross-validated figures)."""
    console = console or output_console()
    if source:
        source = Path(source)
        console.print(f"using {source} (named on the command line)")
    else:
        source = newest_ensemble(ensembles_dir)
        console.print(f"using {source}: the newest ensemble in {ensembles_dir} (name a SOURCE to choose another)")
    member = open_member(source)
    lb_folder = None
    if lb is not None:
        lb = parse_score(lb)
        lb_folder = (
            member.path if member.path.is_dir() else member.path.parent if member.path.name == VOTE_CSV else None
        )
        if lb_folder is None:
            raise CompkitError(
                "--lb", f"{source} is a CSV of its own: record the score on the run or ensemble it came from"
            )
    name = member.path.parent.name if member.kind == "csv" and member.path.name == VOTE_CSV else member.name
    out = Path(out) if out else Path(SUBMISSIONS_DIR) / f"{name}.csv"
    root = dataset_root(member, data)
    dataset = open_dataset(root, "test")
    layout = submission_layout(dataset, sample)  # the sample's header, rows, order and id form, where there is one

    if member.kind == "csv":  # a hard vote of CSVs is already a submission (in the dataset's own layout)
        rows = validate(member.path, dataset)
        with OutputLock(out), atomic_write(out, "w", newline="", encoding="utf-8") as handle:
            convert_rows(rows, submission_layout(dataset), layout, handle)
            handle.flush()
            validate(handle.name, dataset, layout=layout)
    else:
        if list(member.classes) != list(dataset.classes):
            raise CompkitError(source, "the store's classes differ from the dataset's")
        check_covers(member, dataset)
        thresholds, rules = chosen_tuning(member, threshold, tuning_from, postprocess, console)

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
            ignore = dataset.read_ignore(sample, size)  # outside a field of view: never foreground
            if ignore is not None:
                mask &= ~ignore.astype(bool)
            return mask

        with OutputLock(out):
            write_submission(out, dataset, mask_for, console, description=f"submitting {member.name}", layout=layout)
    following = f", rows and header of {layout.sample}" if layout.sample else ""
    console.print(
        f"[green]wrote[/green] {out} ({len(dataset.samples)} images x {len(dataset.classes)} classes{following}); "
        "validated: header, rows, ids and run-length encodings"
    )
    if lb_folder is not None:
        record_lb(lb_folder, lb, out)
        console.print(f"recorded leaderboard score {lb} for {lb_folder} ({LB_FILE}); `compkit runs` lists it beside CV")
    console.print(f"next: compkit score {out} --data {root}  (with local test labels), or upload {out}")
    return out
