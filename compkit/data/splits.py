"""The splits artifact (``DATA/splits.json``): patient-grouped folds, made by ``compkit split`` (and carried over
by ``compkit augment``), read by every stage that needs folds.

Originals are grouped by patient: every original image is in exactly one fold's ``val`` list. Augmented images
(``compkit augment``: rotations, mosaics; ``augmented`` in their meta, their ``source_patients`` listed) never
validate: each joins the ``train`` side of every fold none of whose validation patients it was made from, so
no fold ever trains on its own validation patients.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from compkit.data.formats import SegmentationDataset, dataset_folder
from compkit.data.sample import Sample
from compkit.util.errors import REPLACE_FLAG, CompkitError
from compkit.util.fileio import read_json

SPLITS_FILE = "splits.json"
SPLITS_VERSION = 1
DEFAULT_FOLDS, DEFAULT_SEED = 5, 21
MISSING = "unknown"


def splits_path(data: str | Path, override: str | Path | None = None) -> Path:
    """``splits.json`` in the dataset's folder (for a ``dataset.yaml``: the folder it describes), or ``override``
    (``compkit split --out FILE``, a recipe's ``data.splits``: for datasets that are read-only)."""
    return Path(override) if override else dataset_folder(data) / SPLITS_FILE


def load_splits(data: str | Path, override: str | Path | None = None) -> dict[str, Any]:
    """The splits file of a dataset, checked for shape; a clear error when there is none yet."""
    path = splits_path(data, override)
    if not path.is_file():
        raise CompkitError(path, "no splits file: run `compkit split DATA` first")
    splits = read_json(path)
    if not isinstance(splits, dict) or not isinstance(splits.get("folds"), list) or not splits["folds"]:
        raise CompkitError(path, "not a compkit splits file (no 'folds' list)")
    for k, fold in enumerate(splits["folds"]):
        if not isinstance(fold, dict) or not all(isinstance(fold.get(part), list) for part in ("train", "val")):
            raise CompkitError(path, f"fold {k} is not {{'train': [image ids], 'val': [image ids]}}")
        if not all(isinstance(i, str) for part in ("train", "val") for i in fold[part]):
            raise CompkitError(path, f"fold {k} lists something other than image ids")
    check_consistent(splits, path)
    return splits


def first_few(items: list[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (", ..." if len(items) > shown else "")


def check_consistent(splits: dict[str, Any], path: Path) -> None:
    """No fold trains on its own validation images, and no image validates in two folds (its predictions would
    not be out-of-fold in one of them)."""
    folds = splits["folds"]
    leaks = sorted((i, k) for k, fold in enumerate(folds) for i in set(fold["train"]) & set(fold["val"]))
    if leaks:
        named = [f"{i} in fold {k}" for i, k in leaks]
        raise CompkitError(
            path,
            f"{len(leaks)} images are in both train and val of one fold (first: {first_few(named)}); "
            f"rerun `compkit split {REPLACE_FLAG}`",
        )
    validating: dict[str, list[int]] = {}
    for k, fold in enumerate(folds):
        for i in fold["val"]:
            validating.setdefault(i, []).append(k)
    twice = sorted((i, ks) for i, ks in validating.items() if len(ks) > 1)
    if twice:
        named = [f"{i} in folds {' and '.join(map(str, ks))}" for i, ks in twice]
        raise CompkitError(
            path,
            f"{len(twice)} images are in the validation lists of several folds (first: {first_few(named)}): "
            f"each belongs to exactly one; rerun `compkit split {REPLACE_FLAG}`",
        )


def fingerprint(splits: dict[str, Any]) -> str:
    """What a fold's predictions are out-of-fold for: a hash of every fold's train and val lists."""
    folds = [{"train": sorted(f["train"]), "val": sorted(f["val"])} for f in splits["folds"]]
    return hashlib.sha1(json.dumps(folds, sort_keys=True).encode()).hexdigest()[:16]


def is_augmented(sample: Sample) -> bool:
    return bool(sample.meta.get("augmented"))


def source_patients(sample: Sample) -> list[str]:
    """The patients an image shows: its own, or those an augmented image was made from."""
    sources = sample.meta.get("source_patients") or [sample.patient]
    if isinstance(sources, str):
        sources = sources.split("|")
    return [str(s) for s in sources]


def patient_of(sample: Sample) -> str:
    """The group of an original image: its patient (the masks layout records it in ``source_patients``)."""
    return source_patients(sample)[0]


def check_current(splits: dict[str, Any], dataset: SegmentationDataset, path: Path) -> None:
    """The splits must describe the dataset as it is now: no image added or removed since ``compkit split``."""
    ids = {s.image_id for s in dataset.samples}
    named = {i for fold in splits["folds"] for part in ("train", "val") for i in fold[part]}
    gone = sorted(named - ids)
    if gone:
        raise CompkitError(
            path,
            f"names {len(gone)} images the dataset lacks (first: {first_few(gone)}); "
            f"rerun `compkit split {REPLACE_FLAG}`",
        )
    unassigned = sorted(ids - named)
    if unassigned:
        raise CompkitError(
            path,
            f"{len(unassigned)} images of the dataset are in no fold (first: {first_few(unassigned)}): "
            f"added after `compkit split`? rerun `compkit split {REPLACE_FLAG}`",
        )
    # Every original validates in exactly one fold (several: see check_consistent); augmented images in none.
    validated = {i for fold in splits["folds"] for i in fold["val"]}
    unvalidated = sorted(s.image_id for s in dataset.samples if not is_augmented(s) and s.image_id not in validated)
    if unvalidated:
        raise CompkitError(
            path,
            f"{len(unvalidated)} images are in no fold's validation list (first: {first_few(unvalidated)}): "
            f"each original image belongs to exactly one; rerun `compkit split {REPLACE_FLAG}`",
        )


def assign_folds(
    dataset: SegmentationDataset, fold_of_patient: dict[str, int], folds: int
) -> list[dict[str, list[str]]]:
    """Folds from a patient -> fold map: originals validate in their patient's fold and train in the others;
    augmented images train in every fold none of whose validation patients they were made from."""
    result: list[dict[str, list[str]]] = [{"train": [], "val": []} for _ in range(folds)]
    for s in dataset.samples:
        if is_augmented(s):
            held_out = {fold_of_patient.get(p) for p in source_patients(s)}
            for k in range(folds):
                if k not in held_out:
                    result[k]["train"].append(s.image_id)
        else:
            home = fold_of_patient[patient_of(s)]
            for k in range(folds):
                result[k]["val" if k == home else "train"].append(s.image_id)
    for fold in result:
        fold["train"].sort()
        fold["val"].sort()
    return result


def strata(samples: list[Sample], column: str, root: Path) -> list[str]:
    """One stratum label per sample from a meta column; numeric columns with many values go into quartiles."""
    values = [s.meta.get(column) for s in samples]
    if all(v is None for v in values):
        known = sorted({k for s in samples for k in s.meta})
        raise CompkitError(
            root, f"no meta column '{column}' to stratify by (meta columns: {', '.join(known) or 'none'})"
        )
    numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numeric) == sum(v is not None for v in values) and len(set(numeric)) > 6:
        edges = np.quantile(numeric, [0.25, 0.5, 0.75])
        return [MISSING if v is None else f"Q{int(np.searchsorted(edges, v, side='right')) + 1}" for v in values]
    return [MISSING if v is None else str(v) for v in values]


def make_splits(dataset: SegmentationDataset, folds: int, seed: int, stratify: str | None) -> dict[str, Any]:
    """Fold assignment of the originals with scikit-learn's GroupKFold / StratifiedGroupKFold (shuffled, seeded),
    grouped by patient; augmented images follow their sources (:func:`assign_folds`)."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold  # sklearn is slow to import; split only

    originals = [s for s in dataset.samples if not is_augmented(s)]
    groups = [patient_of(s) for s in originals]
    if folds < 2:
        raise CompkitError("--folds", f"must be at least 2, got {folds}")
    if len(set(groups)) < folds:
        raise CompkitError(dataset.root, f"{len(set(groups))} patients cannot fill {folds} folds")
    index = np.arange(len(originals))
    if stratify:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = splitter.split(index, strata(originals, stratify, dataset.root), groups)
        method = "StratifiedGroupKFold"
    else:
        parts = GroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(index, groups=groups)
        method = "GroupKFold"
    fold_of_patient = {groups[i]: k for k, (_, val) in enumerate(parts) for i in val}
    return {
        "version": SPLITS_VERSION,
        "method": method,
        "group": "patient",
        "seed": seed,
        "stratify": stratify,
        "num_folds": folds,
        "augmented": len(dataset.samples) - len(originals),
        "folds": assign_folds(dataset, fold_of_patient, folds),
    }


def fold_of_patients(dataset: SegmentationDataset, splits: dict[str, Any]) -> dict[str, int]:
    """patient -> the fold that validates it, from an existing splits file."""
    by_id = {s.image_id: s for s in dataset.samples}
    return {patient_of(by_id[i]): k for k, fold in enumerate(splits["folds"]) for i in fold["val"] if i in by_id}
