"""``compkit train``: one recipe, one or all folds -> ``runs/<name>/fold<k>/``.

Run folder: ``recipe.yaml`` (fully resolved), ``results.csv`` (one row per epoch), ``results.png`` (curves),
``best.pt`` / ``last.pt`` (model, optimizer, schedule, scaler, epoch; loaded with ``weights_only=True``) and
``oof/`` (out-of-fold probabilities of the fold's validation images, see :mod:`compkit.store`).
"""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from compkit.augment import create_augmentation
from compkit.data import SegmentationDataset, open_dataset
from compkit.data.cache import SampleCache
from compkit.distributed import DistInfo, any_rank, barrier, broadcast_flag, cleanup, init_distributed, launched_by_torchrun
from compkit.errors import CompkitError
from compkit.fileio import atomic_write
from compkit.losses import create_loss
from compkit.metrics import DiceMeter
from compkit.models import create_model
from compkit.optimization import create_optimizer, create_schedule
from compkit.recipe import Recipe, load_recipe
from compkit.split import load_splits
from compkit.yolo import is_ultralytics_arch, train_yolo_fold
from compkit.inference import segmentation_logits
from compkit.predict import cache_for, normalise, predict_cache, write_store

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if launched_by_torchrun() else 0)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CompkitError("train.device", f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CompkitError("train.device", "CUDA was asked for but is not available on this machine")
    return device


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


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
        self.mean = np.array(recipe.data.mean, np.float32) * 255.0
        self.std = np.array(recipe.data.std, np.float32) * 255.0

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
        x = torch.from_numpy(((image.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1).copy())
        y = torch.from_numpy(np.ascontiguousarray(mask))
        return x, y, self.labels[k], torch.from_numpy(np.ascontiguousarray(ignore))


@dataclass
class FoldState:
    epoch: int = 0  # epochs completed
    best_dice: float = -1.0
    best_epoch: int = 0
    stale_epochs: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def _checkpoint(model, optimizer, schedule, scaler, state: FoldState) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": state.epoch,
        "best_dice": state.best_dice,
        "best_epoch": state.best_epoch,
        "stale_epochs": state.stale_epochs,
    }


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CompkitError(path, "checkpoint not found") from None
    except Exception as e:  # truncated or not a compkit checkpoint
        raise CompkitError(path, f"unreadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _write_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with atomic_write(folder / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)


def _read_results(folder: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    path = folder / "results.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if int(row["epoch"]) <= up_to_epoch]


def plot_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    """results.png: training loss, validation mean dice and learning rate per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [float(r["train_loss"]) for r in rows], marker="o", ms=3)
    axes[0].set_title("training loss")
    val = [(int(r["epoch"]), float(r["val_dice_mean"])) for r in rows if r.get("val_dice_mean") not in ("", None)]
    if val:
        axes[1].plot(*zip(*val, strict=True), marker="o", ms=3, color="tab:green")
    axes[1].set_title("validation mean dice")
    axes[2].plot(epochs, [float(r["lr"]) for r in rows], color="tab:orange")
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(folder.as_posix())
    fig.tight_layout()
    with atomic_write(folder / "results.png", "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


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
    hits, total = 0.0, 0
    batch = recipe.infer.batch_size
    for start in range(0, len(positions), batch):
        chunk = positions[start : start + batch]
        x = normalise(np.stack([cache.image(i) for i in chunk]), recipe).to(device)
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


def validate(model, cache: SampleCache, positions: list[int], recipe: Recipe, device: torch.device) -> np.ndarray:
    """Per-class leaderboard dice on the validation images at the training size (no TTA: it is for model choice)."""
    meter = DiceMeter(cache.classes)
    for i, probs in predict_cache(model, cache, positions, recipe, device, window=recipe.infer.window, overlap=recipe.infer.overlap):
        meter.update(probs > recipe.infer.threshold, cache.mask(i))
    return meter.per_class()


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


def train_fold(
    recipe: Recipe,
    dataset: SegmentationDataset,
    cache: SampleCache,
    fold: int,
    folds: list[dict[str, list[str]]],
    run_dir: Path,
    resume: bool,
    dist: DistInfo,
    device: torch.device,
    console: Console,
    test_data: tuple[SegmentationDataset, SampleCache] | None = None,
    pseudo: SampleCache | None = None,
) -> dict[str, Any]:
    folder = run_dir / f"fold{fold}"
    position = cache.position
    missing = [i for i in folds[fold]["train"] + folds[fold]["val"] if i not in position]
    if missing:
        raise CompkitError(dataset.root / "splits.json", f"fold {fold} names {len(missing)} images the dataset lacks (first: {missing[0]}); rerun `compkit split --force`")
    train_pos = [position[i] for i in folds[fold]["train"]]
    val_pos = [position[i] for i in folds[fold]["val"]]
    cfg = recipe.train

    _seed_everything(cfg.seed)
    model = create_model(recipe.model, len(dataset.classes)).to(device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = create_loss(recipe.loss).to(device)
    optimizer = create_optimizer(model, recipe.optim)
    items = [(cache, i) for i in train_pos]
    if pseudo is not None:  # pseudo-labelled images train every fold, never validate one
        val_ids = set(folds[fold]["val"])
        items += [(pseudo, j) for j, image_id in enumerate(pseudo.image_ids) if image_id not in val_ids]
    per_rank = math.ceil(len(items) / dist.world_size)
    steps_per_epoch = max(1, math.ceil(math.ceil(per_rank / cfg.batch_size) / cfg.accumulate))
    schedule = create_schedule(optimizer, recipe.sched, steps_per_epoch, cfg.epochs)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    state = FoldState()

    if resume and (folder / CHECKPOINT_LAST).is_file():
        ckpt = load_checkpoint(folder / CHECKPOINT_LAST)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        scaler.load_state_dict(ckpt["scaler"])
        state = FoldState(ckpt["epoch"], ckpt["best_dice"], ckpt["best_epoch"], ckpt["stale_epochs"])
        state.rows = _read_results(folder, state.epoch)
        if dist.is_main:
            console.print(f"resuming fold {fold} after epoch {state.epoch} (best dice {state.best_dice:.4f})")
    elif dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / "recipe.yaml", "w", encoding="utf-8") as f:
            f.write(recipe.to_yaml())

    train_model: torch.nn.Module = model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    labels = aux_labels(recipe, dataset, train_pos) + [-1] * (len(items) - len(train_pos))
    val_labels = aux_labels(recipe, dataset, val_pos)
    samples = CachedSamples(items, recipe, augment=True, labels=labels)
    stop = state.epoch >= cfg.epochs
    with _progress(console) as progress:
        task = progress.add_task(f"fold {fold}", total=steps_per_epoch * cfg.epochs, completed=steps_per_epoch * state.epoch, stats="", visible=dist.is_main)
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
                if step % cfg.accumulate == 0 or step == batches:
                    if cfg.clip_grad:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    schedule.after_step()
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
            validate_now = epoch % cfg.val_every == 0 or epoch == cfg.epochs
            dice = np.full(len(dataset.classes), np.nan)
            if validate_now and dist.is_main:
                dice = validate(model, cache, val_pos, recipe, device)
            mean_dice = float(np.mean(dice)) if validate_now else float("nan")
            row.update({f"val_dice_{c}": (round(float(d), 6) if validate_now else "") for c, d in zip(dataset.classes, dice, strict=True)})
            row["val_dice_mean"] = round(mean_dice, 6) if validate_now else ""
            if recipe.model.aux is not None:
                accuracy = aux_accuracy(model, cache, val_pos, val_labels, recipe, device) if validate_now and dist.is_main else float("nan")
                row["val_aux_acc"] = round(accuracy, 6) if validate_now else ""
            row["seconds"] = round(time.time() - started, 2)
            state.epoch = epoch
            state.rows.append(row)
            improved = False
            if validate_now and dist.is_main:
                schedule.after_validation(mean_dice)
                if mean_dice > state.best_dice:
                    state.best_dice, state.best_epoch, state.stale_epochs, improved = mean_dice, epoch, 0, True
                else:
                    state.stale_epochs += 1
            if dist.is_main:
                payload = _checkpoint(model, optimizer, schedule, scaler, state)
                if improved:
                    save_checkpoint(folder / CHECKPOINT_BEST, payload)
                save_checkpoint(folder / CHECKPOINT_LAST, payload)
                _write_results(folder, state.rows)
                plot_results(folder, state.rows)
                if validate_now:
                    progress.console.print(
                        f"fold {fold} epoch {epoch}: loss {row['train_loss']:.4f}  val dice {mean_dice:.4f}"
                        + ("  [green]best[/green]" if improved else "")
                    )
            early = cfg.early_stop is not None and state.stale_epochs >= cfg.early_stop
            stop = broadcast_flag(dist, epoch >= cfg.epochs or early)
            if early and dist.is_main:
                progress.console.print(f"early stop: no improvement for {cfg.early_stop} validations")
            barrier(dist)

    result = {"fold": fold, "best_dice": state.best_dice, "best_epoch": state.best_epoch, "epochs": state.epoch, "folder": folder}
    if dist.is_main:
        best = load_checkpoint(folder / CHECKPOINT_BEST)
        model.load_state_dict(best["model"])
        # Out-of-fold and test probabilities with the recipe's TTA, for `compkit ensemble runs/*`.
        write_store(model, dataset, cache, val_pos, recipe, device, folder / "oof", console=console)
        if test_data is not None:
            test_dataset, test_cache = test_data
            write_store(model, test_dataset, test_cache, list(range(len(test_dataset))), recipe, device, folder / "test", console=console)
    barrier(dist)
    return result


def _relaunch_with_torchrun(devices: int, args: list[str]) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}", "-m", "compkit", "train", *args]
    done = subprocess.run(command, check=False)
    if done.returncode:
        raise CompkitError(None, f"distributed training failed (exit code {done.returncode})")


def train(
    recipe: str | Path,
    data: str | Path | None = None,
    fold: str = "0",
    overrides: list[str] | tuple[str, ...] = (),
    name: str | None = None,
    resume: bool = False,
    devices: int = 1,
    runs_dir: str | Path = "runs",
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Train ``recipe`` on one fold (``fold="0"``) or every fold (``fold="all"``); returns one summary per fold."""
    console = console or Console()
    if devices > 1 and not launched_by_torchrun():
        args = ["--recipe", str(recipe), "--fold", str(fold), "--runs-dir", str(runs_dir)]
        args += [a for o in overrides for a in ("--set", o)]
        args += ["--data", str(data)] if data else []
        args += ["--name", name] if name else []
        args += ["--resume"] if resume else []
        _relaunch_with_torchrun(devices, args)
        return []

    cfg = load_recipe(recipe, overrides)
    root = data or cfg.data.root
    if root is None:
        raise CompkitError(cfg.name, "no dataset: pass --data DATA or set data.root in the recipe")
    cfg.data.root = str(Path(root).absolute())
    run_name = name or cfg.name or "run"
    run_dir = Path(runs_dir) / run_name
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device)
    quiet = Console(quiet=True)
    out = console if dist.is_main else quiet
    try:
        dataset = open_dataset(cfg.data.root, "train", cfg.data.format, classes=cfg.data.classes)
        folds = load_splits(cfg.data.root)["folds"]
        if fold == "all":
            fold_ids = list(range(len(folds)))
        else:
            try:
                fold_ids = [int(fold)]
            except ValueError:
                raise CompkitError("--fold", f"{fold!r} is not a fold number or 'all'") from None
            if not 0 <= fold_ids[0] < len(folds):
                raise CompkitError(Path(cfg.data.root) / "splits.json", f"fold {fold_ids[0]} out of range: the splits file has folds 0..{len(folds) - 1}")
        yolo_family = is_ultralytics_arch(cfg.model.arch)
        if yolo_family and dist.enabled:
            raise CompkitError("--devices", "ultralytics recipes train on one device here (ultralytics runs its own DDP)")
        if not yolo_family:
            with torch.device("meta"):  # an incompatible arch/encoder pair fails now, before any real work
                create_model(cfg.model, len(dataset.classes))
        create_augmentation(cfg.aug)  # so does an unknown transform
        if dist.is_main:
            cache = cache_for(dataset, cfg, out)
        barrier(dist)
        if not dist.is_main:
            cache = cache_for(dataset, cfg, out)
        pseudo = None
        if cfg.data.pseudo:
            pseudo_set = open_dataset(cfg.data.pseudo, "train", classes=dataset.classes)
            pseudo = cache_for(pseudo_set, cfg, out)
            if dist.is_main:
                out.print(f"adding {len(pseudo_set)} pseudo-labelled images from {cfg.data.pseudo} to every fold's training side")
        test_data = None
        if dist.is_main and dataset.has_split("test"):
            test_dataset = open_dataset(cfg.data.root, "test", cfg.data.format, classes=cfg.data.classes)
            test_data = (test_dataset, cache_for(test_dataset, cfg, out))
        results = []
        for k in fold_ids:
            try:
                if yolo_family:
                    results.append(train_yolo_fold(cfg, dataset, cache, k, folds, run_dir, device, out, test_data))
                else:
                    results.append(train_fold(cfg, dataset, cache, k, folds, run_dir, resume, dist, device, out, test_data, pseudo))
            except torch.OutOfMemoryError:
                raise CompkitError(
                    run_dir / f"fold{k}",
                    f"CUDA out of memory: lower train.batch_size (now {cfg.train.batch_size}) and raise train.accumulate, "
                    f"or lower data.image_size (now {cfg.data.image_size})",
                ) from None
        if dist.is_main:
            table = Table(title=f"{run_name}: best validation dice")
            for column in ("fold", "best dice", "best epoch", "epochs", "folder"):
                table.add_column(column)
            for r in results:
                table.add_row(str(r["fold"]), f"{r['best_dice']:.4f}", str(r["best_epoch"]), str(r["epochs"]), str(r["folder"]))
            out.print(table)
        return results
    finally:
        cleanup(dist)
