"""YOLO-seg through ultralytics, fully offline, as a compkit model family.

Each fold's split is exported to ultralytics' format inside the fold folder (normalised polygons, one line per
class polygon; reused while unchanged) and trained with ``overlap_mask=False`` so overlapping bones survive.
The recipe's albumentations transforms are handed to ultralytics as they are (``augmentations=``), and every
augmentation ultralytics would add on its own (HSV jitter, translate/scale, mosaic, erasing, its flips) is
switched off, so the recipe says exactly what happens. Settings ultralytics cannot honour are refused by
:meth:`UltralyticsFamily.check`, naming the setting.

Probabilities: per class and pixel, the maximum over that class's instances of mask x confidence, averaged
over the TTA views (any of compkit's views: flips, rotations, scales). Mask x confidence is poorly calibrated
for weak models, so validation also reports the dice at the best threshold per class (``val_dice_mean_tuned``).

Offline: ``YOLO_OFFLINE=1``, ``ULTRALYTICS_SAFE_LOAD=1`` (no unpickling of code, no ``eval`` of a model yaml's
activation), telemetry off, a configuration folder compkit owns with a font copied from matplotlib (ultralytics
otherwise downloads Arial.ttf), no AMP check (``amp=False``). COCO-pretrained weights (``model.encoder_weights: coco``
or a release file name) are read from compkit's weights cache (``<cache>/ultralytics/``, filled by
``compkit weights pull``), never fetched by ultralytics itself. Ultralytics' own files stay in
``fold<k>/ultralytics/``; compkit's ``best.pt`` holds the best weights as a state dict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from rich.console import Console

from compkit.data import SegmentationDataset
from compkit.data.cache import SampleCache
from compkit.families.base import FoldJob, FoldOutcome, ModelFamily, register_family
from compkit.inference.predictor import InferenceSettings, validation_dice
from compkit.inference.views import TTA_VIEWS
from compkit.pretrained.ultralytics_env import (
    plain_logging,
    prepare_offline,
    process_settings_kept,
    release_files,
    release_tag,
)
from compkit.pretrained.weights import SETTING, PretrainedWeights, local_weights
from compkit.training.augmentation import create_augmentation
from compkit.training.checkpoint import CHECKPOINT_BEST, save_checkpoint
from compkit.training.recipe import Recipe, defaults
from compkit.training.results import ResultsWriter, read_results, validation_columns, validation_overlays
from compkit.util.errors import CompkitError, first_line, warn
from compkit.util.fileio import AtomicFolder
from compkit.util.registry import did_you_mean

ULTRALYTICS_SUBDIR = "ultralytics"
EXPORT_SUBDIR = "yolo_data"
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSProp"}
PREDICT_CONF = 0.05  # low: the per-pixel map is mask x confidence, thresholding happens later
MAX_DETECTIONS = 300  # instances kept per image (ultralytics' default): far more than the classes
ULTRALYTICS_CLIP_GRAD = 10.0  # ultralytics clips gradients at this norm, always
MIN_LR_FRACTION = 1e-6  # ultralytics' lrf must stay above 0 (a schedule down to min_lr 0 ends just above it)
SECONDS_PER_HOUR = 3600  # ultralytics' time limit is in hours
# Augmentations ultralytics adds by default: all off, the recipe's albumentations list is the augmentation.
NO_BUILTIN_AUGMENTATION = dict(
    hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0, perspective=0.0,
    flipud=0.0, fliplr=0.0, mosaic=0.0, mixup=0.0, cutmix=0.0, copy_paste=0.0, erasing=0.0, close_mosaic=0,
)  # fmt: skip


def release_weights(reference: str) -> PretrainedWeights | None:
    """The release file a name stands for (``yolov8x-seg``, ``yolov8x-seg.pt``), or None."""
    file_name = reference if reference.endswith(".pt") else f"{reference}.pt"
    if file_name not in release_files():
        return None
    name, tag = release_tag(file_name)
    return PretrainedWeights(name=name, tag=tag, library="ultralytics", asset=file_name)


def yolo_weights(recipe: Recipe) -> PretrainedWeights | None:
    """What ``model.encoder_weights`` asks for: ``coco`` (or true): the release file of ``model.arch``; a release file
    name (``yolov8x-seg.pt``); a local ``.pt``; null: random weights."""
    value, arch = recipe.model.encoder_weights, recipe.model.arch
    if value is None or value is False:
        return None
    if isinstance(value, str) and (Path(value).expanduser().is_file() or "/" in value or os.sep in value):
        return local_weights(arch, value)
    if value is True or value == "coco":
        if arch.endswith((".yaml", ".yml")):
            raise CompkitError(
                SETTING,
                f"coco weights are named after model.arch, which is a yaml here ({arch}): name a release file "
                "(yolov8n-seg.pt)",
            )
        weights = release_weights(arch)
        if weights is None:
            raise CompkitError(
                SETTING, f"ultralytics publishes no {arch}.pt: name a release file (yolov8n-seg.pt) or a local .pt"
            )
        return weights
    weights = release_weights(str(value))
    if weights is None:
        seg = sorted(n for n in release_files() if "-seg" in n)
        raise CompkitError(
            SETTING,
            f"{value!r} is neither a local file nor an ultralytics release file{did_you_mean(str(value), seg)} "
            f"(coco, or e.g. {', '.join(seg[:3])})",
        )
    return weights


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
    with AtomicFolder(root) as staging:
        for part, ids in (("train", train_ids), ("val", val_ids)):
            (staging / "images" / part).mkdir(parents=True, exist_ok=True)
            (staging / "labels" / part).mkdir(parents=True, exist_ok=True)
            for image_id in ids:
                stem = image_id.replace("/", "__").rsplit(".", 1)[0]
                image = cache.image(cache.position[image_id])
                cv2.imwrite(str(staging / "images" / part / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                lines = [f"{c} {coords}" for c, coords in _polygon_lines(cache.mask(cache.position[image_id]))]
                (staging / "labels" / part / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        names = "\n".join(f"  {i}: {json.dumps(name)}" for i, name in enumerate(dataset.classes))
        layout = f"path: {root.absolute()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
        (staging / "dataset.yaml").write_text(layout)
        (staging / "export.json").write_text(json.dumps({"key": key}))
    return root / "dataset.yaml"


def _polygon_lines(mask: np.ndarray) -> list[tuple[int, str]]:
    """(class, normalised polygon) per outer contour of each class's cached mask: any dataset format works."""
    size = mask.shape[-1]
    lines = []
    for c in range(mask.shape[0]):
        contours, _ = cv2.findContours(mask[c].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            if len(contour) >= 3:
                points = np.clip(contour[:, 0, :].astype(np.float64) / size, 0, 1)
                lines.append((c, " ".join(f"{v:.6f}" for v in points.ravel())))
    return lines


def build_yolo(
    recipe: Recipe, classes, state_dict: dict[str, torch.Tensor] | None = None, head_source_nc: int | None = None
):
    """An ultralytics YOLO object for ``recipe.model.arch`` with ``len(classes)`` classes (weights from a state dict).

    ``head_source_nc``: the class count of the model a fold's pretrained weights were transferred from. ultralytics
    keeps that model's class-branch width (it depends on the class count) when it transfers, so the network is
    shaped the same way here, by ultralytics' own transfer, before the fold's weights go in.
    """
    prepare_offline()
    from ultralytics import YOLO
    from ultralytics.nn.tasks import SegmentationModel
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # building is not news ("Overriding model.yaml nc=80 ...")
    try:
        yolo = YOLO(_model_source(recipe), task="segment")
        network = SegmentationModel(cfg=_model_source(recipe), nc=len(classes), verbose=False)
        if head_source_nc is not None and head_source_nc != len(classes):
            network.load(SegmentationModel(cfg=_model_source(recipe), nc=head_source_nc, verbose=False), verbose=False)
    except Exception as e:  # a yaml ultralytics refuses (unsafe activation, unknown module)
        raise CompkitError("model.arch", f"ultralytics cannot build {recipe.model.arch!r}: {first_line(e)}") from None
    finally:
        LOGGER.setLevel(level)
    if state_dict is not None:
        try:
            network.load_state_dict(state_dict)
        except RuntimeError as e:  # keys or shapes of another model
            raise CompkitError(
                "model", f"the checkpoint does not fit {recipe.model.arch} with {len(classes)} classes: {first_line(e)}"
            ) from None
    network.names = dict(enumerate(classes))
    yolo.model = network
    return yolo


def ultralytics_device(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else str(device.index or 0)


class YoloPredictor:
    """Per-class maps of a YOLO-seg model: max over a class's instances of mask x confidence, per TTA view."""

    def __init__(self, yolo, num_classes: int, device: torch.device):
        self.yolo, self.num_classes, self.device = yolo, num_classes, ultralytics_device(device)

    def _class_maps(self, images_rgb: list[np.ndarray]) -> np.ndarray:
        height, width = images_rgb[0].shape[:2]
        batch = [cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2BGR) for im in images_rgb]
        with process_settings_kept():
            results = self.yolo.predict(
                batch,
                imgsz=max(height, width),
                conf=PREDICT_CONF,
                retina_masks=True,
                verbose=False,
                device=self.device,
                max_det=MAX_DETECTIONS,
            )
        out = np.zeros((len(batch), self.num_classes, height, width), np.float32)
        for b, result in enumerate(results):
            if result.masks is None:
                continue
            masks = result.masks.data.float().cpu().numpy()
            confs = result.boxes.conf.float().cpu().numpy()
            classes = result.boxes.cls.int().cpu().numpy()
            for mask, conf, cls in zip(masks, confs, classes, strict=True):
                if mask.shape != (height, width):
                    mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
                np.maximum(out[b, cls], mask * conf, out=out[b, cls])
        return out

    def predict(self, images: np.ndarray, settings: InferenceSettings) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        views = TTA_VIEWS[settings.tta]
        total = None
        for forward, inverse in views:
            view = forward(x).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            probs = inverse(torch.from_numpy(self._class_maps(list(view))))
            total = probs if total is None else total + probs
        return (total / len(views)).numpy()


@register_family
class UltralyticsFamily(ModelFamily):
    """YOLO-seg models, trained by ultralytics offline."""

    name: ClassVar[str] = "ultralytics"
    calibrated: ClassVar[bool] = False
    supports_distributed: ClassVar[bool] = False  # ultralytics runs its own DDP; compkit trains it on one device

    @classmethod
    def claims(cls, arch: str) -> bool:
        return "yolo" in arch.lower()

    def check(self, recipe: Recipe, num_classes: int, console: Console) -> None:
        def refuse(setting: str, why: str) -> None:
            raise CompkitError(setting, f"the ultralytics family cannot honour it: {why}")

        def substitute(setting: str, instead: str) -> None:
            warn(setting, f"ultralytics uses {instead} instead", console)

        model, optim, sched, train = recipe.model, recipe.optim, recipe.sched, recipe.train
        if model.encoder not in ("none", defaults("model")["encoder"]):
            refuse(
                "model.encoder", f"ultralytics models have no separate encoder (set it to none, not {model.encoder!r})"
            )
        if model.params:
            arguments = sorted(model.params)
            refuse(
                "model.params",
                f"architecture arguments {arguments} are smp's; ultralytics reads them from the model yaml",
            )
        if model.aux is not None:
            refuse("model.aux", "ultralytics models have no auxiliary classification head")
        if model.in_channels != 3:
            refuse("model.in_channels", "ultralytics models take 3-channel images")
        if recipe.loss != defaults("loss"):
            refuse(
                "loss",
                "ultralytics trains with its own box, segmentation, class and DFL losses (remove the loss section)",
            )
        if optim.name not in OPTIMIZERS:
            refuse("optim.name", f"{optim.name!r} is not an ultralytics optimizer ({', '.join(OPTIMIZERS)})")
        if sched.name not in ("cosine", "none"):
            refuse(
                "sched.name",
                f"{sched.name!r}: ultralytics schedules are cosine (cos_lr) or linear decay; use cosine or none",
            )
        if train.accumulate != 1:
            nominal = train.batch_size * train.accumulate
            substitute(f"train.accumulate={train.accumulate}", f"its nominal batch size nbs={nominal}")
        if train.clip_grad != ULTRALYTICS_CLIP_GRAD:
            clip = ULTRALYTICS_CLIP_GRAD
            substitute(
                f"train.clip_grad={train.clip_grad}", f"gradient clipping at {clip} (set train.clip_grad: {clip})"
            )
        if train.amp:
            substitute("train.amp=true", "fp32 (its AMP check downloads weights; set train.amp: false)")
        if train.val_every != 1:
            substitute(f"train.val_every={train.val_every}", "validation after every epoch")
        if train.ema is not None:
            substitute(f"train.ema={train.ema}", "its own weight averaging (always on, decay 0.9999 with warm-up)")
        if train.repeats != 1:
            refuse("train.repeats", "ultralytics draws each image once per epoch (use more epochs)")
        if train.compile:
            refuse("train.compile", "ultralytics trains its own model, uncompiled")
        if recipe.data.pseudo:
            refuse("data.pseudo", "pseudo-labelled images are added by the smp family only")
        if recipe.infer.window is not None:
            refuse("infer.window", "ultralytics models predict whole images (no sliding window)")
        if recipe.data.mean is not None or recipe.data.std is not None:
            substitute("data.mean/data.std", "its own scaling of pixels to 0..1")
        create_augmentation(recipe.aug)  # an unknown transform fails now
        prepare_offline()
        build_yolo(recipe, [str(i) for i in range(num_classes)])  # an unknown or unsafe model yaml fails now
        self.pretrained(recipe)  # so do weights it cannot use

    def pretrained(self, recipe: Recipe) -> PretrainedWeights | None:
        return yolo_weights(recipe)

    @classmethod
    def weights_named(cls, reference: str) -> PretrainedWeights | None:
        return release_weights(reference)

    def check_inference(self, settings: InferenceSettings, console: Console) -> InferenceSettings:
        if settings.window is not None:
            raise CompkitError("--window", "the ultralytics family predicts whole images (no sliding window)")
        return settings

    def load(self, recipe: Recipe, classes, checkpoint: dict[str, Any], device: torch.device) -> YoloPredictor:
        yolo = build_yolo(recipe, classes, checkpoint["model"], checkpoint.get("head_source_nc"))
        return YoloPredictor(yolo, len(classes), device)

    def export_onnx(self, predictor: YoloPredictor, recipe: Recipe, path: Path, opset: int) -> dict[str, Any]:
        # ultralytics' own exporter: the raw outputs (boxes with class scores and mask coefficients; the mask
        # prototypes) that its ONNX backend decodes, so predictions go through the same NMS and mask assembly.
        import copy

        from ultralytics.engine.exporter import Exporter

        network = copy.deepcopy(predictor.yolo.model).cpu()  # the exporter fuses and freezes the model it gets
        arguments = {
            "format": "onnx",
            "mode": "export",
            "task": "segment",
            "imgsz": recipe.data.image_size,
            "batch": 1,
            "dynamic": True,
            "simplify": False,  # onnxslim would be one more package to fetch
            "opset": opset,
            "device": "cpu",
            "half": False,
            "nms": False,
            "data": None,
            "verbose": False,
        }
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".yolo-export-") as scratch:
            network.pt_path = str(Path(scratch) / "model.pt")  # ultralytics writes model.onnx beside it
            network.task = "segment"  # what a YOLO object sets on the network it loads; compkit builds its own
            try:
                with process_settings_kept(), plain_logging():
                    written = Exporter(overrides=arguments)(model=network)
            except Exception as e:  # ultralytics' exporter raises many kinds
                raise CompkitError(
                    "compkit export onnx", f"{recipe.model.arch} does not export: {first_line(e)}"
                ) from None
            os.replace(written, path)
        return {
            "input": "images: float32 (B, 3, H, W) RGB in 0..1, H and W multiples of 32 (ultralytics' preprocessing)",
            "output": "output0: boxes, class scores and mask coefficients; output1: mask prototypes (raw, before NMS)",
        }

    def load_onnx(self, recipe: Recipe, classes, path: Path, device: torch.device) -> YoloPredictor:
        prepare_offline()
        from ultralytics import YOLO

        # CPU: a CUDA session would make ultralytics fetch onnxruntime-gpu where it is not installed.
        return YoloPredictor(YOLO(str(path), task="segment"), len(classes), torch.device("cpu"))

    def train_fold(self, job: FoldJob) -> FoldOutcome:
        recipe, data, folder = job.recipe, job.data, job.run.folder
        if job.run.resume:
            raise CompkitError("--resume", "ultralytics folds train from the start (resume is an smp-family feature)")
        data_yaml = export_fold(data.dataset, data.cache, data.train_ids, data.val_ids, folder)
        prepare_offline()
        weights = job.run.start.file if job.run.start is not None else None  # located by the train stage
        started = time.time()
        yolo, head_source_nc = starting_model(recipe, weights)
        where = folder / ULTRALYTICS_SUBDIR
        job.context.console.print(
            f"fold {data.fold}: training {recipe.model.arch} with ultralytics (its files in {where})"
        )
        with process_settings_kept(), plain_logging():
            yolo.train(**train_arguments(recipe, data_yaml, folder, job.context.device, pretrained=weights is not None))
        return self._record_fold(job, head_source_nc, started)

    def _record_fold(self, job: FoldJob, head_source_nc: int | None, started: float) -> FoldOutcome:
        """compkit's results.csv, plots and best.pt from what ultralytics left, with the leaderboard dice."""
        from ultralytics import YOLO

        recipe, data, folder, device = job.recipe, job.data, job.run.folder, job.context.device
        classes = data.dataset.classes
        best_file = folder / ULTRALYTICS_SUBDIR / "weights" / "best.pt"
        if not best_file.is_file():
            best_file = folder / ULTRALYTICS_SUBDIR / "weights" / "last.pt"
        trained = YOLO(str(best_file), task="segment")  # ultralytics reads the file it just wrote
        state = {k: v.float() for k, v in trained.model.state_dict().items()}
        predictor = YoloPredictor(build_yolo(recipe, classes, state, head_source_nc), len(classes), device)

        # The leaderboard metric on the validation fold, as for every family (also at the best threshold).
        settings = InferenceSettings("none", None, 0.5, recipe.infer.batch_size)
        threshold = recipe.infer.threshold
        positions = data.val_positions
        dice = validation_dice(predictor, data.cache, positions, threshold, settings, tuned=not self.calibrated)
        records = read_results(folder / ULTRALYTICS_SUBDIR)
        rows = _results_rows(records)
        rows[-1].update(validation_columns(classes, dice), seconds=round(time.time() - started, 2))
        writer = ResultsWriter(folder, recipe)
        writer.write(rows)
        overlays = validation_overlays(folder, predictor, data.cache, positions, threshold, settings, classes)
        writer.close({"validation": overlays})
        epochs = len(rows)
        best_epoch = epochs  # without a best.pt, ultralytics' last.pt was loaded
        if best_file.name == "best.pt":
            best_epoch = _saved_epoch(records, trained.ckpt) or epochs
        checkpoint = {
            "family": self.name,
            "classes": list(classes),
            "model": state,
            "epoch": best_epoch,
            "best_dice": dice.mean,
        }
        if head_source_nc is not None:
            checkpoint["head_source_nc"] = head_source_nc
        save_checkpoint(folder / CHECKPOINT_BEST, checkpoint)
        tuned = float(dice.tuned.mean())
        job.context.console.print(
            f"fold {data.fold}: val dice {dice.mean:.4f} at threshold {threshold}, {tuned:.4f} at the best threshold "
            "per class (yolo)"
        )
        job.observer.validated(data.fold, epochs, dice.mean)  # ultralytics validates by its own metric until here
        return FoldOutcome(dice.mean, best_epoch, epochs)


def starting_model(recipe: Recipe, weights: Path | None):
    """The YOLO a fold trains, with the layers of ``weights`` that match transferred; and the class count of the model
    those came from (the fold's class branch keeps its width), None without weights."""
    from ultralytics import YOLO

    yolo = YOLO(_model_source(recipe), task="segment")
    if weights is None:
        return yolo, None
    try:
        # ultralytics reads its own checkpoint format, with ULTRALYTICS_SAFE_LOAD=1: tensors and known
        # layers only; the layers that match (all but the class outputs when nc differs) are transferred.
        with warnings.catch_warnings():  # torch's warnings about a foreign file would precede compkit's line
            warnings.simplefilter("ignore")
            yolo = yolo.load(str(weights))
    except Exception as e:
        raise CompkitError(weights, f"cannot load weights: {first_line(e)}") from None
    return yolo, int(yolo.model.model[-1].nc)


def final_lr_fraction(recipe: Recipe) -> float:
    """ultralytics' ``lrf``: the last learning rate as a fraction of the first (1: constant)."""
    lr = recipe.optim.lr
    if recipe.sched.name == "none" or lr == 0:
        return 1.0
    return max(recipe.sched.min_lr / lr, MIN_LR_FRACTION)


def train_arguments(recipe: Recipe, data_yaml: Path, folder: Path, device: torch.device, pretrained: bool) -> dict:
    """``YOLO.train``'s arguments for the recipe: its settings, ultralytics' own augmentation off."""
    cfg, optim = recipe.train, recipe.optim
    augmentation = create_augmentation(recipe.aug)
    return dict(
        data=str(data_yaml.absolute()),
        epochs=cfg.epochs,
        imgsz=recipe.data.image_size,
        batch=cfg.batch_size,
        nbs=cfg.batch_size * cfg.accumulate,
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
        pretrained=pretrained,
        optimizer=OPTIMIZERS[optim.name],
        lr0=optim.lr,
        lrf=final_lr_fraction(recipe),
        cos_lr=recipe.sched.name == "cosine",
        warmup_epochs=recipe.sched.warmup_epochs,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
        patience=cfg.early_stop or cfg.epochs,
        **({"time": cfg.time_budget / SECONDS_PER_HOUR} if cfg.time_budget else {}),  # ultralytics' own time limit
        augmentations=list(augmentation.transforms) if augmentation is not None else [],
        **NO_BUILTIN_AUGMENTATION,
        verbose=False,
    )


def _saved_epoch(records: list[dict[str, Any]], checkpoint: dict[str, Any] | None) -> int | None:
    """The epoch an ultralytics checkpoint holds: the last ``results.csv`` row with the validation metrics it was
    saved with (ultralytics sets a finished run's ``epoch`` to -1 but keeps ``train_metrics``; an epoch that ties
    the best fitness overwrites best.pt, hence the last match). None when no row matches."""
    saved = {k: float(v) for k, v in ((checkpoint or {}).get("train_metrics") or {}).items() if k != "fitness"}
    if not saved:
        return None
    for record in reversed(records):
        row = {k.strip(): (v or "").strip() for k, v in record.items() if k}
        try:
            if all(math.isclose(float(row[k]), v, rel_tol=1e-5, abs_tol=1e-12) for k, v in saved.items()):
                return int(float(row["epoch"]))
        except (KeyError, ValueError):
            continue
    return None


def _results_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """compkit's results rows from ultralytics' ``results.csv`` records: per-epoch losses and learning rate."""
    rows: list[dict[str, Any]] = []
    for record in records:
        record = {k.strip(): (v or "").strip() for k, v in record.items() if k}
        losses = {k: float(v) for k, v in record.items() if k.startswith("train/") and v}
        val_losses = [float(v) for k, v in record.items() if k.startswith("val/") and v]
        rows.append(
            {
                "epoch": int(float(record.get("epoch") or len(rows) + 1)),
                "train_loss": round(sum(losses.values()), 6),
                **{f"train_{k.removeprefix('train/')}": round(v, 6) for k, v in losses.items()},
                "lr": float(record.get("lr/pg0") or "nan"),
                **({"val_loss": round(sum(val_losses), 6)} if val_losses else {}),
            }
        )
    return rows or [{"epoch": 1, "train_loss": float("nan"), "lr": float("nan")}]
