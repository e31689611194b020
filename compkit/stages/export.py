"""``compkit export``: a dataset or a trained run in another shape.

``compkit export run RUN OUT [--half]``: an inference-only copy of a run to upload (a Kaggle dataset, another
machine). Per fold: ``best.pt`` without the optimizer, schedule and scaler state (optionally float16 weights), the
fold's records (``recipe.yaml``, ``run.json`` with the dataset's path relative to the copy, ``pretrained.json``,
``results.csv``, ``train.log``) and its ``oof/`` store, so ``compkit ensemble`` tunes the same thresholds and
postprocessing there as here. Each exported fold is loaded back through its family before the copy is swapped in.

``compkit export onnx RUN [--fold K|all] [--out DIR] [--opset 17]``: each fold's network as ``fold<k>/model.onnx``
(or, with ``--out DIR``, ``DIR/<run>/fold<k>/model.onnx`` beside a copy of the fold's records and ``oof/`` store: a
run folder that ``compkit predict --engine onnx``, ``ensemble`` and ``load_run(engine="onnx")`` read without the
checkpoints). Dynamic batch, height and width; the classes, normalisation, input size, TTA views, family and the
checkpoint's digest in the model's metadata (:mod:`compkit.inference.onnx_engine`). Each export is verified before
it is kept: images of the run's own dataset, predicted with the run's TTA and windows by the torch model and by
onnxruntime, may differ by at most 1e-4 in probability (printed); a model that differs more, or cannot export, is
refused in one line and nothing is written.

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

import contextlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from compkit import __version__
from compkit.data import SegmentationDataset, open_dataset
from compkit.data.cache import SampleCache
from compkit.data.formats import dataset_folder
from compkit.data.splits import splits_path
from compkit.families import FoldModel, ModelFamily, load_fold
from compkit.families.loading import fold_classes
from compkit.inference.onnx_engine import (
    DEFAULT_OPSET,
    EXPORT_TOLERANCE,
    ONNX_FILE,
    file_digest,
    require,
    write_metadata,
)
from compkit.inference.predictor import InferenceSettings, Predictor, inference_settings
from compkit.stores.members import NNUNET_KEY
from compkit.stores.probabilities import OOF_STORE, carry_store
from compkit.training.checkpoint import (
    CHECKPOINT_BEST,
    fold_checkpoint,
    inference_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from compkit.training.preprocess import cache_for
from compkit.training.results import RESULTS_CSV
from compkit.training.runs import (
    PRETRAINED_FILE,
    TRAIN_LOG,
    claim_output_folder,
    copy_fold_records,
    fold_dirs,
    fold_number,
    named_folds,
    read_run_record,
    write_run_record,
)
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError
from compkit.util.fileio import AtomicFolder, link_or_copy, read_json, write_json, write_png
from compkit.util.locks import OutputLock

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


#: How many of the run's images each export is verified on (a batch of them: the batch axis is checked too).
VERIFY_IMAGES = 4


@dataclass(frozen=True)
class OnnxVerification:
    images: int
    max_difference: float
    source: str  # what the images were: the run's dataset, or random pixels where it is not here


def _onnx_folds(run: Path, fold: str) -> list[Path]:
    folders = fold_dirs(run)
    wanted = named_folds(fold)
    if wanted is None:
        return folders
    have = {fold_number(f): f for f in folders}
    missing = [k for k in wanted if k not in have]
    if missing:
        listed = ", ".join(str(k) for k in have)
        raise CompkitError("--fold", f"no fold {missing[0]} in {run} (it has {listed})")
    return [have[k] for k in wanted]


def _verification_images(fold: FoldModel, classes: list[str], console: Console) -> tuple[np.ndarray, str]:
    """Up to VERIFY_IMAGES images as the fold's predictor takes them: the run's own (cached as in training), or
    random pixels at the training size where the run's dataset is not on this machine."""
    recipe = fold.recipe
    root = recipe.data.root
    if root is None or not Path(root).exists():
        console.print(f"note: the run's dataset ({root}) is not here: verifying on random images")
        rng = np.random.default_rng(0)
        size = recipe.data.image_size
        return rng.integers(0, 256, (min(2, VERIFY_IMAGES), size, size, 3), dtype=np.uint8), "random pixels"
    dataset = open_dataset(root, "train", recipe.data.format, classes=recipe.data.classes)
    if list(dataset.classes) != list(classes):
        raise CompkitError(root, "its classes are not the ones the fold was trained on")
    cache: SampleCache = cache_for(dataset, recipe, console)
    count = min(VERIFY_IMAGES, len(dataset))
    return np.stack([cache.image(i) for i in range(count)]), f"{root}"


def _probabilities(predictor: Predictor, images: np.ndarray, settings: InferenceSettings) -> np.ndarray:
    batch = settings.batch_size
    return np.concatenate([predictor.predict(images[i : i + batch], settings) for i in range(0, len(images), batch)])


def _metadata(fold: FoldModel, classes: list[str], checkpoint: Path, family_entries: dict) -> dict:
    recipe = fold.recipe
    mean, std = recipe.data.mean, recipe.data.std  # resolved when the fold trained; null where the family scales
    return {
        "classes": list(classes),
        "family": fold.family.name,
        "arch": recipe.model.arch,
        "encoder": recipe.model.encoder,
        "image_size": recipe.data.image_size,
        "window": recipe.infer.window,
        "overlap": recipe.infer.overlap,
        "tta": recipe.infer.tta,
        "threshold": recipe.infer.threshold,
        "mean": list(mean) if mean is not None else None,
        "std": list(std) if std is not None else None,
        "crop_border": recipe.data.crop_border,
        "clahe": recipe.data.clahe.model_dump() if recipe.data.clahe else None,
        "fold": fold_number(fold.folder),
        "run": fold.folder.parent.name,
        "checkpoint_sha256": file_digest(checkpoint),
        "compkit_version": __version__,
        **family_entries,
    }


def _export_onnx_fold(
    folder: Path, destination: Path, opset: int, console: Console
) -> tuple[Path, OnnxVerification, float, float]:
    """Export, verify and place one fold's model; returns (its path, the verification, MB, seconds)."""
    started = time.perf_counter()
    cpu = torch.device("cpu")  # exported and verified on the CPU: the reference every machine has
    checkpoint = fold_checkpoint(folder)
    classes = fold_classes(folder)
    if classes is None:
        raise CompkitError(checkpoint, "does not record its classes (trained before checkpoints did): train again")
    fold = load_fold(folder, classes, cpu, console)
    family: ModelFamily = fold.family
    settings = family.check_inference(inference_settings(fold.recipe), Console(quiet=True))
    destination.mkdir(parents=True, exist_ok=True)
    target = destination / ONNX_FILE
    handle, partial = tempfile.mkstemp(dir=destination, prefix=f".{ONNX_FILE}.", suffix=".partial")
    os.close(handle)
    partial_path = Path(partial)
    try:
        with console.status(f"exporting {folder} to ONNX (opset {opset})"):
            entries = family.export_onnx(fold.predictor, fold.recipe, partial_path, opset)
            write_metadata(partial_path, _metadata(fold, classes, checkpoint, entries))
        with console.status(f"verifying {target} against the torch model"):
            images, source = _verification_images(fold, classes, console)
            exported = family.load_onnx(fold.recipe, classes, partial_path, cpu)
            expected = _probabilities(fold.predictor, images, settings)
            got = _probabilities(exported, images, settings)
            difference = float(np.abs(expected - got).max())
        if not difference <= EXPORT_TOLERANCE:  # also refuses NaN
            raise CompkitError(
                folder,
                f"its ONNX model's probabilities differ from the torch model's by up to {difference:.2e} "
                f"(more than {EXPORT_TOLERANCE:g}) on {len(images)} images: not exported",
            )
        os.replace(partial_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial_path.unlink()
    megabytes = target.stat().st_size / 1e6
    return target, OnnxVerification(len(images), difference, source), megabytes, time.perf_counter() - started


def export_onnx(
    run: str | Path,
    fold: str = "all",
    out: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    console: Console | None = None,
) -> list[Path]:
    """Export the chosen folds (``fold``: 'all', a number, or several: '0,2') of ``run`` to ONNX, each verified
    against its torch model; returns the models written. ``out``: write ``out/<run>/fold<k>/`` (with the fold's
    records) instead of into the run."""
    console = console or output_console()
    require("onnx")
    require("onnxruntime")
    if not 11 <= opset <= 21:
        raise CompkitError("--opset", f"must be between 11 and 21, got {opset}")
    run = Path(run)
    folders = _onnx_folds(run, fold)
    table = Table(title=f"ONNX export of {run} (opset {opset})")
    for column in ("fold", "model", "MB", "verified on", "max |Δp|", "seconds"):
        table.add_column(column, justify="left" if column in ("fold", "model", "verified on") else "right")
    written = []
    for folder in folders:
        destination = folder if out is None else Path(out) / folder.parent.name / folder.name
        with OutputLock(destination.parent, "--out", kept=f"{destination / ONNX_FILE} left as it was"):
            if destination != folder:
                copy_fold_records(folder, destination)
                carry_store(folder / OOF_STORE, destination / OOF_STORE)
            path, check, megabytes, seconds = _export_onnx_fold(folder, destination, opset, console)
        images = f"{check.images} images ({check.source})"
        table.add_row(
            folder.name, str(path), f"{megabytes:.1f}", images, f"{check.max_difference:.1e}", f"{seconds:.1f}"
        )
        written.append(path)
    console.print(table)
    where = run if out is None else Path(out) / folders[0].parent.name
    console.print(
        f"[green]wrote[/green] {len(written)} ONNX models, each within {EXPORT_TOLERANCE:g} of its torch model"
    )
    console.print(f"next: compkit predict {where} --engine onnx")
    return written
