"""``compkit train``: one recipe, one or all folds -> ``runs/<name>/fold<k>/``.

The recipe's model family (:mod:`compkit.families`) trains each fold; this stage prepares the data, checks the
recipe against the family before any work, and writes every family's out-of-fold and test stores the same way.
Pretrained weights are checked (and pulled when missing and the network allows) before any data is read; each
fold prints and records (``pretrained.json``) the weights it started from.
Run folder: ``recipe.yaml`` (fully resolved, with ``model.family`` and the normalisation used), ``results.csv``, ``results.png``,
``best.pt`` / ``last.pt`` and ``oof/`` + ``test/`` probability stores (see the README's Artifacts section).
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from compkit.training.checkpoint import CHECKPOINT_LAST, checkpoint_epoch
from compkit.data import open_dataset
from compkit.data.splits import check_current, fingerprint, load_splits, splits_path
from compkit.training.device import resolve_device
from compkit.training.distributed import DistInfo, barrier, cleanup, init_distributed, launched_by_torchrun
from compkit.util.errors import CompkitError
from compkit.families import FoldJob, ModelFamily, load_fold, resolve_family
from compkit.util.fileio import atomic_write, write_json
from compkit.util.locks import OutputLock, command_line, interruptible
from compkit.planning.planner import PLAN_NAME, describe_seconds, parse_budget, plan_recipe, write_plan
from compkit.inference.predictor import inference_settings, write_store
from compkit.training.preprocess import cache_for
from compkit.training.tracking import check_loggers
from compkit.training.recipe import Recipe, load_recipe
from compkit.training.runs import PRETRAINED_FILE, RECIPE_FILE, check_fold_split, next_free, run_conflict, saved_recipe, write_run_record
from compkit.pretrained.weights import CachedWeights, WeightsCache, require, weights_cache


def _relaunch_with_torchrun(devices: int, args: list[str]) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}", "-m", "compkit", "train", *args]
    process = subprocess.Popen(command)
    try:
        with interruptible("distributed training stopped; each fold's last.pt kept: continue with --resume"):
            returncode = process.wait()
    except KeyboardInterrupt as e:
        # SIGTERM may reach this process alone (`timeout`, a container's PID 1): torchrun passes it on to the
        # workers, which clean up as any compkit process does. Ctrl-C reaches the whole process group by itself.
        if getattr(e, "signal_name", None) == "SIGTERM":
            process.terminate()
        try:
            process.wait(timeout=120)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            process.kill()
        raise
    if returncode:
        raise CompkitError(None, f"distributed training failed (exit code {returncode})")


def _fold_ids(fold: str, count: int, splits_file: Path) -> list[int]:
    if fold == "all":
        return list(range(count))
    try:
        k = int(fold)
    except ValueError:
        raise CompkitError("--fold", f"{fold!r} is not a fold number or 'all'") from None
    if not 0 <= k < count:
        raise CompkitError(splits_file, f"fold {k} out of range: the splits file has folds 0..{count - 1}")
    return [k]


TRAIN_LOG = "train.log"


class TrainedFolds(list):
    """What :func:`train` returns: one summary dict per fold (fold, best_dice, best_epoch, epochs, folder), plus
    the run folder and the summaries as a table."""

    def __init__(self, rows: list[dict[str, Any]], run_dir: Path | None):
        super().__init__(rows)
        self.run_dir = run_dir

    @property
    def table(self):
        import pandas as pd  # only notebooks ask for tables

        return pd.DataFrame(list(self))


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in ("compkit", "torch", "segmentation-models-pytorch", "timm", "ultralytics", "albumentations"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    found["cuda"] = torch.version.cuda
    return found


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_log(folder: Path, console: Console) -> None:
    """The command's console output so far, as plain text, in the fold folder."""
    with atomic_write(folder / TRAIN_LOG, "w", encoding="utf-8") as f:
        f.write(console.export_text(clear=False))


def choose_run_dir(runs_dir: Path, name: str | None, cfg, splits_fingerprint: str, resume: bool, exist_ok: bool, console: Console) -> Path:
    """The run folder to train into, never one whose folds mean something else (see :func:`train`)."""
    base = runs_dir / (name or cfg.name or "run")
    resolved = cfg.model_dump(mode="json")
    conflict = run_conflict(base, resolved, splits_fingerprint, ("train.epochs",) if resume else ())
    if conflict is None:
        return base
    if resume:
        raise CompkitError(base, f"cannot resume: {conflict} (only train.epochs may change with --resume)")
    if exist_ok:
        console.print(f"[yellow]warning:[/yellow] {base}: {conflict}; training over it (--exist-ok)")
        return base
    if name:
        raise CompkitError(base, f"{conflict}: pass --exist-ok to train over it, or choose another --name")
    n = 2
    while (candidate := base.with_name(f"{base.name}-{n}")).exists() and run_conflict(candidate, resolved, splits_fingerprint):
        n += 1
    console.print(f"note: {base} holds another experiment ({conflict}); this one is {candidate}")
    return candidate


def claim_run_dir(runs_dir: Path, name: str | None, cfg, splits_fingerprint: str, resume: bool, exist_ok: bool, console: Console) -> OutputLock:
    """:func:`choose_run_dir`, locked for the whole training (a held :class:`OutputLock`; ``.output`` is the
    folder). The folder asked for (``--name``, else the recipe's name) is locked before it is looked at, so a second
    process aiming at it meets the lock, never the first one's half-written folds; where it holds another
    experiment, the folder chosen instead is locked and chosen again (another process may have taken it)."""
    asked = OutputLock(runs_dir / (name or cfg.name or "run"), "--name").acquire()
    try:
        while True:
            run_dir = choose_run_dir(runs_dir, name, cfg, splits_fingerprint, resume, exist_ok, console)
            if run_dir == asked.output:
                return asked
            lock = OutputLock(run_dir, "--name").acquire()
            if choose_run_dir(runs_dir, name, cfg, splits_fingerprint, resume, exist_ok, Console(quiet=True)) == run_dir:
                asked.release()
                return lock
            lock.release()
    except BaseException:
        asked.release()
        raise


def interrupted_fold(folder: Path, k: int, since: float) -> str:
    """What an interrupted fold kept: its ``last.pt`` (written atomically after each complete epoch), if this
    training (or the one it resumes) wrote one."""
    last = folder / CHECKPOINT_LAST
    epoch = checkpoint_epoch(last) if last.is_file() and last.stat().st_mtime >= since else None
    if epoch is None:
        return f"fold {k} stopped before its first epoch ended ({folder}: no {CHECKPOINT_LAST} of this training): train it again"
    return f"fold {k} stopped at epoch {epoch}; {last} kept: continue with --resume"


def _pretrained_start(family: ModelFamily, cfg: Recipe, cache: WeightsCache, dist: DistInfo, out: Console) -> CachedWeights | None:
    """The cached weights the recipe's model starts from (pulled when missing and the network allows; rank 0 only),
    and the recipe's null data.mean/data.std resolved to what those weights expect."""
    wanted = family.pretrained(cfg)
    start = None
    if wanted is not None:
        if dist.is_main:
            start = require(wanted, cache, download=True, console=out)
        barrier(dist)
        if not dist.is_main:
            start = require(wanted, cache)
    if cfg.data.mean is None or cfg.data.std is None:
        resolved = family.normalisation(cfg, cache)
        if resolved is not None:
            cfg.data.mean = cfg.data.mean or resolved[0]
            cfg.data.std = cfg.data.std or resolved[1]
            out.print(f"normalising with the encoder's mean {_rounded(cfg.data.mean)} and std {_rounded(cfg.data.std)}")
    return start


def _override(overrides, key: str) -> str | None:
    """The last ``--set key=value`` given for ``key``, or None."""
    values = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == key]
    return values[-1] if values else None


def _rounded(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def train(
    recipe: str | Path,
    data: str | Path | None = None,
    fold: str = "0",
    overrides: list[str] | tuple[str, ...] = (),
    name: str | None = None,
    resume: bool = False,
    devices: int = 1,
    runs_dir: str | Path = "runs",
    exist_ok: bool = False,
    weights_dir: str | Path | None = None,
    budget: str | float | None = None,
    console: Console | None = None,
) -> TrainedFolds:
    """Train ``recipe`` on one fold (``fold="0"``) or every fold (``fold="all"``); returns one summary per fold.

    A run folder never silently changes meaning: without ``name``, a run whose folds were trained with another
    resolved recipe or split moves on to ``<name>-2``; with ``name`` it is refused unless ``exist_ok``. ``resume``
    continues each fold from ``last.pt``; only ``train.epochs`` may differ (the schedule continues on the longer
    curve). ``weights_dir``: the weights cache (default ``$COMPKIT_WEIGHTS``, else the standard caches); pretrained
    weights missing there are downloaded when the network allows, else training stops before any data is read.
    ``recipe="plan"`` plans a recipe for ``data`` and ``budget`` first (:mod:`compkit.planning`; written to
    ``runs_dir/plan.yaml``); with another recipe, ``budget`` (``10m``, ``6h``) gives each fold its share (80 %, the
    rest for prediction) as ``train.time_budget``. The wall time is printed against the budget."""
    console = console or Console()
    started = time.time()
    budget_s = parse_budget(budget) if budget is not None else None
    console.record = True  # the console output is kept as each fold's train.log
    if devices < 1:
        raise CompkitError("--devices", f"must be at least 1, got {devices}")
    if devices > 1 and not launched_by_torchrun():
        args = ["--recipe", str(recipe), "--fold", str(fold), "--runs-dir", str(runs_dir)]
        args += ["--weights-cache", str(weights_dir)] if weights_dir else []
        args += [a for o in overrides for a in ("--set", o)]
        args += ["--data", str(data)] if data else []
        args += ["--name", name] if name else []
        args += ["--resume"] if resume else []
        args += ["--exist-ok"] if exist_ok else []
        args += ["--budget", str(budget)] if budget is not None else []
        _relaunch_with_torchrun(devices, args)
        return TrainedFolds([], None)

    if str(recipe) == PLAN_NAME:
        if data is None:
            raise CompkitError("--recipe", "plan needs --data DATA: the plan is fitted to the dataset")
        planned = plan_recipe(
            data,
            budget if budget is not None else "10m",
            device=_override(overrides, "train.device") or "auto",
            splits=_override(overrides, "data.splits"),  # the folds it plans for (a read-only dataset's are elsewhere)
            console=console,
        )
        budget_s = planned.budget_s
        for line in planned.reasons:
            console.print(f"  {line}")
        Path(runs_dir).mkdir(parents=True, exist_ok=True)
        recipe = write_plan(planned, next_free(Path(runs_dir) / f"{PLAN_NAME}.yaml"))
        console.print(f"planned {recipe} in {time.time() - started:.0f} s")
    cfg = load_recipe(recipe, overrides)
    check_loggers(cfg.train.loggers)  # a missing tracker package fails before anything is read or written
    root = data or cfg.data.root
    if root is None:
        raise CompkitError(cfg.name, "no dataset: pass --data DATA or set data.root in the recipe")
    cfg.data.root = str(Path(root).absolute())
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device)
    out = console if dist.is_main else Console(quiet=True)
    run_lock = None
    try:
        family = resolve_family(cfg, out)
        if dist.enabled and not family.supports_distributed:
            raise CompkitError("--devices", f"{family.name} recipes train on one device here")
        cache_of_weights = weights_cache(weights_dir)
        start = _pretrained_start(family, cfg, cache_of_weights, dist, out)  # before any data is read
        dataset = open_dataset(cfg.data.root, "train", cfg.data.format, classes=cfg.data.classes)
        splits_file = splits_path(cfg.data.root, cfg.data.splits)
        splits = load_splits(cfg.data.root, cfg.data.splits)
        check_current(splits, dataset, splits_file)  # images added after `compkit split` would silently not train
        folds = splits["folds"]
        fold_ids = _fold_ids(fold, len(folds), splits_file)
        if budget_s is not None and cfg.train.time_budget is None:
            cfg.train.time_budget = round(max(1.0, 0.8 * (budget_s - (time.time() - started)) / len(fold_ids)), 1)
            out.print(f"--budget {describe_seconds(budget_s)}: each fold trains for at most {cfg.train.time_budget:.0f} s (train.time_budget)")
        if dist.is_main:  # one lock per run: under torchrun rank 0 holds it for every rank
            run_lock = claim_run_dir(Path(runs_dir), name, cfg, fingerprint(splits), resume, exist_ok, out)
            run_dir = run_lock.output
        else:
            run_dir = choose_run_dir(Path(runs_dir), name, cfg, fingerprint(splits), resume, exist_ok, out)
        family.check(cfg, len(dataset.classes), out)  # every setting the family cannot honour fails before any work
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
        test = None
        if dist.is_main and dataset.has_split("test"):
            test_dataset = open_dataset(cfg.data.root, "test", cfg.data.format, classes=cfg.data.classes)
            test = (test_dataset, cache_for(test_dataset, cfg, out))
        settings = family.check_inference(inference_settings(cfg), out)

        results = []
        for k in fold_ids:
            fold_started = time.time() - 1  # a second's slack for file systems with coarse timestamps
            folder = run_dir / f"fold{k}"
            resuming = resume and (folder / RECIPE_FILE).is_file()
            if resume and not resuming and dist.is_main:
                out.print(f"note: nothing to resume in {folder}: training fold {k} from the start")
            if resuming:
                check_fold_split(folder, splits, splits_file)
                before = saved_recipe(folder)["train"]["epochs"]
                if before != cfg.train.epochs and dist.is_main:
                    out.print(f"fold {k}: train.epochs {before} -> {cfg.train.epochs}: the {cfg.sched.name} schedule continues on the {cfg.train.epochs}-epoch curve")
            record = {
                "fold": k,
                "family": family.name,
                "command": command_line(),
                "overrides": list(overrides),
                "recipe": cfg.model_dump(mode="json"),
                "data_root": cfg.data.root,
                "data_root_relative": os.path.relpath(cfg.data.root, folder.absolute()),
                "splits_file": str(splits_file),
                "splits_fingerprint": fingerprint(splits),
                "val_images": len(folds[k]["val"]),
                "versions": versions(),
                "device": str(device),
                "resumed": resuming,
                "started": now(),
                "ended": None,
            }
            if dist.is_main:
                with atomic_write(folder / RECIPE_FILE, "w", encoding="utf-8") as f:
                    f.write(cfg.to_yaml())
                write_run_record(folder, record)
                out.print(f"fold {k} starts from {start.describe() if start is not None else 'random weights (model.encoder_weights: null)'}")
                write_json(folder / PRETRAINED_FILE, start.record() if start is not None else {"name": cfg.model.encoder, "tag": None})
            job = FoldJob(cfg, dataset, cache, k, folds[k]["train"], folds[k]["val"], folder, resume, dist, device, out, pseudo, cache_of_weights)
            since = (folder / CHECKPOINT_LAST).stat().st_mtime if resuming and (folder / CHECKPOINT_LAST).is_file() else fold_started
            try:
                with interruptible(lambda folder=folder, k=k, since=since: interrupted_fold(folder, k, since)):
                    try:
                        outcome = family.train_fold(job)
                    except torch.OutOfMemoryError:
                        raise CompkitError(
                            folder,
                            f"CUDA out of memory: lower train.batch_size (now {cfg.train.batch_size}) and raise train.accumulate, "
                            f"or lower data.image_size (now {cfg.data.image_size})",
                        ) from None
                    if dist.is_main:
                        # Out-of-fold and test probabilities of the best checkpoint, for `compkit ensemble runs/*`.
                        predictor = load_fold(folder, dataset.classes, device, recipe=cfg).predictor
                        write_store(predictor, dataset, cache, job.val_positions, folder / "oof", settings, out, f"{family.name}, ")
                        if test is not None:
                            test_dataset, test_cache = test
                            write_store(predictor, test_dataset, test_cache, list(range(len(test_dataset))), folder / "test", settings, out, f"{family.name}, ")
            except KeyboardInterrupt:
                if dist.is_main:  # the record and log say where it stopped, and never that it ended
                    write_run_record(folder, {**record, "interrupted": now()})
                    write_log(folder, out)
                raise
            if dist.is_main:
                write_run_record(folder, {**record, "ended": now(), "best_dice": outcome.best_dice, "epochs": outcome.epochs})
                write_log(folder, out)
            barrier(dist)
            results.append({"fold": k, "best_dice": outcome.best_dice, "best_epoch": outcome.best_epoch, "epochs": outcome.epochs, "folder": folder})
        if dist.is_main:
            table = Table(title=f"{run_dir.name} ({family.name}): best validation dice")
            for column in ("fold", "best dice", "best epoch", "epochs", "folder"):
                table.add_column(column)
            for r in results:
                table.add_row(str(r["fold"]), f"{r['best_dice']:.4f}", str(r["best_epoch"]), str(r["epochs"]), str(r["folder"]))
            out.print(table)
            for r in results:
                write_log(r["folder"], out)
            next_step = f"compkit ensemble {run_dir}" if len(results) == len(folds) else f"compkit train --recipe {recipe} --fold all" + (f" --name {run_dir.name}" if name else "")
            trained = ", ".join(f"fold{r['fold']}" for r in results)
            out.print(f"wrote {run_dir} ({trained}); next: {next_step}")
            if budget_s is not None:
                wall = time.time() - started
                out.print(f"wall time {describe_seconds(wall)} of the {describe_seconds(budget_s)} budget" + ("" if wall <= budget_s else " [yellow](over)[/yellow]"))
        return TrainedFolds(results, run_dir)
    finally:
        if run_lock is not None:
            run_lock.release()
        cleanup(dist)
