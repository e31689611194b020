"""``compkit export``: a dataset or a trained run in another shape.

``compkit export run RUN OUT [--half]``: an inference-only copy of a run to upload (a Kaggle dataset, another
machine). Per fold: ``best.pt`` without the optimizer, schedule and scaler state (optionally float16 weights), the
fold's records (``recipe.yaml``, ``run.json`` with the dataset's path relative to the copy, ``pretrained.json``,
``results.csv``, ``train.log``) and its ``oof/`` store, so ``compkit ensemble`` tunes the same thresholds and
postprocessing there as here. Each exported fold is loaded back through its family before the copy is swapped in.

``compkit export nnunet DATA OUT``: any dataset compkit reads, in nnU-Net v2's raw 2D layout.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from compkit.data import SegmentationDataset, open_dataset
from compkit.data.formats import dataset_folder
from compkit.data.splits import splits_path
from compkit.families import load_fold
from compkit.stores.members import NNUNET_KEY
from compkit.stores.probabilities import OOF_STORE, carry_store
from compkit.training.checkpoint import (
    CHECKPOINT_BEST,
    fold_checkpoint,
    inference_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from compkit.training.results import RESULTS_CSV
from compkit.training.runs import (
    PRETRAINED_FILE,
    TRAIN_LOG,
    claim_output_folder,
    copy_fold_records,
    fold_dirs,
    read_run_record,
    write_run_record,
)
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError
from compkit.util.fileio import AtomicFolder, link_or_copy, read_json, write_json, write_png

MODES = ("auto", "labels", "regions", "per-class")
TARGETS = ("nnunet",)  # dataset layouts; `compkit export run` is export_run
Cases = dict[str, str]  # nnU-Net case id -> compkit image id


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
    with transient_progress(console) as progress:
        task = progress.add_task("looking for overlapping classes", total=len(dataset))
        for sample in dataset.samples:
            image = dataset.read_image(sample)
            grey = grey and bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
            mask = dataset.read_mask(sample, image.shape[:2])
            multi = mask.sum(axis=0) > 1
            if multi.any():
                codes = np.unique(np.tensordot(weights, mask[:, multi].astype(np.int64), axes=1))
                combos.update(
                    tuple(int(c) for c in np.flatnonzero((code >> np.arange(len(weights))) & 1)) for code in codes
                )
            ignored = ignored or dataset.read_ignore(sample, image.shape[:2]) is not None
            progress.advance(task)
    return sorted(combos, key=lambda c: (len(c), c)), grey, ignored


def _write_image(path: Path, image: np.ndarray, grey: bool) -> None:
    write_png(path, image[..., 0] if grey else image)  # BGR in, RGB on disk (OpenCV writes BGR arrays as RGB PNGs)


def _label_map(
    mask: np.ndarray, values: dict[tuple[int, ...], int], ignore: np.ndarray | None, ignore_value: int | None
) -> np.ndarray:
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


@dataclass(frozen=True)
class ExportSource:
    """What every dataset exported from one source shares: its splits, where it lies (absolute), and what the scan
    of its training images found (every image grey, some pixels ignored)."""

    train: SegmentationDataset
    test: SegmentationDataset | None
    data: Path
    grey: bool
    ignored: bool


@dataclass(frozen=True)
class LabelValues:
    """How one exported dataset's classes (indices into the source's) become label values: each class its own
    (1..C), then each combination of classes that occurs (regions), then nnU-Net's ``ignore``, when used."""

    classes: list[int]
    values: dict[tuple[int, ...], int]
    regions: bool
    ignore_value: int | None

    @classmethod
    def of(cls, classes: list[int], combos: list[tuple[int, ...]], ignored: bool) -> LabelValues:
        values = {(c,): k + 1 for k, c in enumerate(classes)}
        for combo in combos:
            values[combo] = len(values) + 1
        return cls(classes, values, bool(combos), len(values) + 1 if ignored else None)

    def local(self) -> dict[tuple[int, ...], int]:
        """The values by combination of positions in ``classes`` (the rows of a mask cut to them)."""
        return {tuple(self.classes.index(c) for c in combo): v for combo, v in self.values.items()}

    def labels(self, names: list[str]) -> dict[str, Any]:
        """``dataset.json``'s ``labels``: per class its value, or (regions) every value whose combination holds it."""
        labels: dict[str, Any] = {"background": 0}
        for k, name in enumerate(names):
            c = self.classes[k]
            own = self.values[(c,)]
            shared = (v for combo, v in self.values.items() if len(combo) > 1 and c in combo)
            labels[name] = [own, *shared] if self.regions else own
        if self.ignore_value is not None:
            labels["ignore"] = self.ignore_value
        return labels


def _write_cases(
    folder: Path, name: str, source: ExportSource, scheme: LabelValues, console: Console
) -> tuple[Cases, Cases]:
    """Every training image with its label map, and every test image, into ``folder`` (the staging folder of the
    dataset ``name``); returns the case ids (case -> image id) of each split."""
    train, test, grey, classes = source.train, source.test, source.grey, scheme.classes
    train_cases = _case_ids(train, set())
    test_cases = _case_ids(test, set(train_cases)) if test is not None else {}
    by_id = {s.image_id: s for s in train.samples}
    local = scheme.local()
    with transient_progress(console) as progress:
        task = progress.add_task(f"writing {name}", total=len(train_cases) + len(test_cases))
        for case, image_id in train_cases.items():
            sample = by_id[image_id]
            image = train.read_image(sample)
            mask = train.read_mask(sample, image.shape[:2])[classes]
            _write_image(folder / "imagesTr" / f"{case}_0000.png", image, grey)
            ignore = train.read_ignore(sample, image.shape[:2])
            write_png(folder / "labelsTr" / f"{case}.png", _label_map(mask, local, ignore, scheme.ignore_value))
            progress.advance(task)
        if test is not None:
            by_test = {s.image_id: s for s in test.samples}
            for case, image_id in test_cases.items():
                _write_image(folder / "imagesTs" / f"{case}_0000.png", test.read_image(by_test[image_id]), grey)
                progress.advance(task)
    return train_cases, test_cases


def _dataset_json(
    name: str, source: ExportSource, scheme: LabelValues, train_cases: Cases, test_cases: Cases
) -> dict[str, Any]:
    """``dataset.json`` of the dataset folder ``name``, with compkit's own entry (classes, mode, cases)."""
    names = [source.train.classes[c] for c in scheme.classes]
    info: dict[str, Any] = {
        "channel_names": {"0": "grey"} if source.grey else {"0": "R", "1": "G", "2": "B"},
        "labels": scheme.labels(names),
        "numTraining": len(train_cases),
        "file_ending": ".png",
        "name": name,
        "description": f"exported by compkit from {source.data}",
    }
    if scheme.regions:
        info["regions_class_order"] = [scheme.values[(c,)] for c in scheme.classes]
    info[NNUNET_KEY] = {
        "classes": names,
        "mode": "regions" if scheme.regions else "labels",
        "data_root": str(source.data),
        "cases": {**train_cases, **test_cases},
    }
    return info


def _write_folds(folder: Path, data: Path, train_cases: Cases) -> None:
    """compkit's folds of ``data`` (when split) as nnU-Net's ``splits_final.json``, by case id."""
    folds = splits_path(data)
    if folds.is_file():
        case_of = {image_id: case for case, image_id in train_cases.items()}
        cased = [
            {part: [case_of[i] for i in fold[part] if i in case_of] for part in ("train", "val")}
            for fold in read_json(folds)["folds"]
        ]
        write_json(folder / "splits_final.json", cased)


def _write_dataset(
    folder: Path, name: str, source: ExportSource, classes: list[int], combos: list[tuple[int, ...]], console: Console
) -> dict[str, Any]:
    """The nnU-Net dataset ``name`` of ``classes`` (with the combinations ``combos`` as regions) into ``folder``, its
    staging folder; returns its ``dataset.json``."""
    scheme = LabelValues.of(classes, combos, source.ignored)
    train_cases, test_cases = _write_cases(folder, name, source, scheme, console)
    info = _dataset_json(name, source, scheme, train_cases, test_cases)
    write_json(folder / "dataset.json", info)
    _write_folds(folder, source.data, train_cases)
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
    console = console or output_console()
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
        raise CompkitError(
            "--mode",
            f"classes overlap ({len(combos)} combinations, e.g. {', '.join(train.classes[c] for c in combos[0])}): use regions or per-class",
        )
    source = ExportSource(train, test, Path(data).absolute(), grey, ignored)
    written = []
    if mode == "per-class":
        jobs = [
            (f"Dataset{dataset_id + k:03d}_{name}_{re.sub(r'[^A-Za-z0-9]', '', c) or k}", [k], [])
            for k, c in enumerate(train.classes)
        ]
    else:
        jobs = [(f"Dataset{dataset_id:03d}_{name}", list(range(len(train.classes))), combos)]
    for folder_name, classes, job_combos in jobs:
        folder = Path(out) / folder_name
        with AtomicFolder(folder) as staging:
            info = _write_dataset(staging, folder_name, source, classes, job_combos, console)
        written.append(folder)
        kind = "as regions (overlapping classes)" if "regions_class_order" in info else "as labels"
        ignore = ", ignored pixels as nnU-Net's ignore label" if "ignore" in info["labels"] else ""
        console.print(
            f"[green]wrote[/green] {folder}: {info['numTraining']} training cases, {len(info['compkit']['classes'])} classes {kind}{ignore}"
        )
    return written


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _export_fold(folder: Path, destination: Path, half: bool) -> dict[str, Any]:
    """One fold's inference-only copy in ``destination``; what it measured (sizes, dtype)."""
    source = fold_checkpoint(folder)
    checkpoint = load_checkpoint(source)
    copy_fold_records(folder, destination)
    record = read_run_record(destination)
    record["exported"] = {"from": str(folder.resolve()), "checkpoint": source.name, "half": half}
    write_run_record(destination, record)
    for name in (PRETRAINED_FILE, RESULTS_CSV, TRAIN_LOG):
        if (folder / name).is_file():
            link_or_copy(folder / name, destination / name)
    save_checkpoint(destination / CHECKPOINT_BEST, inference_checkpoint(checkpoint, half))
    carry_store(folder / OOF_STORE, destination / OOF_STORE)
    classes = checkpoint.get("classes")
    if classes is None:
        raise CompkitError(source, "the checkpoint does not record its classes (trained before they did)")
    with torch.inference_mode():  # what predict, ensemble and load_run will do with it
        load_fold(destination, classes, torch.device("cpu"))
    return {
        "fold": folder.name,
        "before": _size(folder),
        "checkpoints": sum(_size(p) for p in folder.glob("*.pt")),
        "after": _size(destination),
        "checkpoint": _size(destination / CHECKPOINT_BEST),
    }


def export_run(
    run: str | Path,
    out: str | Path,
    half: bool = False,
    exist_ok: bool = False,
    console: Console | None = None,
) -> Path:
    """An inference-only copy of ``run`` (a run or fold folder) in ``out`` (a run folder: ``out/fold<k>/``);
    returns ``out``. ``half``: float16 weights. An existing ``out`` is replaced only with ``exist_ok``."""
    console = console or output_console()
    folds = fold_dirs(run)
    out = Path(out)
    if out.resolve() in {Path(run).resolve(), *(f.resolve() for f in folds)}:
        raise CompkitError(out, "is the run being exported: choose another folder")
    table = Table(title=f"export of {run}" + (" (float16 weights)" if half else ""))
    for column in ("fold", "run folder", "its checkpoints", "export", "its best.pt"):
        table.add_column(column, justify="left" if column == "fold" else "right")
    rows = []
    with claim_output_folder(out, explicit=True, exist_ok=exist_ok), AtomicFolder(out) as staging:
        for folder in folds:
            with console.status(f"exporting {folder}"):
                rows.append(_export_fold(folder, staging / folder.name, half))
    for row in rows:
        table.add_row(
            row["fold"], _mb(row["before"]), _mb(row["checkpoints"]), _mb(row["after"]), _mb(row["checkpoint"])
        )
    console.print(table)
    before, after = sum(r["before"] for r in rows), sum(r["after"] for r in rows)
    console.print(
        f"[green]wrote[/green] {out} ({len(rows)} folds, {_mb(after)}; the run folder: {_mb(before)}), "
        "each fold loaded back for prediction"
    )
    console.print(
        f"next: upload {out} (e.g. as a Kaggle dataset), then `compkit predict {out} --data DATA --out DIR` there"
    )
    return out
