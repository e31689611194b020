"""``compkit predict``: a trained fold's probabilities for the test (or validation) images -> a probability store.

``runs/<name>/fold<k>/test/`` for the test split, ``runs/<name>/fold<k>/oof/`` for the fold's validation images.
Each fold is loaded through its model family (recorded in its recipe and checkpoint); the family says which
prediction settings it honours. Stores are written by :func:`compkit.inference.predictor.write_store`, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console

from compkit.data import open_dataset
from compkit.data.splits import check_current, load_splits, splits_path
from compkit.evaluation.postprocess import apply_rule
from compkit.families import load_fold, resolve_family
from compkit.families.loading import DEFAULT_ENGINE, ENGINES
from compkit.inference.predictor import CachedImages, inference_settings, write_store
from compkit.inference.views import TTA_VIEWS
from compkit.stores.members import MEMBERS_FILE, chosen_tuning, open_member, read_members_file
from compkit.stores.probabilities import OOF_STORE, TEST_STORE, carry_store
from compkit.training.device import resolve_device
from compkit.training.preprocess import cache_for
from compkit.training.runs import (
    check_fold_split,
    claim_output_folder,
    copy_fold_records,
    fold_dirs,
    fold_number,
    fold_recipe,
)
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import REPLACE_FLAG, CompkitError
from compkit.util.fileio import AtomicFolder, write_csv, write_json, write_png
from compkit.util.imageio import IMAGE_SUFFIXES, read_image
from compkit.util.locks import OutputLock
from compkit.util.overlay import class_colours, overlay, with_legend

SPLIT_STORES = {"test": TEST_STORE, "val": OOF_STORE}


def predict(
    runs: list[str | Path],
    data: str | Path | None = None,
    split: str = "test",
    tta: str | None = None,
    batch: int | None = None,
    window: int | None = None,
    overlap: float | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    exist_ok: bool = False,
    engine: str = DEFAULT_ENGINE,
    console: Console | None = None,
) -> list[Path]:
    """Predict every fold of every run; returns the stores written. ``engine``: what computes the networks
    (``torch``, or ``onnx``: onnxruntime on the folds' exported models, the same stores within 1/255).

    Stores go into the fold folders, or with ``out`` (run folders that are read-only, e.g. attached to a Kaggle
    notebook) into ``out/<run>/fold<k>/`` beside a copy of the fold's recipe and run record, which
    ``compkit ensemble out/<run>`` reads like a run. An existing store is replaced only with ``exist_ok``."""
    console = console or output_console()
    if split not in SPLIT_STORES:
        raise CompkitError("--split", f"must be one of {', '.join(SPLIT_STORES)}, got {split!r}")
    if tta is not None:
        TTA_VIEWS.get(tta, where="--tta")  # an unknown view set fails here, before any fold is read
    if batch is not None and batch < 1:
        raise CompkitError("--batch", f"must be at least 1, got {batch}")
    if window is not None and window < 32:
        raise CompkitError("--window", f"must be at least 32 pixels, got {window}")
    if overlap is not None and not 0 <= overlap < 1:
        raise CompkitError("--overlap", f"must be at least 0 and below 1, got {overlap}")
    ENGINES.get(engine, where="--engine")
    torch_device = resolve_device(device, "--device")
    written = []
    for run in runs:
        for folder in fold_dirs(run):
            recipe = fold_recipe(folder)
            family = resolve_family(recipe, console)
            settings = family.check_inference(
                inference_settings(recipe, tta, window, overlap, batch), console
            )  # before any work
            root = data or recipe.data.root
            if split == "test":
                dataset = open_dataset(root, "test", recipe.data.format, classes=recipe.data.classes)
                positions = list(range(len(dataset)))
            else:
                dataset = open_dataset(root, "train", recipe.data.format, classes=recipe.data.classes)
                splits_file = splits_path(root, recipe.data.splits)
                splits = load_splits(root, recipe.data.splits)
                check_current(splits, dataset, splits_file)
                check_fold_split(folder, splits, splits_file)  # else the "out-of-fold" store would have trained on them
                k = fold_number(folder)
                if k >= len(splits["folds"]):
                    raise CompkitError(
                        folder, f"fold {k} is not in {splits_file} (folds 0..{len(splits['folds']) - 1})"
                    )
                ids = set(splits["folds"][k]["val"])
                positions = [i for i, s in enumerate(dataset.samples) if s.image_id in ids]
            destination = folder if out is None else Path(out) / folder.parent.name / folder.name
            target = destination / SPLIT_STORES[split]
            # The run folder written to is locked as `compkit train` locks it: no second writer of its stores.
            with OutputLock(destination.parent, "--out", kept=f"{target} left as it was"):
                if target.exists() and not exist_ok:
                    raise CompkitError(target, f"already exists: pass {REPLACE_FLAG} to replace it, or --out DIR")
                fold = load_fold(folder, dataset.classes, torch_device, console, recipe, engine)
                cache = cache_for(dataset, fold.recipe, console)
                if destination != folder:  # the predictions' own run folder: what ensemble and submit read
                    copy_fold_records(folder, destination)
                    if split == "test":
                        # what ensemble tunes thresholds and postprocessing on, so a submission made there
                        # matches the local one instead of falling back to 0.5
                        carry_store(folder / OOF_STORE, destination / OOF_STORE)
                images = CachedImages(dataset, cache, positions)
                label = f"{fold.family.name}, {engine}, "
                store = write_store(fold.predictor, images, target, settings, console, label)
            console.print(f"[green]wrote[/green] {store} ({len(positions)} images, {fold.family.name}, {engine})")
            written.append(store)
    if written:
        console.print(f"next: compkit ensemble {' '.join(sorted({str(p.parent.parent) for p in written}))}")
    return written


# --save: per-class PNG planes (0/255 masks, or p x 255), or one index PNG ("index", written by write_palette_png)
SAVED_PLANES = {
    "masks": lambda probs, masks: masks.astype(np.uint8) * 255,
    "probs": lambda probs, masks: np.round(probs * 255).astype(np.uint8),
}
SAVE_CHOICES = (*SAVED_PLANES, "index")
PREDICTIONS_DIR = "predictions"  # where `compkit predict RUN --source PATH` writes by default (predictions/<run>)
PREDICTIONS_CSV = "predictions.csv"
PREDICT_RECORD = "predict.json"


def source_images(source: str | Path) -> tuple[Path, list[Path]]:
    """(the folder ids are relative to, the image files) of ``source``: a folder (searched recursively, hidden
    files skipped), a glob pattern (ids relative to the files' common folder) or one image."""
    import glob
    import os

    text = str(source)
    path = Path(source)
    if path.is_file():
        return path.parent, [path]
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts)]
        root = path
    elif any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        root = Path(os.path.commonpath([p.parent for p in files])) if files else Path(".")
    else:
        raise CompkitError(source, "not found (expected a folder of images, a glob pattern or an image file)")
    if not files:
        kinds = ", ".join(IMAGE_SUFFIXES)
        raise CompkitError(source, f"no images to predict (looked for {kinds})")
    return root, files


def image_ids(root: Path, files: list[Path]) -> list[str]:
    """Each file's id: its path below ``root`` without the suffix (with it where two files would share one)."""
    from collections import Counter

    stems = [p.relative_to(root).with_suffix("").as_posix() for p in files]
    clashing = {s for s, n in Counter(stems).items() if n > 1}
    return [(f"{s}_{p.suffix.lstrip('.').lower()}" if s in clashing else s) for s, p in zip(stems, files, strict=True)]


def _safe_name(name: str) -> str:
    """A class name as a file name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "class"


@dataclass
class _WeightedModels:
    """The trained models behind a run or a soft ensemble, each with its weight."""

    models: list[tuple[Any, float]]  # (RunModel, weight)

    def predict(self, image: np.ndarray, tta: str | None, window: int | None) -> np.ndarray:
        total = sum(w * model.predict(image, tta=tta, window=window) for model, w in self.models)
        return total / sum(w for _, w in self.models)


def _models_of(path: Path, device: str, engine: str, weight: float = 1.0) -> list[tuple[Any, float]]:
    """The runs behind ``path``: the run (or fold) itself, or an ensemble's members with their weights (nested
    ensembles followed); CSV members and hard votes cannot predict new images."""
    from compkit.inference.loaded_run import load_run

    members_file = path / MEMBERS_FILE
    if not members_file.is_file():
        return [(load_run(path, device=device, engine=engine), weight)]
    info = read_members_file(members_file)
    if info.get("kind") != "stores" or info.get("method") != "soft":
        raise CompkitError(
            path, "only a soft ensemble of runs predicts new images (a hard vote or a vote of CSVs has no models)"
        )
    models = []
    entries = info.get("members") or []
    total = sum(float(m.get("weight", 1.0)) for m in entries) or 1.0
    for entry in entries:
        member_path = Path(entry["path"])
        if not member_path.exists():
            raise CompkitError(member_path, f"a member of {path} is not here: predicting new images needs its models")
        models += _models_of(member_path, device, engine, weight * float(entry.get("weight", 1.0)) / total)
    return models


def predict_source(
    run: str | Path,
    source: str | Path,
    out: str | Path | None = None,
    save: str = "masks",
    threshold: str = "auto",
    tuning_from: str | Path | None = None,
    postprocess: str = "cv",
    tta: str | None = None,
    window: int | None = None,
    device: str = "auto",
    exist_ok: bool = False,
    engine: str = DEFAULT_ENGINE,
    console: Console | None = None,
) -> Path:
    """Predict any images (``source``: a folder, a glob or one file, any kind compkit reads) with a run or a soft
    ensemble of runs, into ``out`` (default ``predictions/<name>``): per image the thresholded masks (``save``
    'masks': a 0/255 PNG per class), the probabilities ('probs': p x 255 per class) or one index PNG ('index': the
    most probable class above its threshold, a palette of the class colours), and an overlay PNG with a legend;
    ``predictions.csv`` (pixels per class) and ``predict.json`` (what predicted them, the thresholds applied).
    Thresholds and postprocessing: an ensemble's tuned ones, ``tuning_from`` an ensemble's, or ``threshold``."""
    console = console or output_console()
    if save not in SAVE_CHOICES:
        raise CompkitError("--save", f"must be one of {', '.join(SAVE_CHOICES)}, got {save!r}")
    if tta is not None:
        TTA_VIEWS.get(tta, where="--tta")
    run = Path(run)
    root, files = source_images(source)
    ids = image_ids(root, files)
    member = open_member(run)
    if member.kind != "stores":
        raise CompkitError(run, "a submission CSV cannot predict images: name a run or an ensemble folder")
    ENGINES.get(engine, where="--engine")
    weighted = _WeightedModels(_models_of(run, device, engine))
    classes = weighted.models[0][0].classes
    if any(model.classes != classes for model, _ in weighted.models):
        raise CompkitError(run, "its runs predict different classes")
    thresholds, rules = chosen_tuning(member, threshold, tuning_from, postprocess, console)
    intensity = weighted.models[0][0].recipe.data.intensity
    colours = class_colours(len(classes))
    default = Path(PREDICTIONS_DIR) / member.name
    target = Path(out) if out is not None else default
    with claim_output_folder(target, explicit=out is not None, exist_ok=exist_ok) as folder:
        atomic = AtomicFolder(folder)
        try:
            rows = _predict_files(
                weighted,
                files,
                ids,
                atomic.staging,
                save,
                thresholds,
                rules,
                colours,
                (tta, window),
                intensity,
                console,
            )
            write_csv(atomic.staging / PREDICTIONS_CSV, rows)
            write_json(
                atomic.staging / PREDICT_RECORD,
                {
                    "source": str(source),
                    "run": str(run),
                    "models": len(weighted.models),
                    "classes": list(classes),
                    "save": save,
                    "thresholds": {c: float(t) for c, t in zip(classes, thresholds, strict=True)},
                    "postprocess": rules,
                    "tta": tta,
                    "window": window,
                    "engine": engine,
                    "images": len(files),
                },
            )
            atomic.commit()
        finally:
            atomic.abort()
    console.print(
        f"[green]wrote[/green] {folder} ({len(files)} images: {save}/, overlays/ with a legend, {PREDICTIONS_CSV}); "
        f"open {folder / 'overlays'} to look"
    )
    return folder


def _predict_files(
    weighted: _WeightedModels,
    files: list[Path],
    ids: list[str],
    staging: Path,
    save: str,
    thresholds: np.ndarray,
    rules: dict[str, dict],
    colours: np.ndarray,
    views: tuple[str | None, int | None],
    intensity: str | None,
    console: Console,
) -> list[dict[str, Any]]:
    """Each image predicted, thresholded, postprocessed and written; one predictions.csv row per image."""
    classes = weighted.models[0][0].classes
    rows = []
    with transient_progress(console) as progress:
        task = progress.add_task(f"predicting {len(files)} images", total=len(files))
        for path, image_id in zip(files, ids, strict=True):
            image = read_image(path, intensity=intensity)
            probs = weighted.predict(image, *views)
            masks = probs > thresholds[:, None, None]
            for c, name in enumerate(classes):
                if name in rules:
                    masks[c] = apply_rule(masks[c], rules[name])
            _write_prediction(staging, image_id, save, probs, masks, classes, colours)
            picture = overlay(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), masks, colours)
            write_png(
                staging / "overlays" / f"{image_id}.png",
                cv2.cvtColor(with_legend(picture, classes, colours, masks), cv2.COLOR_RGB2BGR),
            )
            height, width = image.shape[:2]
            rows.append(
                {
                    "id": image_id,
                    "source": str(path),
                    "width": width,
                    "height": height,
                    **{f"pixels_{name}": int(masks[c].sum()) for c, name in enumerate(classes)},
                }
            )
            progress.advance(task)
    return rows


def _write_prediction(
    staging: Path, image_id: str, save: str, probs: np.ndarray, masks: np.ndarray, classes: list[str], colours
) -> None:
    if save == "index":
        index = np.zeros(masks.shape[1:], np.uint8)
        scored = np.where(masks, probs, -1.0)
        best = scored.argmax(axis=0)
        index[masks.any(axis=0)] = best[masks.any(axis=0)] + 1
        write_palette_png(staging / "index" / f"{image_id}.png", index, colours)
        return
    planes = SAVED_PLANES[save](probs, masks)
    if len(classes) == 1:
        write_png(staging / save / f"{image_id}.png", planes[0])
        return
    for c, name in enumerate(classes):
        write_png(staging / save / image_id / f"{_safe_name(name)}.png", planes[c])


def write_palette_png(path: Path, index: np.ndarray, colours: np.ndarray) -> None:
    """An index PNG (0: background, k: class k - 1) with the class colours as its palette, as label tools write."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(index, mode="P")
    palette = [0, 0, 0, *colours.reshape(-1).tolist()]
    picture.putpalette(palette + [0] * (768 - len(palette)))
    picture.save(path, optimize=False)
