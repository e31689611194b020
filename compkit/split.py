"""``compkit split``: patient-grouped (optionally stratified) K-fold -> ``DATA/splits.json``.

Both hands of a patient always land in the same fold. The file records how it was made, so it is reused
as long as the settings and the image list are unchanged.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from compkit.data import SegmentationDataset, open_dataset
from compkit.errors import CompkitError
from compkit.data.splits import SPLITS_VERSION, load_splits, splits_path
from compkit.fileio import write_json

MISSING = "unknown"


def strata(dataset: SegmentationDataset, column: str) -> list[str]:
    """One stratum label per sample from a meta column; numeric columns with many values go into quartiles."""
    values = [s.meta.get(column) for s in dataset.samples]
    if all(v is None for v in values):
        known = sorted({k for s in dataset.samples for k in s.meta})
        raise CompkitError(dataset.root, f"no meta column '{column}' to stratify by (meta columns: {', '.join(known) or 'none'})")
    numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numeric) == sum(v is not None for v in values) and len(set(numeric)) > 6:
        edges = np.quantile(numeric, [0.25, 0.5, 0.75])
        labels = []
        for v in values:
            if v is None:
                labels.append(MISSING)
            else:
                q = int(np.searchsorted(edges, v, side="right"))
                labels.append(f"Q{q + 1}")
        return labels
    return [MISSING if v is None else str(v) for v in values]


def patient_groups(dataset: SegmentationDataset) -> list[str]:
    """One group per sample: its patient, merged with every patient an augmented sample was made from
    (a mosaic of four patients ties them into one group, so no patient is in two folds)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s in dataset.samples:
        sources = s.meta.get("source_patients") or []
        if isinstance(sources, str):
            sources = sources.split("|")
        for other in sources:
            parent[find(str(other))] = find(s.patient)
        find(s.patient)
    return [find(s.patient) for s in dataset.samples]


def make_splits(dataset: SegmentationDataset, folds: int, seed: int, stratify: str | None) -> dict[str, Any]:
    """Fold assignment with scikit-learn's GroupKFold / StratifiedGroupKFold (shuffled, seeded)."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    samples = dataset.samples
    patients = sorted(set(patient_groups(dataset)))
    if folds < 2:
        raise CompkitError(None, f"--folds must be at least 2, got {folds}")
    if len(patients) < folds:
        raise CompkitError(dataset.root, f"{len(patients)} patients cannot fill {folds} folds")
    groups = patient_groups(dataset)
    index = np.arange(len(samples))
    if stratify:
        labels = strata(dataset, stratify)
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = splitter.split(index, labels, groups)
        method = "StratifiedGroupKFold"
    else:
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = splitter.split(index, groups=groups)
        method = "GroupKFold"
    fold_list = [
        {
            "train": sorted(samples[i].image_id for i in train),
            "val": sorted(samples[i].image_id for i in val),
        }
        for train, val in parts
    ]
    return {
        "version": SPLITS_VERSION,
        "method": method,
        "group": "patient",
        "seed": seed,
        "stratify": stratify,
        "num_folds": folds,
        "folds": fold_list,
    }


def _same_settings(old: dict[str, Any], folds: int, seed: int, stratify: str | None, image_ids: set[str]) -> str | None:
    """None when ``old`` was made with these settings for these images, else what differs."""
    for key, value in (("num_folds", folds), ("seed", seed), ("stratify", stratify)):
        if old.get(key) != value:
            return f"it was made with {key}={old.get(key)!r}, not {value!r}"
    old_ids = {i for fold in old["folds"] for i in fold.get("val", [])}
    if old_ids != image_ids:
        return f"its images differ from the dataset's ({len(old_ids ^ image_ids)} added or removed)"
    return None


def fold_table(dataset: SegmentationDataset, splits: dict[str, Any]) -> Table:
    by_id = {s.image_id: s for s in dataset.samples}
    column = splits.get("stratify")
    labels = dict(zip((s.image_id for s in dataset.samples), strata(dataset, column), strict=True)) if column else {}
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
    folds: int = 5,
    seed: int = 21,
    stratify: str | None = None,
    force: bool = False,
    console: Console | None = None,
) -> Path:
    """Write (or reuse) ``DATA/splits.json``; returns its path."""
    console = console or Console()
    dataset = open_dataset(data, "train")
    path = splits_path(data)
    if path.exists() and not force:
        old = load_splits(data)
        difference = _same_settings(old, folds, seed, stratify, {s.image_id for s in dataset.samples})
        if difference:
            raise CompkitError(path, f"exists but {difference}: pass --force to replace it")
        console.print(f"reusing {path} (same settings; --force to rebuild)")
        splits = old
    else:
        splits = make_splits(dataset, folds, seed, stratify)
        write_json(path, splits)
        console.print(f"[green]wrote[/green] {path}")
    console.print(fold_table(dataset, splits))
    return path
