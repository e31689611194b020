"""segmentation-models-pytorch: any smp architecture with any smp or timm (``tu-``) encoder, trained by compkit's
own loop (losses, optimizers, schedules, albumentations, AMP, DDP, resumable), predicted with TTA in logit space
and Gaussian-blended sliding windows."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from compkit.training.augmentation import create_augmentation
from compkit.training.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LAST, load_checkpoint, save_checkpoint
from compkit.data import SegmentationDataset
from compkit.data.cache import SampleCache
from compkit.training.distributed import any_rank, barrier, broadcast_flag
from compkit.util.errors import CompkitError, first_line
from compkit.families.base import FoldJob, FoldOutcome, ModelFamily, register_family
from compkit.inference.tta import segmentation_logits, sliding_window_logits
from compkit.util.locks import deferred_interrupts
from compkit.training.losses import create_loss
from compkit.training.models import architectures, create_model
from compkit.training.optimization import create_optimizer, create_schedule
from compkit.inference.predictor import InferenceSettings, validation_dice
from compkit.training.preprocess import Normaliser
from compkit.training.recipe import Recipe
from compkit.training.results import ResultsWriter, read_results, validation_columns, validation_overlays
from compkit.pretrained.weights import PretrainedWeights, WeightsCache, encoder_normalisation, encoder_reference, encoder_weights


class SmpPredictor:
    """A trained smp model: normalise, TTA views in one batch, sliding windows, sigmoid."""

    def __init__(self, model: torch.nn.Module, recipe: Recipe, device: torch.device):
        self.model, self.device = model, device
        self.normaliser = Normaliser(recipe)
        self.amp = recipe.train.amp and device.type == "cuda"

    @torch.no_grad()
    def predict(self, images: np.ndarray, settings: InferenceSettings) -> np.ndarray:
        self.model.eval()
        x = self.normaliser.batch(images).to(self.device)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = sliding_window_logits(self.model, x, settings.window, settings.overlap, settings.tta, settings.batch_size)
        return torch.sigmoid(logits.float()).cpu().numpy()


class CachedSamples(torch.utils.data.Dataset):
    """Samples of a cache (by position), augmented with a seed that depends only on (seed, epoch, sample), so an
    interrupted epoch replays exactly."""

    def __init__(self, items: list[tuple[SampleCache, int]], recipe: Recipe, augment: bool, labels: list[int] | None = None):
        self.items = items  # (cache, position): the fold's training images, then any pseudo-labelled ones
        self.labels = labels or [-1] * len(items)  # image-level labels for an auxiliary head (-1: none)
        self.aug_items = recipe.aug if augment else []
        self.augmentation = None
        self.seed = recipe.train.seed
        self.epoch = 0
        self.normaliser = Normaliser(recipe)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        cache, i = self.items[k]
        image, mask = cache.image(i), cache.mask(i)
        ignore = cache.ignore(i)
        if ignore is None:
            ignore = np.zeros_like(mask)
        if self.aug_items:
            if self.augmentation is None:  # built lazily: once per worker process
                self.augmentation = create_augmentation(self.aug_items)
            self.augmentation.set_random_seed((self.seed * 1_000_003 + self.epoch * 10_007 + k) % 2**31)
            # Labels and ignored pixels move together: one stacked mask.
            stacked = np.ascontiguousarray(np.concatenate([mask, ignore]).transpose(1, 2, 0))
            out = self.augmentation(image=image, mask=stacked)
            image, stacked = out["image"], out["mask"].transpose(2, 0, 1)
            mask, ignore = stacked[: len(mask)], stacked[len(mask) :]
        y = torch.from_numpy(np.ascontiguousarray(mask))
        return self.normaliser.image(image), y, self.labels[k], torch.from_numpy(np.ascontiguousarray(ignore))


@dataclass
class FoldState:
    epoch: int = 0  # epochs completed
    best_dice: float = -1.0
    best_epoch: int = 0
    stale_epochs: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def aux_labels(recipe: Recipe, dataset: SegmentationDataset, positions: list[int]) -> list[int]:
    """Image-level labels of ``csv:COLUMN`` auxiliary targets (-1 where missing); presence needs none."""
    aux = recipe.model.aux
    if aux is None or aux.target == "presence":
        return [-1] * len(positions)
    column = aux.target.removeprefix("csv:")
    labels = []
    for i in positions:
        value = dataset.samples[i].meta.get(column)
        if value is None:
            labels.append(-1)
            continue
        if not isinstance(value, (int, float)) or value != int(value) or not 0 <= value < aux.classes:
            raise CompkitError(dataset.samples[i].image_path, f"model.aux: {column}={value!r} is not a class in 0..{aux.classes - 1}")
        labels.append(int(value))
    if all(v < 0 for v in labels):
        raise CompkitError(dataset.root, f"model.aux: no image has a meta value '{column}'")
    return labels


def aux_loss(recipe: Recipe, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    aux = recipe.model.aux
    if aux.target == "presence":
        if logits.shape[1] != masks.shape[1]:
            raise CompkitError("model.aux.classes", f"presence needs one output per mask class ({masks.shape[1]}), not {logits.shape[1]}")
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), masks.amax(dim=(2, 3)).float())
    known = labels >= 0
    if not known.any():
        return logits.sum() * 0.0
    return torch.nn.functional.cross_entropy(logits[known].float(), labels[known])


@torch.no_grad()
def aux_accuracy(model, cache: SampleCache, positions: list[int], labels: list[int], recipe: Recipe, device: torch.device) -> float:
    """Presence: per-class accuracy of present/absent; csv: accuracy of the image label."""
    model.eval()
    normaliser = Normaliser(recipe)
    hits, total = 0.0, 0
    batch = recipe.infer.batch_size
    for start in range(0, len(positions), batch):
        chunk = positions[start : start + batch]
        x = normaliser.batch(np.stack([cache.image(i) for i in chunk])).to(device)
        logits = model(x)[1].float().cpu()
        if recipe.model.aux.target == "presence":
            truth = torch.from_numpy(np.stack([cache.mask(i).reshape(len(cache.classes), -1).max(axis=1) for i in chunk])).float()
            hits += float(((logits > 0).float() == truth).float().sum())
            total += truth.numel()
        else:
            y = torch.tensor(labels[start : start + batch])
            known = y >= 0
            hits += float((logits.argmax(1)[known] == y[known]).sum())
            total += int(known.sum())
    return hits / max(total, 1)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _budget_clock(budget: float | None, started: float):
    """Seconds left of a fold's time budget (infinite without one)."""
    return (lambda: math.inf) if budget is None else (lambda: budget - (time.time() - started))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


@register_family
class SmpFamily(ModelFamily):
    """segmentation-models-pytorch encoders and decoders, trained by compkit's own loop."""

    name: ClassVar[str] = "smp"

    @classmethod
    def claims(cls, arch: str) -> bool:
        return arch.lower() in {a.lower() for a in architectures()}

    def pretrained(self, recipe: Recipe) -> PretrainedWeights | None:
        return encoder_weights(recipe.model)

    @classmethod
    def weights_named(cls, reference: str) -> PretrainedWeights | None:
        return encoder_reference(reference)

    def normalisation(self, recipe: Recipe, cache: WeightsCache) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return encoder_normalisation(recipe.model, cache)

    def check(self, recipe: Recipe, num_classes: int, console: Console) -> None:
        with torch.device("meta"):  # an incompatible arch/encoder pair fails now, before any real work
            create_model(recipe.model, num_classes, pretrained=False)
        weights = encoder_weights(recipe.model)
        if weights is not None and weights.path is not None:  # a local weights file that does not load fails now too
            create_model(recipe.model, num_classes)
        create_augmentation(recipe.aug)  # so does an unknown transform
        create_loss(recipe.loss)

    def load(self, recipe: Recipe, classes, checkpoint: dict[str, Any], device: torch.device) -> SmpPredictor:
        model = create_model(recipe.model, len(classes), pretrained=False)  # the checkpoint holds every weight
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as e:  # keys or shapes of another model
            raise CompkitError("model", f"the checkpoint does not fit {recipe.model.arch}/{recipe.model.encoder} with {len(classes)} classes: {first_line(e)}") from None
        return SmpPredictor(model.to(device).eval(), recipe, device)

    def train_fold(self, job: FoldJob) -> FoldOutcome:
        recipe, dataset, cache, dist, device, console = job.recipe, job.dataset, job.cache, job.dist, job.device, job.console
        folder, cfg = job.folder, recipe.train
        train_pos, val_pos = job.train_positions, job.val_positions

        _seed_everything(cfg.seed)
        model = create_model(recipe.model, len(dataset.classes), cache=job.weights_cache).to(device)
        if device.type == "cuda" and cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        criterion = create_loss(recipe.loss).to(device)
        optimizer = create_optimizer(model, recipe.optim)
        items = [(cache, i) for i in train_pos]
        if job.pseudo is not None:  # pseudo-labelled images train every fold, never validate one
            val_ids = set(job.val_ids)
            items += [(job.pseudo, j) for j, image_id in enumerate(job.pseudo.image_ids) if image_id not in val_ids]
        per_rank = math.ceil(len(items) / dist.world_size)
        steps_per_epoch = max(1, math.ceil(math.ceil(per_rank / cfg.batch_size) / cfg.accumulate))
        schedule = create_schedule(optimizer, recipe.sched, steps_per_epoch, cfg.epochs)
        use_amp = cfg.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
        state = FoldState()
        # With train.ema, the averaged weights are what validation, best.pt and prediction see; the trained ones resume.
        ema = None
        if cfg.ema is not None:
            from timm.utils.model_ema import ModelEmaV3  # here: timm.utils imports wandb when it is installed (0.35 s)

            ema = ModelEmaV3(model, decay=cfg.ema, use_warmup=True, warmup_power=0.75)
        evaluated = ema.module if ema is not None else model  # the weights validation, best.pt and prediction use
        predictor = SmpPredictor(evaluated, recipe, device)
        val_settings = InferenceSettings("none", recipe.infer.window, recipe.infer.overlap, recipe.infer.batch_size)

        def checkpoint() -> dict[str, Any]:
            return {
                "family": self.name,
                "classes": list(dataset.classes),
                "model": evaluated.state_dict(),
                **({"trained_model": model.state_dict()} if ema is not None else {}),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": state.epoch,
                "best_dice": state.best_dice,
                "best_epoch": state.best_epoch,
                "stale_epochs": state.stale_epochs,
            }

        if job.resume and (folder / CHECKPOINT_LAST).is_file():
            ckpt = load_checkpoint(folder / CHECKPOINT_LAST)
            model.load_state_dict(ckpt["trained_model"] if ema is not None else ckpt["model"])
            if ema is not None:
                ema.module.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            schedule.load_state_dict(ckpt["schedule"])
            scaler.load_state_dict(ckpt["scaler"])
            state = FoldState(ckpt["epoch"], ckpt["best_dice"], ckpt["best_epoch"], ckpt["stale_epochs"])
            state.rows = read_results(folder, state.epoch)
            if dist.is_main:
                console.print(f"resuming fold {job.fold} after epoch {state.epoch} (best dice {state.best_dice:.4f})")

        writer = ResultsWriter(folder, recipe, rows_already_logged=len(state.rows)) if dist.is_main else None

        def validation_loss(probs: np.ndarray, truth: np.ndarray) -> float:
            """The training criterion on a validation image (its probabilities back as logits)."""
            p = torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6)[None]
            return float(criterion(torch.logit(p).to(device), torch.from_numpy(truth.astype(np.float32))[None].to(device)))

        train_model: torch.nn.Module = model
        if dist.enabled:
            train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

        labels = aux_labels(recipe, dataset, train_pos) + [-1] * (len(items) - len(train_pos))
        val_labels = aux_labels(recipe, dataset, val_pos)
        samples = CachedSamples(items, recipe, augment=True, labels=labels)
        stop = state.epoch >= cfg.epochs
        fold_started = time.time()
        budget_left = _budget_clock(cfg.time_budget, fold_started)
        with _progress(console) as progress:
            task = progress.add_task(f"fold {job.fold}", total=steps_per_epoch * cfg.epochs, completed=steps_per_epoch * state.epoch, stats="", visible=dist.is_main)
            while not stop:
                epoch = state.epoch + 1
                started = time.time()
                # Everything random in an epoch derives from (seed, epoch): a resumed run replays it exactly.
                _seed_everything(cfg.seed * 1000 + epoch)
                order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()
                order = order[dist.rank :: dist.world_size]
                samples.epoch = epoch
                loader = torch.utils.data.DataLoader(
                    torch.utils.data.Subset(samples, order),
                    batch_size=cfg.batch_size,
                    shuffle=False,
                    num_workers=cfg.workers,
                    pin_memory=device.type == "cuda",
                    persistent_workers=False,
                )
                train_model.train()
                sums: dict[str, float] = {}
                seen = 0
                optimizer.zero_grad(set_to_none=True)
                batches = len(loader)
                for step, (x, y, label, ignore) in enumerate(loader, start=1):
                    if step > 1 and any_rank(dist, budget_left() <= 0):  # an epoch longer than the time left: stop inside it
                        break
                    x = x.to(device, non_blocking=True)
                    y = y.to(device, non_blocking=True)
                    if device.type == "cuda" and cfg.channels_last:
                        x = x.to(memory_format=torch.channels_last)
                    with torch.autocast(device.type, enabled=use_amp):
                        output = train_model(x)
                    logits = segmentation_logits(output)
                    if ignore.any():  # soft pseudo-labels: uncertain pixels become confident background, without gradient
                        ignored = ignore.to(device, non_blocking=True).bool()
                        logits = torch.where(ignored, torch.full_like(logits, -30.0), logits)
                        y = torch.where(ignored, torch.zeros_like(y), y)
                    loss = criterion(logits, y)
                    if recipe.model.aux is not None:
                        extra = aux_loss(recipe, output[1], y, label.to(device))
                        loss = loss + recipe.model.aux.weight * extra
                        sums["aux"] = sums.get("aux", 0.0) + float(extra.detach()) * x.shape[0]
                    if any_rank(dist, not torch.isfinite(loss).item()):
                        raise CompkitError(
                            folder,
                            f"loss became NaN/inf at epoch {epoch}, step {step}; stopped, {CHECKPOINT_LAST} holds epoch {state.epoch} "
                            "(try a lower optim.lr, train.clip_grad, or train.amp=false)",
                        )
                    scaler.scale(loss / cfg.accumulate).backward()
                    if step % cfg.accumulate == 0 or step == batches or budget_left() <= 0:
                        if cfg.clip_grad:
                            scaler.unscale_(optimizer)
                            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                        scaler.step(optimizer)
                        scaler.update()
                        optimizer.zero_grad(set_to_none=True)
                        schedule.after_step()
                        if ema is not None:
                            ema.update(model, step=schedule.step_count)
                        progress.advance(task)
                    n = x.shape[0]
                    seen += n
                    sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n
                    for name, value in criterion.terms.items():
                        sums[name] = sums.get(name, 0.0) + float(value) * n
                    elapsed = time.time() - started
                    progress.update(task, stats=f"epoch {epoch}/{cfg.epochs} loss {sums['loss'] / seen:.4f} lr {schedule.lr:.2e} {seen / max(elapsed, 1e-9):.1f} img/s")

                row: dict[str, Any] = {"epoch": epoch, "train_loss": round(sums["loss"] / max(seen, 1), 6)}
                row.update({f"train_{k}": round(v / max(seen, 1), 6) for k, v in sums.items() if k != "loss"})
                row["lr"] = schedule.lr
                row["train_images_per_s"] = round(seen / max(time.time() - started, 1e-9), 2)
                validate_now = epoch % cfg.val_every == 0 or epoch == cfg.epochs
                dice = None
                if validate_now and dist.is_main:
                    dice = validation_dice(predictor, cache, val_pos, recipe.infer.threshold, val_settings, tuned=not self.calibrated, loss=validation_loss)
                row.update(validation_columns(dataset.classes, dice if validate_now else None))
                if recipe.model.aux is not None:
                    accuracy = aux_accuracy(model, cache, val_pos, val_labels, recipe, device) if validate_now and dist.is_main else float("nan")
                    row["val_aux_acc"] = round(accuracy, 6) if validate_now else ""
                row["seconds"] = round(time.time() - started, 2)
                state.epoch = epoch
                state.rows.append(row)
                improved = False
                if validate_now and dist.is_main:
                    schedule.after_validation(dice.mean)
                    if dice.mean > state.best_dice:
                        state.best_dice, state.best_epoch, state.stale_epochs, improved = dice.mean, epoch, 0, True
                    else:
                        state.stale_epochs += 1
                if dist.is_main:
                    # One unit for a signal (it waits): results.csv, best.pt and last.pt of the same epoch. results.csv
                    # first: should the process die between them anyway, --resume keeps the rows up to last.pt's
                    # epoch and replays this one; the other way round its row would be lost.
                    with deferred_interrupts():
                        writer.write(state.rows)
                        payload = checkpoint()
                        if improved:
                            save_checkpoint(folder / CHECKPOINT_BEST, payload)
                        save_checkpoint(folder / CHECKPOINT_LAST, payload)
                    if validate_now:
                        progress.console.print(
                            f"fold {job.fold} epoch {epoch}: loss {row['train_loss']:.4f}  val dice {dice.mean:.4f}"
                            + ("  [green]best[/green]" if improved else "")
                        )
                early = cfg.early_stop is not None and state.stale_epochs >= cfg.early_stop
                # Another epoch (as long as the slowest so far) must fit in the fold's time budget.
                out_of_time = epoch < cfg.epochs and budget_left() < max((float(r["seconds"]) for r in state.rows[-5:] if r.get("seconds") not in ("", None)), default=0.0)
                stop = broadcast_flag(dist, epoch >= cfg.epochs or early or out_of_time)
                if early and dist.is_main:
                    progress.console.print(f"early stop: no improvement for {cfg.early_stop} validations")
                elif out_of_time and dist.is_main:
                    progress.console.print(
                        f"time budget: fold {job.fold} stops after epoch {epoch} of {cfg.epochs} ({time.time() - fold_started:.0f} s of "
                        f"train.time_budget {cfg.time_budget:.0f} s); {CHECKPOINT_BEST} holds epoch {state.best_epoch} (val dice {state.best_dice:.4f})"
                    )
                barrier(dist)
        if writer is not None:
            writer.close({"validation": validation_overlays(folder, predictor, cache, val_pos, recipe.infer.threshold, val_settings)})
        return FoldOutcome(state.best_dice, state.best_epoch, state.epoch)

