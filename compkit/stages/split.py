"""``compkit split``: patient-grouped (optionally stratified) K-fold -> ``DATA/splits.json``.

Both hands of a patient always land in the same fold; augmented images never validate and train only in folds
none of whose patients they were made from (:mod:`compkit.data.splits`). The file records how it was made, so it
is reused as long as the settings and the image list are unchanged.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from compkit.data import SegmentationDataset, open_dataset
from compkit.data.splits import DEFAULT_FOLDS, DEFAULT_SEED, load_splits, make_splits, splits_path, strata
from compkit.util.console import output_console
from compkit.util.errors import REPLACE_FLAG, CompkitError
from compkit.util.fileio import writable_folder, write_json


def _same_settings(old: dict[str, Any], folds: int, seed: int, stratify: str | None, image_ids: set[str]) -> str | None:
    """None when ``old`` was made with these settings for these images, else what differs."""
    for key, value in (("num_folds", folds), ("seed", seed), ("stratify", stratify)):
        if old.get(key) != value:
            return f"it was made with {key}={old.get(key)!r}, not {value!r}"
    old_ids = {i for fold in old["folds"] for part in ("train", "val") for i in fold[part]}
    if old_ids != image_ids:
        return f"its images differ from the dataset's ({len(old_ids ^ image_ids)} added or removed)"
    return None


def fold_table(dataset: SegmentationDataset, splits: dict[str, Any]) -> Table:
    by_id = {s.image_id: s for s in dataset.samples}
    column = splits.get("stratify")
    labels = (
        dict(zip((s.image_id for s in dataset.samples), strata(dataset.samples, column, dataset.root), strict=True))
        if column
        else {}
    )
    table = Table(title=f"{splits['method']} folds (seed {splits['seed']})")
    for name in ("fold", "train images", "val images", "val patients"):
        table.add_column(name, justify="right")
    if column:
        table.add_column(f"val {column}")
    for k, fold in enumerate(splits["folds"]):
        row = [
            str(k),
            str(len(fold["train"])),
            str(len(fold["val"])),
            str(len({by_id[i].patient for i in fold["val"] if i in by_id})),
        ]
        if column:
            counts = Counter(labels[i] for i in fold["val"] if i in labels)
            row.append(", ".join(f"{v} {n}" for v, n in sorted(counts.items())))
        table.add_row(*row)
    return table


def split(
    data: str | Path,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
    stratify: str | None = None,
    exist_ok: bool = False,
    out: str | Path | None = None,
    console: Console | None = None,
) -> Path:
    """Write (or reuse) ``DATA/splits.json`` (or ``out``, for a read-only dataset); returns its path. ``exist_ok``:
    rebuild it even where it exists."""
    console = console or output_console()
    dataset = open_dataset(data, "train")
    path = splits_path(data, out)
    if path.exists() and not exist_ok:
        old = load_splits(data, out)
        difference = _same_settings(old, folds, seed, stratify, {s.image_id for s in dataset.samples})
        if difference:
            raise CompkitError(path, f"exists but {difference}: pass {REPLACE_FLAG} to replace it")
        console.print(f"reusing {path} (same settings; {REPLACE_FLAG} to rebuild)")
        splits = old
    else:
        if out is None and not writable_folder(path.parent):
            raise CompkitError(
                path,
                f"{path.parent} is read-only: pass --out FILE to write the splits elsewhere (then --set data.splits=FILE)",
            )
        splits = make_splits(dataset, folds, seed, stratify)
        write_json(path, splits)
        console.print(f"[green]wrote[/green] {path}")
    console.print(fold_table(dataset, splits))
    console.print(
        f"next: compkit train --recipe tiny --data {data} --fold all" + (f" --set data.splits={path}" if out else "")
    )
    return path
