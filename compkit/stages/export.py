"""``compkit export nnunet DATA OUT``: any dataset compkit reads, in nnU-Net v2's raw 2D layout.

``OUT/Dataset<ID>_<Name>/``: ``imagesTr/<case>_0000.png`` (one PNG per image: RGB, or grey when every image is
grey; nnU-Net reads an RGB PNG as three channels from the one file), ``labelsTr/<case>.png`` (integer labels,
consecutive from 0), ``imagesTs/<case>_0000.png`` for the test split, and ``dataset.json`` (``channel_names``,
``labels``, ``numTraining``, ``file_ending``; for overlapping classes ``regions_class_order``). The case id is the
image id with ``/`` as ``__`` and no extension. ``dataset.json`` also carries a ``compkit`` entry (classes,
mode, case -> image id), which nnU-Net copies into its model and prediction folders, so ``compkit ensemble`` can
take an ``nnUNetv2_predict --save_probabilities`` folder as a member. With a ``splits.json``, compkit's
patient-grouped folds are written as ``splits_final.json`` (copy it into ``nnUNet_preprocessed/Dataset<ID>_<Name>/``
to train nnU-Net on the same folds).

Classes that never overlap become labels 1..C. Overlapping classes (hand bones) cannot be one label each: with
``--mode regions`` (the default for them) every combination of classes that occurs gets its own label value and
each class is the region of the values that contain it (nnU-Net's region-based training: sigmoid outputs, one
per class); ``--mode per-class`` writes one binary dataset per class instead (``Dataset<ID+k>_<Name>_<class>``).
Pixels the dataset ignores (outside a field of view) get nnU-Net's ``ignore`` label (the highest value).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from compkit.data import SegmentationDataset, open_dataset
from compkit.data.formats import dataset_folder
from compkit.data.splits import splits_path
from compkit.util.errors import CompkitError
from compkit.util.fileio import AtomicFolder, read_json, write_json, write_png
from compkit.stores.members import NNUNET_KEY

MODES = ("auto", "labels", "regions", "per-class")
TARGETS = ("nnunet",)


def case_id(image_id: str) -> str:
    """nnU-Net's case identifier of an image: no folders, no extension, only safe characters."""
    stem = image_id.rsplit(".", 1)[0] if "." in Path(image_id).name else image_id
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem.replace("/", "__"))


def _case_ids(dataset: SegmentationDataset, taken: set[str]) -> dict[str, str]:
    cases = {}
    for sample in dataset.samples:
        case = base = case_id(sample.image_id)
        n = 1
        while case in taken:
            n += 1
            case = f"{base}_{n}"
        taken.add(case)
        cases[case] = sample.image_id
    return cases


def _combinations(dataset: SegmentationDataset, console: Console) -> tuple[list[tuple[int, ...]], bool, bool]:
    """Combinations of classes that occur in some pixel (more than one class), whether every image is grey, and
    whether any pixel is ignored."""
    combos: set[tuple[int, ...]] = set()
    grey, ignored = True, False
    weights = 1 << np.arange(len(dataset.classes), dtype=np.int64)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("looking for overlapping classes", total=len(dataset))
        for sample in dataset.samples:
            image = dataset.read_image(sample)
            grey = grey and bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
            mask = dataset.read_mask(sample, image.shape[:2])
            multi = mask.sum(axis=0) > 1
            if multi.any():
                codes = np.unique(np.tensordot(weights, mask[:, multi].astype(np.int64), axes=1))
                combos.update(tuple(int(c) for c in np.flatnonzero((code >> np.arange(len(weights))) & 1)) for code in codes)
            ignored = ignored or dataset.read_ignore(sample, image.shape[:2]) is not None
            progress.advance(task)
    return sorted(combos, key=lambda c: (len(c), c)), grey, ignored


def _write_image(path: Path, image: np.ndarray, grey: bool) -> None:
    write_png(path, image[..., 0] if grey else image)  # BGR in, RGB on disk (OpenCV writes BGR arrays as RGB PNGs)


def _label_map(mask: np.ndarray, values: dict[tuple[int, ...], int], ignore: np.ndarray | None, ignore_value: int | None) -> np.ndarray:
    """(C, H, W) multi-hot -> (H, W) label values: the value of each pixel's combination of classes."""
    out = np.zeros(mask.shape[1:], np.uint8 if max(values.values(), default=0) < 255 else np.uint16)
    weights = 1 << np.arange(mask.shape[0], dtype=np.int64)
    codes = np.tensordot(weights, mask.astype(np.int64), axes=1)
    for combo, value in values.items():
        code = int(sum(1 << c for c in combo))
        out[codes == code] = value
    if ignore is not None and ignore_value is not None:
        out[ignore.any(axis=0)] = ignore_value
    return out


def _write_dataset(
    folder: Path,
    train: SegmentationDataset,
    test: SegmentationDataset | None,
    classes: list[int],
    combos: list[tuple[int, ...]],
    grey: bool,
    ignored: bool,
    data: Path,
    console: Console,
) -> dict[str, Any]:
    names = [train.classes[c] for c in classes]
    values = {(c,): k + 1 for k, c in enumerate(classes)}
    for combo in combos:
        values[combo] = len(values) + 1
    regions = bool(combos)
    ignore_value = len(values) + 1 if ignored else None
    train_cases = _case_ids(train, set())
    test_cases = _case_ids(test, set(train_cases)) if test is not None else {}
    by_id = {s.image_id: s for s in train.samples}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"writing {folder.name}", total=len(train_cases) + len(test_cases))
        for case, image_id in train_cases.items():
            sample = by_id[image_id]
            image = train.read_image(sample)
            mask = train.read_mask(sample, image.shape[:2])[classes]
            _write_image(folder / "imagesTr" / f"{case}_0000.png", image, grey)
            local = {tuple(classes.index(c) for c in combo): v for combo, v in values.items()}
            ignore = train.read_ignore(sample, image.shape[:2])
            write_png(folder / "labelsTr" / f"{case}.png", _label_map(mask, local, ignore, ignore_value))
            progress.advance(task)
        if test is not None:
            by_test = {s.image_id: s for s in test.samples}
            for case, image_id in test_cases.items():
                _write_image(folder / "imagesTs" / f"{case}_0000.png", test.read_image(by_test[image_id]), grey)
                progress.advance(task)
    labels: dict[str, Any] = {"background": 0}
    for k, name in enumerate(names):
        own = values[(classes[k],)]
        labels[name] = [own, *(v for combo, v in values.items() if len(combo) > 1 and classes[k] in combo)] if regions else own
    if ignore_value is not None:
        labels["ignore"] = ignore_value
    info: dict[str, Any] = {
        "channel_names": {"0": "grey"} if grey else {"0": "R", "1": "G", "2": "B"},
        "labels": labels,
        "numTraining": len(train_cases),
        "file_ending": ".png",
        "name": folder.name,
        "description": f"exported by compkit from {data}",
    }
    if regions:
        info["regions_class_order"] = [values[(c,)] for c in classes]
    info[NNUNET_KEY] = {
        "classes": names,
        "mode": "regions" if regions else "labels",
        "data_root": str(data),
        "cases": {**train_cases, **test_cases},
    }
    write_json(folder / "dataset.json", info)
    folds = splits_path(data)
    if folds.is_file():
        case_of = {image_id: case for case, image_id in train_cases.items()}
        splits = read_json(folds)
        write_json(
            folder / "splits_final.json",
            [{"train": [case_of[i] for i in f["train"] if i in case_of], "val": [case_of[i] for i in f["val"] if i in case_of]} for f in splits["folds"]],
        )
    return info


def export(
    target: str,
    data: str | Path,
    out: str | Path,
    dataset_id: int = 501,
    name: str | None = None,
    mode: str = "auto",
    console: Console | None = None,
) -> list[Path]:
    """Write ``data`` in ``target``'s layout (``nnunet``) under ``out``; returns the dataset folders written."""
    console = console or Console()
    if target not in TARGETS:
        raise CompkitError(target, f"unknown export target (known: {', '.join(TARGETS)})")
    if mode not in MODES:
        raise CompkitError("--mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if not 1 <= dataset_id <= 999:
        raise CompkitError("--id", f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    train = open_dataset(data, "train")
    test = open_dataset(data, "test") if train.has_split("test") else None
    root = dataset_folder(data)
    name = re.sub(r"[^A-Za-z0-9]", "", name or root.name.title()) or "Data"
    combos, grey, ignored = _combinations(train, console)
    if combos and mode == "labels":
        raise CompkitError("--mode", f"classes overlap ({len(combos)} combinations, e.g. {', '.join(train.classes[c] for c in combos[0])}): use regions or per-class")
    written = []
    if mode == "per-class":
        jobs = [(f"Dataset{dataset_id + k:03d}_{name}_{re.sub(r'[^A-Za-z0-9]', '', c) or k}", [k], []) for k, c in enumerate(train.classes)]
    else:
        jobs = [(f"Dataset{dataset_id:03d}_{name}", list(range(len(train.classes))), combos)]
    for folder_name, classes, job_combos in jobs:
        folder = Path(out) / folder_name
        with AtomicFolder(folder) as staging:
            info = _write_dataset(staging, train, test, classes, job_combos, grey, ignored, Path(data).absolute(), console)
        written.append(folder)
        kind = "as regions (overlapping classes)" if "regions_class_order" in info else "as labels"
        ignore = ", ignored pixels as nnU-Net's ignore label" if "ignore" in info["labels"] else ""
        console.print(f"[green]wrote[/green] {folder}: {info['numTraining']} training cases, {len(info['compkit']['classes'])} classes {kind}{ignore}")
    return written
