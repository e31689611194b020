"""segmentation-models-pytorch: any smp architecture with any smp or timm (``tu-``) encoder, trained by compkit's
own loop (losses, optimizers, schedules, albumentations, AMP, DDP, resumable), predicted with TTA in logit space
and Gaussian-blended sliding windows."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from rich.console import Console

from compkit.data import SegmentationDataset
from compkit.data.cache import SampleCache
from compkit.families.base import FoldJob, FoldOutcome, ModelFamily, register_family
from compkit.inference.onnx_engine import ONNX_INPUT, ONNX_OUTPUT, OnnxNetwork
from compkit.inference.predictor import InferenceSettings, validation_dice
from compkit.inference.tta import segmentation_logits, sliding_window_logits
from compkit.pretrained.weights import (
    PretrainedWeights,
    WeightsCache,
    encoder_normalisation,
    encoder_reference,
    encoder_weights,
)
from compkit.training.augmentation import check_crops, create_augmentation
from compkit.training.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LAST, load_checkpoint
from compkit.training.distributed import any_rank
from compkit.training.losses import create_loss
from compkit.training.models import architectures, create_model
from compkit.training.optimization import create_optimizer, create_schedule
from compkit.training.preprocess import Normaliser
from compkit.training.recipe import Recipe
from compkit.training.results import ResultsWriter, read_results, validation_columns, validation_overlays
from compkit.training.trainer import MIN_SECONDS, FoldState, Trainer
from compkit.util.errors import CompkitError, first_line

# Seeds: an epoch's from (seed, epoch), a sample's augmentation from (seed, epoch, sample), with strides that keep
# neighbouring runs, epochs and samples apart (primes, so no two triples meet by a common factor).
EPOCH_SEED_STRIDE = 1000
SAMPLE_SEED_RUN_STRIDE = 1_000_003
SAMPLE_SEED_EPOCH_STRIDE = 10_007
AUGMENTATION_SEEDS = 2**31  # albumentations takes a signed 32-bit seed
NUMPY_SEEDS = 2**32  # numpy takes an unsigned 32-bit seed
#: EMA warm-up: the decay grows as 1 - (1 + step)^-power towards train.ema, so early weights are not kept for long.
EMA_WARMUP_POWER = 0.75
#: The logit an ignored pixel gets: confident background (sigmoid ~1e-13), so it adds neither loss nor gradient.
IGNORED_PIXEL_LOGIT = -30.0
#: Probabilities are clamped this far from 0 and 1 before going back to logits (the validation loss stays finite).
PROBABILITY_FLOOR = 1e-6


def sample_seed(seed: int, epoch: int, sample: int) -> int:
    """The augmentation seed of one sample in one epoch: the same on every replay of that epoch."""
    return (seed * SAMPLE_SEED_RUN_STRIDE + epoch * SAMPLE_SEED_EPOCH_STRIDE + sample) % AUGMENTATION_SEEDS


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
            logits = sliding_window_logits(
                self.model, x, settings.window, settings.overlap, settings.tta, settings.batch_size
            )
        return torch.sigmoid(logits.float()).cpu().numpy()


class _MasksOnly(torch.nn.Module):
    """The network as exported: its segmentation logits (an auxiliary classification head's output left out)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return segmentation_logits(self.model(images))


class CachedSamples(torch.utils.data.Dataset):
    """Samples of a cache (by position), augmented with a seed that depends only on (seed, epoch, sample), so an
    interrupted epoch replays exactly."""

    def __init__(
        self, items: list[tuple[SampleCache, int]], recipe: Recipe, augment: bool, labels: list[int] | None = None
    ):
        self.repeats = recipe.train.repeats if augment else 1  # train.repeats draws of each image per epoch
        self.items = items  # (cache, position): the fold's training images, then any pseudo-labelled ones
        self.labels = labels or [-1] * len(items)  # image-level labels for an auxiliary head (-1: none)
        self.aug_items = recipe.aug if augment else []
        self.augmentation = None
        self.seed = recipe.train.seed
        self.epoch = 0
        self.normaliser = Normaliser(recipe)

    def __len__(self) -> int:
        return len(self.items) * self.repeats

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        image_index = k % len(self.items)  # draw k of train.repeats: its own seed below, so its own crop and flips
        cache, i = self.items[image_index]
        image, mask = cache.image(i), cache.mask(i)
        ignore = cache.ignore(i)
        if ignore is None:
            ignore = np.zeros_like(mask)
        if self.aug_items:
            if self.augmentation is None:  # built lazily: once per worker process
                self.augmentation = create_augmentation(self.aug_items)
            self.augmentation.set_random_seed(sample_seed(self.seed, self.epoch, k))
            # Labels and ignored pixels move together: one stacked mask.
            stacked = np.ascontiguousarray(np.concatenate([mask, ignore]).transpose(1, 2, 0))
            out = self.augmentation(image=image, mask=stacked)
            image, stacked = out["image"], out["mask"].transpose(2, 0, 1)
            mask, ignore = stacked[: len(mask)], stacked[len(mask) :]
        y = torch.from_numpy(np.ascontiguousarray(mask))
        return (
            self.normaliser.image(image),
            y,
            self.labels[image_index],
            torch.from_numpy(np.ascontiguousarray(ignore)),
        )


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
            raise CompkitError(
                dataset.samples[i].image_path, f"model.aux: {column}={value!r} is not a class in 0..{aux.classes - 1}"
            )
        labels.append(int(value))
    if all(v < 0 for v in labels):
        raise CompkitError(dataset.root, f"model.aux: no image has a meta value '{column}'")
    return labels


def aux_loss(recipe: Recipe, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    aux = recipe.model.aux
    if aux.target == "presence":
        if logits.shape[1] != masks.shape[1]:
            raise CompkitError(
                "model.aux.classes",
                f"presence needs one output per mask class ({masks.shape[1]}), not {logits.shape[1]}",
            )
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), masks.amax(dim=(2, 3)).float())
    known = labels >= 0
    if not known.any():
        return logits.sum() * 0.0
    return torch.nn.functional.cross_entropy(logits[known].float(), labels[known])


@torch.no_grad()
def aux_accuracy(
    model, cache: SampleCache, positions: list[int], labels: list[int], recipe: Recipe, device: torch.device
) -> float:
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
            present = [cache.mask(i).reshape(len(cache.classes), -1).max(axis=1) for i in chunk]
            truth = torch.from_numpy(np.stack(present)).float()
            hits += float(((logits > 0).float() == truth).float().sum())
            total += truth.numel()
        else:
            y = torch.tensor(labels[start : start + batch])
            known = y >= 0
            hits += float((logits.argmax(1)[known] == y[known]).sum())
            total += int(known.sum())
    return hits / max(total, 1)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % NUMPY_SEEDS)


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
        check_crops(recipe.aug, recipe.data.image_size)  # and a crop larger than the images
        create_loss(recipe.loss)

    def load(self, recipe: Recipe, classes, checkpoint: dict[str, Any], device: torch.device) -> SmpPredictor:
        model = create_model(recipe.model, len(classes), pretrained=False)  # the checkpoint holds every weight
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as e:  # keys or shapes of another model
            model_name = f"{recipe.model.arch}/{recipe.model.encoder}"
            raise CompkitError(
                "model", f"the checkpoint does not fit {model_name} with {len(classes)} classes: {first_line(e)}"
            ) from None
        return SmpPredictor(model.to(device).eval(), recipe, device)

    def export_onnx(self, predictor: SmpPredictor, recipe: Recipe, path: Path, opset: int) -> dict[str, Any]:
        # Traced, not scripted (UNet++ cannot be scripted, smp issue #1156) and not through torch.export: the
        # traced graph keeps height and width free, where smp's multiple-of-32 check stops torch.export's shapes.
        import warnings

        side = recipe.infer.window or recipe.data.image_size
        network = _MasksOnly(predictor.model).eval()
        example = torch.zeros((1, 3, side, side), device=next(network.parameters()).device)
        axes = {0: "batch", 2: "height", 3: "width"}
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the tracer's and the legacy exporter's warnings say nothing here
                torch.onnx.export(
                    network,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[ONNX_INPUT],
                    output_names=[ONNX_OUTPUT],
                    dynamic_axes={ONNX_INPUT: axes, ONNX_OUTPUT: axes},
                )
        except Exception as e:  # the exporter raises many kinds: unsupported operators, tracing failures
            model_name = f"{recipe.model.arch}/{recipe.model.encoder}"
            raise CompkitError("compkit export onnx", f"{model_name} does not export: {first_line(e)}") from None
        return {
            "input": f"{ONNX_INPUT}: float32 (B, 3, H, W) RGB as (pixel / 255 - mean) / std, H and W multiples of 32",
            "output": f"{ONNX_OUTPUT}: (B, C, H, W), one per class: sigmoid gives its probability",
        }

    def load_onnx(self, recipe: Recipe, classes, path: Path, device: torch.device) -> SmpPredictor:
        # TTA views, windows and the sigmoid stay torch on the CPU around the session (on the GPU where it runs).
        return SmpPredictor(OnnxNetwork(path, device), recipe, torch.device("cpu"))

    def train_fold(self, job: FoldJob) -> FoldOutcome:
        state = SmpTrainer(job, tuned=not self.calibrated).fit()
        return FoldOutcome(state.best_dice, state.best_epoch, state.epoch)


class SmpTrainer(Trainer):
    """compkit's own loop for an smp model: AMP, gradient accumulation and clipping, EMA, DDP, an auxiliary head,
    soft pseudo-labels; every epoch replays exactly from (seed, epoch), so a resumed fold matches one never stopped."""

    def __init__(self, job: FoldJob, tuned: bool = False):
        super().__init__(job.recipe, job.data.fold, job.run.folder, job.context, job.observer)
        self.job, self.data = job, job.data
        self.tuned = tuned  # also report the dice at the best threshold per class

    # setup: model, optimizer, schedule, scaler, EMA, resume
    def setup(self) -> None:
        recipe, cfg, data, device = self.recipe, self.cfg, self.data, self.device
        _seed_everything(cfg.seed)
        self.model = create_model(recipe.model, len(data.dataset.classes), cache=self.job.run.weights_cache).to(device)
        self.channels_last = device.type == "cuda" and cfg.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = create_loss(recipe.loss).to(device)
        self.optimizer = create_optimizer(self.model, recipe.optim)
        items = self._training_items()
        per_rank = math.ceil(len(items) * cfg.repeats / self.dist.world_size)
        self.steps_per_epoch = max(1, math.ceil(math.ceil(per_rank / cfg.batch_size) / cfg.accumulate))
        self.schedule = create_schedule(self.optimizer, recipe.sched, self.steps_per_epoch, cfg.epochs)
        self.use_amp = cfg.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.use_amp)
        # With train.ema, the averaged weights are what validation, best.pt and prediction see; the trained ones resume.
        self.ema = None
        if cfg.ema is not None:
            from timm.utils.model_ema import ModelEmaV3  # here: timm.utils imports wandb when it is installed (0.35 s)

            self.ema = ModelEmaV3(self.model, decay=cfg.ema, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
        self.evaluated = self.ema.module if self.ema is not None else self.model
        self.predictor = SmpPredictor(self.evaluated, recipe, device)
        infer = recipe.infer
        self.val_settings = InferenceSettings("none", infer.window, infer.overlap, infer.batch_size)
        if self.job.run.resume and (self.folder / CHECKPOINT_LAST).is_file():
            self._resume()
        if self.dist.is_main:
            self.writer = ResultsWriter(self.folder, recipe, rows_already_logged=len(self.state.rows))
        self.train_model: torch.nn.Module = self.model
        if self.dist.enabled:
            device_ids = [device.index] if device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        if cfg.compile:
            backend = "inductor" if cfg.compile is True else cfg.compile
            try:
                self.train_model = torch.compile(self.train_model, backend=backend)
            except Exception as e:  # an unknown backend; compiling itself happens at the first step
                raise CompkitError(
                    "train.compile", f"torch.compile(backend={backend!r}) failed: {first_line(e)}"
                ) from None
        train_positions = data.train_positions
        labels = aux_labels(recipe, data.dataset, train_positions) + [-1] * (len(items) - len(train_positions))
        self.val_labels = aux_labels(recipe, data.dataset, data.val_positions)
        self.samples = CachedSamples(items, recipe, augment=True, labels=labels)

    def _training_items(self) -> list[tuple[SampleCache, int]]:
        """(cache, position) of the fold's training images; pseudo-labelled ones train every fold, validate none."""
        data = self.data
        items = [(data.cache, i) for i in data.train_positions]
        if data.pseudo is not None:
            val_ids = set(data.val_ids)
            items += [(data.pseudo, j) for j, image_id in enumerate(data.pseudo.image_ids) if image_id not in val_ids]
        return items

    def _resume(self) -> None:
        ckpt = load_checkpoint(self.folder / CHECKPOINT_LAST)
        self.model.load_state_dict(ckpt["trained_model"] if self.ema is not None else ckpt["model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state = FoldState(ckpt["epoch"], ckpt["best_dice"], ckpt["best_epoch"], ckpt["stale_epochs"])
        self.state.rows = read_results(self.folder, self.state.epoch)
        if self.dist.is_main:
            state = self.state
            self.console.print(f"resuming fold {self.fold} after epoch {state.epoch} (best dice {state.best_dice:.4f})")

    def checkpoint(self) -> dict[str, Any]:
        state = self.state
        return {
            "family": SmpFamily.name,
            "classes": list(self.data.dataset.classes),
            "model": self.evaluated.state_dict(),
            **({"trained_model": self.model.state_dict()} if self.ema is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": state.epoch,
            "best_dice": state.best_dice,
            "best_epoch": state.best_epoch,
            "stale_epochs": state.stale_epochs,
        }

    # train_epoch: the optimizer steps of one epoch
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        started = time.time()
        loader = self._epoch_loader(epoch)
        self.train_model.train()
        sums: dict[str, float] = {}  # per-image sums of the loss and its terms
        seen = 0
        self.optimizer.zero_grad(set_to_none=True)
        batches = len(loader)
        for step, batch in enumerate(loader, start=1):
            if step > 1 and any_rank(self.dist, self.clock.left() <= 0):  # an epoch longer than the time left
                break
            seen += self._train_step(epoch, step, batches, batch, sums)
            rate = seen / max(time.time() - started, MIN_SECONDS)
            loss, lr = sums["loss"] / seen, self.schedule.lr
            stats = f"epoch {epoch}/{self.cfg.epochs} loss {loss:.4f} lr {lr:.2e} {rate:.1f} img/s"
            self.progress.update(self.task, stats=stats)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": round(sums["loss"] / max(seen, 1), 6)}
        row.update({f"train_{k}": round(v / max(seen, 1), 6) for k, v in sums.items() if k != "loss"})
        row["lr"] = self.schedule.lr
        row["train_images_per_s"] = round(seen / max(time.time() - started, MIN_SECONDS), 2)
        return row

    def _epoch_loader(self, epoch: int) -> torch.utils.data.DataLoader:
        """This rank's share of the epoch's shuffled samples."""
        cfg = self.cfg
        # Everything random in an epoch derives from (seed, epoch): a resumed run replays it exactly.
        epoch_seed = cfg.seed * EPOCH_SEED_STRIDE + epoch
        _seed_everything(epoch_seed)
        order = torch.randperm(len(self.samples), generator=torch.Generator().manual_seed(epoch_seed)).tolist()
        self.samples.epoch = epoch
        return torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.samples, order[self.dist.rank :: self.dist.world_size]),
            batch_size=cfg.batch_size,
            shuffle=False,
            num_workers=cfg.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _train_step(self, epoch: int, step: int, batches: int, batch, sums: dict[str, float]) -> int:
        """Forward and backward one batch (an optimizer step every ``train.accumulate``); adds to ``sums``; the
        number of images."""
        x, y, label, ignore = batch
        device, aux = self.device, self.recipe.model.aux
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if self.channels_last:
            x = x.to(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=self.use_amp):
            output = self.train_model(x)
        logits = segmentation_logits(output)
        if ignore.any():  # soft pseudo-labels: uncertain pixels become confident background, without gradient
            ignored = ignore.to(device, non_blocking=True).bool()
            logits = torch.where(ignored, torch.full_like(logits, IGNORED_PIXEL_LOGIT), logits)
            y = torch.where(ignored, torch.zeros_like(y), y)
        loss = self.criterion(logits, y)
        if aux is not None:
            extra = aux_loss(self.recipe, output[1], y, label.to(device))
            loss = loss + aux.weight * extra
            sums["aux"] = sums.get("aux", 0.0) + float(extra.detach()) * x.shape[0]
        if any_rank(self.dist, not torch.isfinite(loss).item()):
            raise CompkitError(
                self.folder,
                f"loss became NaN/inf at epoch {epoch}, step {step}; stopped, {CHECKPOINT_LAST} holds epoch "
                f"{self.state.epoch} (try a lower optim.lr, train.clip_grad, or train.amp=false)",
            )
        self.scaler.scale(loss / self.cfg.accumulate).backward()
        if step % self.cfg.accumulate == 0 or step == batches or self.clock.left() <= 0:
            self._optimizer_step()
        n = x.shape[0]
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n
        for name, value in self.criterion.terms.items():
            sums[name] = sums.get(name, 0.0) + float(value) * n
        return n

    def _optimizer_step(self) -> None:
        if self.cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.after_step()
        if self.ema is not None:
            self.ema.update(self.model, step=self.schedule.step_count)
        self.progress.advance(self.task)

    # validate: the leaderboard dice of the evaluated weights, on rank 0
    def validate(self, epoch: int, row: dict[str, Any]) -> float | None:
        cfg, data, recipe = self.cfg, self.data, self.recipe
        validate_now = epoch % cfg.val_every == 0 or epoch == cfg.epochs
        here = validate_now and self.dist.is_main
        dice = None
        if here:
            threshold = recipe.infer.threshold
            dice = validation_dice(
                self.predictor,
                data.cache,
                data.val_positions,
                threshold,
                self.val_settings,
                tuned=self.tuned,
                loss=self._validation_loss,
            )
        row.update(validation_columns(data.dataset.classes, dice))
        if recipe.model.aux is not None:
            accuracy = float("nan")
            if here:
                positions, labels = data.val_positions, self.val_labels
                accuracy = aux_accuracy(self.model, data.cache, positions, labels, recipe, self.device)
            row["val_aux_acc"] = round(accuracy, 6) if validate_now else ""
        if dice is None:
            return None
        self.schedule.after_validation(dice.mean)
        return dice.mean

    def _validation_loss(self, probs: np.ndarray, truth: np.ndarray) -> float:
        """The training criterion on a validation image (its probabilities back as logits)."""
        p = torch.from_numpy(probs).clamp(PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)[None]
        target = torch.from_numpy(truth.astype(np.float32))[None].to(self.device)
        return float(self.criterion(torch.logit(p).to(self.device), target))

    def finish(self) -> None:
        if self.writer is not None:
            data, threshold = self.data, self.recipe.infer.threshold
            best = self.folder / CHECKPOINT_BEST  # the weights the fold keeps, not the last epoch's
            predictor = (
                SmpFamily().load(self.recipe, data.dataset.classes, load_checkpoint(best), self.device)
                if best.is_file()
                else self.predictor
            )
            overlays = validation_overlays(
                self.folder,
                predictor,
                data.cache,
                data.val_positions,
                threshold,
                self.val_settings,
                data.dataset.classes,
            )
            self.writer.close({"validation": overlays})
