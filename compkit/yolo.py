"""YOLO-seg (ultralytics) as a second model family, fully offline.

A recipe whose ``model.arch`` names an ultralytics segmentation model (``yolov8n-seg``, ``yolo11n-seg``, or a
``.yaml``) trains here instead of through smp. Each fold's split is exported to ultralytics' format inside the run
folder (normalised polygons, one line per class polygon; reused while unchanged), trained with
``overlap_mask=False`` so overlapping bones survive, and predicted into the same probability store as the smp
runs: per class and pixel, the maximum over that class's instances of mask x confidence (hflip TTA averaged).

Offline: ``YOLO_OFFLINE=1``, telemetry off, a configuration folder compkit owns with a font copied from
matplotlib (ultralytics otherwise downloads Arial.ttf), no AMP check (``amp=False``), no pretrained download.
Ultralytics' own files stay in ``fold<k>/ultralytics/``; compkit's ``best.pt`` holds the best weights as a
state dict (loadable with ``weights_only=True``).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from compkit.data import SegmentationDataset
from compkit.data.cache import SampleCache
from compkit.errors import CompkitError
from compkit.fileio import atomic_write
from compkit.metrics import DiceMeter
from compkit.recipe import Recipe
from compkit.store import StoreWriter

ULTRALYTICS_SUBDIR = "ultralytics"
EXPORT_SUBDIR = "yolo_data"
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSProp", "lion": "auto"}
PREDICT_CONF = 0.05  # low: the per-pixel map is mask x confidence, thresholding happens later


def is_ultralytics_arch(arch: str) -> bool:
    return "yolo" in arch.lower()


def config_dir() -> Path:
    return Path(os.environ.get("COMPKIT_CONFIG_DIR", Path.home() / ".config" / "compkit")) / "ultralytics"


def prepare_offline() -> None:
    """Everything ultralytics would fetch, set or probe, settled before it is imported."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir()))
    font_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in FONTS:
        if not (font_dir / name).exists():
            shutil.copyfile(source, font_dir / name)
    from ultralytics import settings

    if settings.get("sync", True):
        settings.update({"sync": False})


def _model_source(recipe: Recipe) -> str:
    arch = recipe.model.arch
    return arch if arch.endswith((".yaml", ".yml")) else f"{arch}.yaml"


def export_fold(
    dataset: SegmentationDataset, cache: SampleCache, train_ids: list[str], val_ids: list[str], folder: Path
) -> Path:
    """Write the fold in ultralytics' segmentation layout under ``folder/yolo_data``; reuse it while unchanged."""
    root = folder / EXPORT_SUBDIR
    key = hashlib.sha1(json.dumps([cache.folder.name, train_ids, val_ids, list(dataset.classes)]).encode()).hexdigest()
    marker = root / "export.json"
    if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
        return root / "dataset.yaml"
    if root.exists():
        shutil.rmtree(root)
    by_id = {s.image_id: s for s in dataset.samples}
    for part, ids in (("train", train_ids), ("val", val_ids)):
        (root / "images" / part).mkdir(parents=True, exist_ok=True)
        (root / "labels" / part).mkdir(parents=True, exist_ok=True)
        for image_id in ids:
            sample = by_id[image_id]
            stem = image_id.replace("/", "__").rsplit(".", 1)[0]
            image = cache.image(cache.position[image_id])
            cv2.imwrite(str(root / "images" / part / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            height, width = dataset.image_shape(sample)
            lines = []
            for polygon in sample.polygons:
                points = polygon.points.astype(np.float64) / np.array([width, height])
                coords = " ".join(f"{v:.6f}" for v in np.clip(points, 0, 1).ravel())
                lines.append(f"{polygon.class_index} {coords}")
            (root / "labels" / part / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {json.dumps(name)}" for i, name in enumerate(dataset.classes))
    (root / "dataset.yaml").write_text(f"path: {root.absolute()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    marker.write_text(json.dumps({"key": key}))
    return root / "dataset.yaml"


def build_yolo(recipe: Recipe, classes: list[str] | tuple[str, ...], state_dict: dict[str, torch.Tensor] | None = None):
    """An ultralytics YOLO object for ``recipe.model.arch`` with ``len(classes)`` classes (weights from a state dict)."""
    prepare_offline()
    from ultralytics import YOLO
    from ultralytics.nn.tasks import SegmentationModel

    yolo = YOLO(_model_source(recipe), task="segment")
    network = SegmentationModel(cfg=_model_source(recipe), nc=len(classes), verbose=False)
    if state_dict is not None:
        network.load_state_dict(state_dict)
    network.names = dict(enumerate(classes))
    yolo.model = network
    return yolo


def class_probabilities(yolo, images_rgb: np.ndarray, num_classes: int, tta: str, device: str) -> np.ndarray:
    """(B, C, S, S) per-class maps: max over the class's instances of mask x confidence; hflip TTA averaged."""
    size = images_rgb.shape[1]
    views = [False, True] if tta in ("hflip", "d4", "scales") else [False]
    total = np.zeros((len(images_rgb), num_classes, size, size), np.float32)
    for flip in views:
        batch = [cv2.cvtColor(np.ascontiguousarray(im[:, ::-1] if flip else im), cv2.COLOR_RGB2BGR) for im in images_rgb]
        results = yolo.predict(batch, imgsz=size, conf=PREDICT_CONF, retina_masks=True, verbose=False, device=device, max_det=300)
        for b, result in enumerate(results):
            if result.masks is None:
                continue
            masks = result.masks.data.float().cpu().numpy()
            confs = result.boxes.conf.float().cpu().numpy()
            classes = result.boxes.cls.int().cpu().numpy()
            probs = np.zeros((num_classes, size, size), np.float32)
            for mask, conf, cls in zip(masks, confs, classes, strict=True):
                if mask.shape != (size, size):
                    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
                np.maximum(probs[cls], mask * conf, out=probs[cls])
            total[b] += probs[:, :, ::-1] if flip else probs
    return total / len(views)


def predict_yolo_cache(yolo, cache: SampleCache, positions: list[int], recipe: Recipe, device: str, tta: str):
    batch = recipe.infer.batch_size
    for start in range(0, len(positions), batch):
        chunk = positions[start : start + batch]
        probs = class_probabilities(yolo, np.stack([cache.image(i) for i in chunk]), len(cache.classes), tta, device)
        yield from zip(chunk, probs, strict=True)


def write_yolo_store(yolo, dataset, cache, positions, recipe, device: str, folder: Path, tta: str | None = None, console=None) -> Path:
    tta = tta or recipe.infer.tta
    with StoreWriter(folder, cache.classes, (cache.size, cache.size)) as store, Progress(console=console or Console(quiet=True), transient=True) as p:
        task = p.add_task(f"predicting {folder.parent.name}/{folder.name} (yolo, tta {tta})", total=len(positions))
        for i, probs in predict_yolo_cache(yolo, cache, positions, recipe, device, tta):
            sample = dataset.samples[i]
            store.write(sample.image_id, probs, dataset.image_shape(sample), cache.box(i))
            p.advance(task)
    return folder


def load_yolo_fold(folder: Path, recipe: Recipe, classes) -> Any:
    from compkit.train import load_checkpoint

    return build_yolo(recipe, classes, load_checkpoint(folder / "best.pt")["model"])


def ultralytics_device(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else str(device.index or 0)


def train_yolo_fold(
    recipe: Recipe,
    dataset: SegmentationDataset,
    cache: SampleCache,
    fold: int,
    folds: list[dict[str, list[str]]],
    run_dir: Path,
    device: torch.device,
    console: Console,
    test_data: tuple[SegmentationDataset, SampleCache] | None = None,
) -> dict[str, Any]:
    """Train one fold with ultralytics and leave compkit's run folder layout behind."""
    folder = run_dir / f"fold{fold}"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "recipe.yaml", "w", encoding="utf-8") as f:
        f.write(recipe.to_yaml())
    data_yaml = export_fold(dataset, cache, folds[fold]["train"], folds[fold]["val"], folder)
    prepare_offline()
    from ultralytics import YOLO

    weights = recipe.model.encoder_weights
    if weights is not None and not Path(weights).is_file():
        raise CompkitError(weights, "model.encoder_weights must be null or a local .pt file (compkit never downloads weights)")
    cfg = recipe.train
    started = time.time()
    yolo = YOLO(_model_source(recipe), task="segment")
    if weights:
        yolo = yolo.load(weights)  # a local file; ultralytics reads its own checkpoint format
    console.print(f"fold {fold}: training {recipe.model.arch} with ultralytics (its files in {folder / ULTRALYTICS_SUBDIR})")
    yolo.train(
        data=str(data_yaml.absolute()),
        epochs=cfg.epochs,
        imgsz=recipe.data.image_size,
        batch=cfg.batch_size,
        device=ultralytics_device(device),
        workers=cfg.workers,
        seed=cfg.seed,
        deterministic=True,
        project=str(folder.absolute()),
        name=ULTRALYTICS_SUBDIR,
        exist_ok=True,
        overlap_mask=False,
        amp=False,
        plots=False,
        pretrained=bool(weights),
        optimizer=OPTIMIZERS.get(recipe.optim.name, "auto"),
        lr0=recipe.optim.lr,
        weight_decay=recipe.optim.weight_decay,
        patience=cfg.early_stop or cfg.epochs,
        fliplr=0.5 if any(a["name"] == "HorizontalFlip" for a in recipe.aug) else 0.0,
        mosaic=0.0,
        verbose=False,
    )
    best_file = folder / ULTRALYTICS_SUBDIR / "weights" / "best.pt"
    if not best_file.is_file():
        best_file = folder / ULTRALYTICS_SUBDIR / "weights" / "last.pt"
    trained = YOLO(str(best_file), task="segment")  # ultralytics reads the file it just wrote
    state = {k: v.float() for k, v in trained.model.state_dict().items()}
    yolo = build_yolo(recipe, dataset.classes, state)

    # The leaderboard metric on the validation fold, as for smp runs.
    position = cache.position
    val_pos = [position[i] for i in folds[fold]["val"]]
    meter = DiceMeter(dataset.classes)
    dev = ultralytics_device(device)
    for i, probs in predict_yolo_cache(yolo, cache, val_pos, recipe, dev, "none"):
        meter.update(probs > recipe.infer.threshold, cache.mask(i))
    dice = meter.per_class()
    rows = _results_rows(folder / ULTRALYTICS_SUBDIR / "results.csv", dataset.classes, dice, time.time() - started)
    with atomic_write(folder / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    from compkit.train import save_checkpoint

    epochs = len(rows)
    save_checkpoint(folder / "best.pt", {"model": state, "epoch": epochs, "best_dice": float(dice.mean()), "family": "ultralytics"})
    write_yolo_store(yolo, dataset, cache, val_pos, recipe, dev, folder / "oof", console=console)
    if test_data is not None:
        test_dataset, test_cache = test_data
        write_yolo_store(yolo, test_dataset, test_cache, list(range(len(test_dataset))), recipe, dev, folder / "test", console=console)
    console.print(f"fold {fold}: val dice {dice.mean():.4f} (yolo, leaderboard metric)")
    return {"fold": fold, "best_dice": float(dice.mean()), "best_epoch": epochs, "epochs": epochs, "folder": folder}


def _results_rows(ultralytics_csv: Path, classes, dice: np.ndarray, seconds: float) -> list[dict[str, Any]]:
    """compkit's results.csv: ultralytics' per-epoch losses, the leaderboard dice of the final (best) weights."""
    rows: list[dict[str, Any]] = []
    if ultralytics_csv.is_file():
        with open(ultralytics_csv, newline="") as f:
            for record in csv.DictReader(f):
                record = {k.strip(): v.strip() for k, v in record.items() if k}
                losses = {k: float(v) for k, v in record.items() if k.startswith("train/")}
                rows.append(
                    {
                        "epoch": int(float(record.get("epoch", len(rows) + 1))),
                        "train_loss": round(sum(losses.values()), 6),
                        **{f"train_{k.removeprefix('train/')}": round(v, 6) for k, v in losses.items()},
                        "lr": float(record.get("lr/pg0", "nan") or "nan"),
                    }
                )
    if not rows:
        rows.append({"epoch": 1, "train_loss": float("nan"), "lr": float("nan")})
    for row in rows[:-1]:
        row.update({f"val_dice_{c}": "" for c in classes}, val_dice_mean="", seconds="")
    rows[-1].update({f"val_dice_{c}": round(float(d), 6) for c, d in zip(classes, dice, strict=True)})
    rows[-1]["val_dice_mean"] = round(float(dice.mean()), 6)
    rows[-1]["seconds"] = round(seconds, 2)
    return rows
