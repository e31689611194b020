"""``compkit predict``: a trained fold's probabilities for the test (or validation) images -> a probability store.

``runs/<name>/fold<k>/test/`` for the test split, ``runs/<name>/fold<k>/oof/`` for the fold's validation images.
TTA views go through the model as one batch and are averaged in logit space; images larger than the window are
tiled with Gaussian blending. :func:`write_store` is the one writer of model stores (``compkit train`` uses it).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from compkit.data import SegmentationDataset, open_dataset
from compkit.data.cache import SampleCache, build_cache
from compkit.errors import CompkitError
from compkit.inference import TTA_VIEWS, sliding_window_logits
from compkit.models import create_model
from compkit.recipe import Recipe, load_recipe
from compkit.split import load_splits
from compkit.store import StoreWriter
from compkit.yolo import is_ultralytics_arch, load_yolo_fold, ultralytics_device, write_yolo_store

SPLIT_STORES = {"test": "test", "val": "oof"}


def cache_for(dataset: SegmentationDataset, recipe: Recipe, console: Console | None = None) -> SampleCache:
    """The preprocessing cache of ``dataset`` under the recipe's data settings (size, CLAHE, border crop)."""
    data = recipe.data
    clahe = data.clahe.model_dump() if data.clahe else None
    return build_cache(dataset, data.image_size, clahe, data.cache_dir, console, crop=data.crop_border)


def normalise(images: np.ndarray, recipe: Recipe) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> normalised (B, 3, H, W) float tensor, as in training."""
    mean = np.array(recipe.data.mean, np.float32) * 255.0
    std = np.array(recipe.data.std, np.float32) * 255.0
    return torch.from_numpy(((images.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2).copy())


@torch.no_grad()
def predict_cache(
    model: torch.nn.Module,
    cache: SampleCache,
    positions: list[int],
    recipe: Recipe,
    device: torch.device,
    tta: str = "none",
    window: int | None = None,
    overlap: float = 0.5,
    batch_size: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (position, probabilities (C, S, S) float32) for cached images, batch by batch."""
    model.eval()
    batch = batch_size or recipe.infer.batch_size
    amp = recipe.train.amp and device.type == "cuda"
    for start in range(0, len(positions), batch):
        chunk = positions[start : start + batch]
        x = normalise(np.stack([cache.image(i) for i in chunk]), recipe).to(device)
        with torch.autocast(device.type, enabled=amp):
            logits = sliding_window_logits(model, x, window, overlap, tta, batch)
        yield from zip(chunk, torch.sigmoid(logits.float()).cpu().numpy(), strict=True)


def write_store(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    cache: SampleCache,
    positions: list[int],
    recipe: Recipe,
    device: torch.device,
    folder: Path,
    tta: str | None = None,
    window: int | None = None,
    overlap: float | None = None,
    batch_size: int | None = None,
    console: Console | None = None,
) -> Path:
    """Predict the cached images at ``positions`` into a store at ``folder`` (atomically)."""
    tta = tta or recipe.infer.tta
    window = window if window is not None else recipe.infer.window
    overlap = overlap if overlap is not None else recipe.infer.overlap
    console = console or Console(quiet=True)
    with StoreWriter(folder, cache.classes, (cache.size, cache.size)) as store, Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"predicting {folder.parent.name}/{folder.name} (tta {tta})", total=len(positions))
        for i, probs in predict_cache(model, cache, positions, recipe, device, tta, window, overlap, batch_size):
            sample = dataset.samples[i]
            store.write(sample.image_id, probs, dataset.image_shape(sample), cache.box(i))
            progress.advance(task)
    return folder


def fold_dirs(path: str | Path) -> list[Path]:
    """Fold folders under a run folder (``runs/name`` -> ``fold0``, ``fold1``, ...), or the fold folder itself."""
    path = Path(path)
    if (path / "recipe.yaml").is_file():
        return [path]
    folds = sorted((p for p in path.glob("fold*") if (p / "recipe.yaml").is_file()), key=lambda p: p.name)
    if not folds:
        raise CompkitError(path, "not a run or fold folder (no recipe.yaml, no fold*/ folders)")
    return folds


def load_fold_model(folder: Path, recipe: Recipe, classes, device: torch.device) -> torch.nn.Module:
    """The fold's best (else last) checkpoint in its recipe's model, for the dataset's classes."""
    from compkit.train import load_checkpoint  # checkpoints are the training stage's artifact format

    checkpoint = folder / "best.pt" if (folder / "best.pt").is_file() else folder / "last.pt"
    model = create_model(recipe.model, len(classes))
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    return model.to(device).eval()


def predict(
    runs: list[str | Path],
    data: str | Path | None = None,
    split: str = "test",
    tta: str | None = None,
    batch: int | None = None,
    window: int | None = None,
    overlap: float | None = None,
    device: str = "auto",
    console: Console | None = None,
) -> list[Path]:
    """Predict every fold of every run; returns the stores written."""
    from compkit.train import resolve_device

    console = console or Console()
    if split not in SPLIT_STORES:
        raise CompkitError("--split", f"must be one of {', '.join(SPLIT_STORES)}, got {split!r}")
    if tta is not None and tta not in TTA_VIEWS:
        raise CompkitError("--tta", f"must be one of {', '.join(TTA_VIEWS)}, got {tta!r}")
    torch_device = resolve_device(device)
    written = []
    for run in runs:
        for folder in fold_dirs(run):
            recipe = load_recipe(folder / "recipe.yaml")
            root = data or recipe.data.root
            if split == "test":
                dataset = open_dataset(root, "test", recipe.data.format, classes=recipe.data.classes)
                positions = list(range(len(dataset)))
            else:
                dataset = open_dataset(root, "train", recipe.data.format, classes=recipe.data.classes)
                k = int(folder.name.removeprefix("fold"))
                ids = set(load_splits(root)["folds"][k]["val"])
                positions = [i for i, s in enumerate(dataset.samples) if s.image_id in ids]
            cache = cache_for(dataset, recipe, console)
            target = folder / SPLIT_STORES[split]
            if is_ultralytics_arch(recipe.model.arch):
                yolo = load_yolo_fold(folder, recipe, dataset.classes)
                store = write_yolo_store(yolo, dataset, cache, positions, recipe, ultralytics_device(torch_device), target, tta, console)
            else:
                model = load_fold_model(folder, recipe, dataset.classes, torch_device)
                store = write_store(model, dataset, cache, positions, recipe, torch_device, target, tta, window, overlap, batch, console)
            console.print(f"[green]wrote[/green] {store} ({len(positions)} images)")
            written.append(store)
    return written
