"""``compkit predict``: a trained fold's probabilities for the test (or validation) images -> a probability store.

``runs/<name>/fold<k>/test/`` for the test split, ``runs/<name>/fold<k>/oof/`` for the fold's validation images.
Each fold is loaded through its model family (recorded in its recipe and checkpoint); the family says which
prediction settings it honours. Stores are written by :func:`compkit.inference.predictor.write_store`, as in training.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from compkit.data import open_dataset
from compkit.data.splits import check_current, load_splits, splits_path
from compkit.families import load_fold, resolve_family
from compkit.inference.predictor import CachedImages, inference_settings, write_store
from compkit.inference.views import TTA_VIEWS
from compkit.stores.probabilities import OOF_STORE, TEST_STORE, carry_store
from compkit.training.device import resolve_device
from compkit.training.preprocess import cache_for
from compkit.training.runs import check_fold_split, copy_fold_records, fold_dirs, fold_number, fold_recipe
from compkit.util.console import output_console
from compkit.util.errors import REPLACE_FLAG, CompkitError
from compkit.util.locks import OutputLock

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
    console: Console | None = None,
) -> list[Path]:
    """Predict every fold of every run; returns the stores written.

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
                fold = load_fold(folder, dataset.classes, torch_device, console, recipe)
                cache = cache_for(dataset, fold.recipe, console)
                if destination != folder:  # the predictions' own run folder: what ensemble and submit read
                    copy_fold_records(folder, destination)
                    if split == "test":
                        # what ensemble tunes thresholds and postprocessing on, so a submission made there
                        # matches the local one instead of falling back to 0.5
                        carry_store(folder / OOF_STORE, destination / OOF_STORE)
                images = CachedImages(dataset, cache, positions)
                store = write_store(fold.predictor, images, target, settings, console, f"{fold.family.name}, ")
            console.print(f"[green]wrote[/green] {store} ({len(positions)} images, {fold.family.name})")
            written.append(store)
    if written:
        console.print(f"next: compkit ensemble {' '.join(sorted({str(p.parent.parent) for p in written}))}")
    return written
