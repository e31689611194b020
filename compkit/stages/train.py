"""``compkit train``: one recipe, one or all folds -> ``runs/<name>/fold<k>/``.

The recipe's model family (:mod:`compkit.families`) trains each fold; this stage prepares the data, checks the
recipe against the family before any work, and writes every family's out-of-fold and test stores the same way.
Pretrained weights are checked (and pulled when missing and the network allows) before any data is read; each
fold prints and records (``pretrained.json``) the weights it started from.
Run folder: ``recipe.yaml`` (fully resolved, with ``model.family`` and the normalisation used), ``results.csv``,
``results.png``, ``best.pt`` / ``last.pt`` and ``oof/`` + ``test/`` probability stores (see
docs/artifacts.md).

:func:`train` runs in named phases: load the recipe, :func:`prepare` it once into a frozen :class:`PreparedRun`
(family, weights, normalisation, folds, budget: every setting the run folder records), claim the run folder,
:func:`cache_inputs`, then per fold :func:`start_fold`, :func:`train_and_predict`, :func:`end_fold`, and
:func:`report`.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from compkit.data import SegmentationDataset, open_dataset
from compkit.data.cache import SampleCache
from compkit.data.splits import check_current, fingerprint, load_splits, splits_path
from compkit.families import FoldData, FoldJob, FoldRun, ModelFamily, load_fold, resolve_family
from compkit.inference.predictor import CachedImages, InferenceSettings, inference_settings, write_store
from compkit.planning.planner import PLAN_NAME, PlanMachine, describe_seconds, parse_budget, plan_recipe, write_plan
from compkit.pretrained.weights import CachedWeights, WeightsCache, require
from compkit.pretrained.weights import weights_cache as locate_weights_cache
from compkit.stores.probabilities import OOF_STORE, TEST_STORE
from compkit.training.checkpoint import CHECKPOINT_LAST, checkpoint_epoch
from compkit.training.device import resolve_device
from compkit.training.distributed import (
    DistContext,
    barrier,
    broadcast_flag,
    cleanup,
    launched_by_torchrun,
    main_rank_first,
    start_distributed,
)
from compkit.training.preprocess import cache_for
from compkit.training.recipe import Recipe, load_recipe
from compkit.training.results import CV_CSV, worst_class, write_cross_validation
from compkit.training.runs import (
    PRETRAINED_FILE,
    RECIPE_FILE,
    RUNS_DIR,
    TRAIN_LOG,
    check_fold_split,
    fold_folder,
    named_folds,
    next_free,
    run_conflict,
    saved_recipe,
    write_run_record,
)
from compkit.training.tracking import check_loggers
from compkit.training.trainer import BudgetClock, RunObserver
from compkit.util.console import output_console
from compkit.util.errors import REPLACE_FLAG, CompkitError, warn, warnings_to
from compkit.util.fileio import atomic_write, write_json
from compkit.util.locks import OutputLock, command_line, interruptible

#: The share of a ``--budget`` the folds train for; the rest is for prediction (the oof and test stores).
TRAINING_SHARE = 0.8


def _relaunch_with_torchrun(devices: int, args: list[str]) -> None:
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}"),
        *("-m", "compkit", "train", *args),
    ]
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


def parse_folds(fold: str | int, count: int, splits_file: Path) -> list[int]:
    """The folds ``fold`` names ('all', one number, or several separated by commas: '0,2') of the splits file's."""
    wanted = named_folds(fold)
    if wanted is None:
        return list(range(count))
    for k in wanted:
        if not 0 <= k < count:
            raise CompkitError(splits_file, f"fold {k} out of range: the splits file has folds 0..{count - 1}")
    return wanted


class TrainedFolds(list):
    """What :func:`train` returns: one summary dict per fold (fold, best_dice, best_epoch, epochs, folder), plus
    the run folder and the summaries as a table."""

    def __init__(self, rows: list[dict[str, Any]], run_dir: Path | None, stopped: str | None = None):
        super().__init__(rows)
        self.run_dir = run_dir
        self.stopped = stopped  # why the run's observer stopped it before its last fold ended (None: it did not)

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


@dataclass(frozen=True)
class RunRequest:
    """Which run folder ``compkit train`` was asked for, and how it may treat one that exists."""

    runs_dir: Path
    name: str | None = None  # --name; else the recipe's name
    resume: bool = False
    exist_ok: bool = False

    def asked_for(self, cfg: Recipe) -> Path:
        return self.runs_dir / (self.name or cfg.name or "run")


def choose_run_dir(request: RunRequest, cfg: Recipe, splits_fingerprint: str, console: Console) -> Path:
    """The run folder to train into, never one whose folds mean something else (see :func:`train`)."""
    base = request.asked_for(cfg)
    resolved = cfg.model_dump(mode="json")
    conflict = run_conflict(base, resolved, splits_fingerprint, ("train.epochs",) if request.resume else ())
    if conflict is None:
        return base
    if request.resume:
        raise CompkitError(base, f"cannot resume: {conflict} (only train.epochs may change with --resume)")
    if request.exist_ok:
        warn(base, f"{conflict}; training over it ({REPLACE_FLAG})", console)
        return base
    if request.name:
        raise CompkitError(base, f"{conflict}: pass {REPLACE_FLAG} to train over it, or choose another --name")
    n = 2
    while (candidate := base.with_name(f"{base.name}-{n}")).exists() and run_conflict(
        candidate, resolved, splits_fingerprint
    ):
        n += 1
    console.print(f"note: {base} holds another experiment ({conflict}); this one is {candidate}")
    return candidate


def claim_run_dir(request: RunRequest, cfg: Recipe, splits_fingerprint: str, console: Console) -> OutputLock:
    """:func:`choose_run_dir`, locked for the whole training (a held :class:`OutputLock`; ``.output`` is the
    folder). The folder asked for (``--name``, else the recipe's name) is locked before it is looked at, so a second
    process aiming at it meets the lock, never the first one's half-written folds; where it holds another
    experiment, the folder chosen instead is locked and chosen again (another process may have taken it)."""
    asked = OutputLock(request.asked_for(cfg), "--name").acquire()
    try:
        while True:
            run_dir = choose_run_dir(request, cfg, splits_fingerprint, console)
            if run_dir == asked.output:
                return asked
            lock = OutputLock(run_dir, "--name").acquire()
            if choose_run_dir(request, cfg, splits_fingerprint, Console(quiet=True)) == run_dir:
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
        return (
            f"fold {k} stopped before its first epoch ended ({folder}: no {CHECKPOINT_LAST} of this training): "
            "train it again"
        )
    return f"fold {k} stopped at epoch {epoch}; {last} kept: continue with --resume"


def _override(overrides, key: str) -> str | None:
    """The last ``--set key=value`` given for ``key``, or None."""
    values = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == key]
    return values[-1] if values else None


def _rounded(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


class WallClock(BudgetClock):
    """The command's wall time, against its ``--budget`` (``10m``, ``6h``; None: no budget)."""

    def __init__(self, budget: str | float | None):
        super().__init__(parse_budget(budget) if budget is not None else None)

    def fold_share(self, folds: int) -> float:
        """Each fold's training seconds: :data:`TRAINING_SHARE` of what is left, split evenly."""
        return round(max(1.0, TRAINING_SHARE * (self.budget - self.elapsed()) / folds), 1)

    def report(self) -> str:
        wall = self.elapsed()
        over = "" if wall <= self.budget else " [yellow](over)[/yellow]"
        return f"wall time {describe_seconds(wall)} of the {describe_seconds(self.budget)} budget{over}"


def _planned(data: str | Path | None, overrides, runs_dir: Path, clock: WallClock, console: Console) -> Path:
    """``--recipe plan``: a recipe planned for ``data`` within the budget, written to ``runs_dir/plan.yaml``."""
    if data is None:
        raise CompkitError("--recipe", "plan needs --data DATA: the plan is fitted to the dataset")
    planned = plan_recipe(
        data,
        clock.budget if clock.budget is not None else "10m",
        PlanMachine(device=_override(overrides, "train.device") or "auto"),
        splits=_override(overrides, "data.splits"),  # the folds it plans for (a read-only dataset's are elsewhere)
        console=console,
    )
    clock.budget = planned.budget_s
    for line in planned.reasons:
        console.print(f"  {line}")
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = write_plan(planned, next_free(runs_dir / f"{PLAN_NAME}.yaml"))
    console.print(f"planned {path} in {clock.elapsed():.0f} s")
    return path


def _loaded_recipe(recipe: str | Path, overrides, data: str | Path | None) -> Recipe:
    cfg = load_recipe(recipe, overrides)
    check_loggers(cfg.train.loggers)  # a missing tracker package fails before anything is read or written
    root = data or cfg.data.root
    if root is None:
        raise CompkitError(cfg.name, "no dataset: pass --data DATA or set data.root in the recipe")
    cfg.data.root = str(Path(root).absolute())
    return cfg


@dataclass(frozen=True)
class PreparedRun:
    """What every fold of one ``compkit train`` shares, resolved once: the recipe with every setting the run folder
    records (data.root, model.family, the normalisation, train.time_budget), its family, the pretrained weights it
    starts from, the dataset, its current folds and the folds to train. Nothing changes the recipe after this."""

    cfg: Recipe
    overrides: tuple[str, ...]  # the --set settings, as given (the run record keeps them)
    family: ModelFamily
    weights: WeightsCache
    start: CachedWeights | None
    dataset: SegmentationDataset
    splits: dict[str, Any]
    splits_file: Path
    fold_ids: tuple[int, ...]
    observer: RunObserver  # told each validation; may stop the run (a search's pruner)
    record: dict[str, Any]  # what each fold's run.json adds to its own keys (a search trial's study and number)

    @property
    def folds(self) -> list[dict[str, list[str]]]:
        return self.splits["folds"]


@dataclass(frozen=True)
class FoldCaches:
    """The prepared run's cached images (training, pseudo-labels, test on rank 0) and its prediction settings."""

    cache: SampleCache
    pseudo: SampleCache | None
    test: CachedImages | None  # on rank 0, where the dataset has a test split
    settings: InferenceSettings


def _pretrained_start(
    cfg: Recipe, family: ModelFamily, weights: WeightsCache, context: DistContext
) -> CachedWeights | None:
    """The cached weights the recipe's model starts from (pulled when missing and the network allows: rank 0
    first), and the recipe's null data.mean/data.std resolved to what those weights expect."""
    console = context.console
    wanted = family.pretrained(cfg)
    start = None
    if wanted is not None:
        with main_rank_first(context.dist):
            start = require(wanted, weights, download=context.dist.is_main, console=console)
    if cfg.data.mean is None or cfg.data.std is None:
        resolved = family.normalisation(cfg, weights)
        if resolved is not None:
            cfg.data.mean = cfg.data.mean or resolved[0]
            cfg.data.std = cfg.data.std or resolved[1]
            console.print(
                f"normalising with the encoder's mean {_rounded(cfg.data.mean)} and std {_rounded(cfg.data.std)}"
            )
    return start


def prepare(
    cfg: Recipe,
    overrides,
    fold: str,
    clock: WallClock,
    context: DistContext,
    weights_cache: str | Path | None,
    observer: RunObserver | None = None,
    record: dict[str, Any] | None = None,
) -> PreparedRun:
    """Resolve the loaded recipe once: its family (checked against the recipe and the run's devices), the pretrained
    weights (before any data is read) and their normalisation, the dataset and its current folds, the folds to
    train and each one's share of the budget."""
    family = resolve_family(cfg, context.console)
    if context.dist.enabled and not family.supports_distributed:
        raise CompkitError("--devices", f"{family.name} recipes train on one device here")
    weights = locate_weights_cache(weights_cache)
    start = _pretrained_start(cfg, family, weights, context)
    dataset = open_dataset(cfg.data.root, "train", cfg.data.format, classes=cfg.data.classes)
    splits_file = splits_path(cfg.data.root, cfg.data.splits)
    splits = load_splits(cfg.data.root, cfg.data.splits)
    check_current(splits, dataset, splits_file)  # images added after `compkit split` would silently not train
    family.check(cfg, len(dataset.classes), context.console)  # every setting it cannot honour fails now
    fold_ids = parse_folds(fold, len(splits["folds"]), splits_file)
    _share_budget(cfg, clock, len(fold_ids), context.console)
    return PreparedRun(
        *(cfg, tuple(overrides), family, weights, start, dataset, splits, splits_file, tuple(fold_ids)),
        observer or RunObserver(),
        dict(record or {}),
    )


def cache_inputs(run: PreparedRun, context: DistContext) -> FoldCaches:
    """The training, pseudo-label and test caches (rank 0 builds each first), and the prediction settings."""
    cfg, console = run.cfg, context.console
    with main_rank_first(context.dist):
        cache = cache_for(run.dataset, cfg, console)
    pseudo = test = None
    if cfg.data.pseudo:
        pseudo_set = open_dataset(cfg.data.pseudo, "train", classes=run.dataset.classes)
        with main_rank_first(context.dist):
            pseudo = cache_for(pseudo_set, cfg, console)
        console.print(
            f"adding {len(pseudo_set)} pseudo-labelled images from {cfg.data.pseudo} to every fold's training side"
        )
    if context.dist.is_main and run.dataset.has_split("test"):
        test_set = open_dataset(cfg.data.root, "test", cfg.data.format, classes=cfg.data.classes)
        test = CachedImages(test_set, cache_for(test_set, cfg, console), list(range(len(test_set))))
    return FoldCaches(cache, pseudo, test, run.family.check_inference(inference_settings(cfg), console))


@dataclass
class FoldStart:
    """One fold as it starts: its folder, whether it resumes, its run record, and since when its ``last.pt``
    counts as this training's."""

    k: int
    folder: Path
    resuming: bool
    record: dict[str, Any]
    since: float


def start_fold(run: PreparedRun, run_dir: Path, k: int, resume: bool, context: DistContext) -> FoldStart:
    """Check what a resumed fold continues, then (rank 0) write its ``recipe.yaml``, run record and
    ``pretrained.json``."""
    cfg, console, main = run.cfg, context.console, context.dist.is_main
    started = time.time() - 1  # a second's slack for file systems with coarse timestamps
    folder = fold_folder(run_dir, k)
    resuming = resume and (folder / RECIPE_FILE).is_file()
    if resume and not resuming:
        console.print(f"note: nothing to resume in {folder}: training fold {k} from the start")
    if resuming:
        check_fold_split(folder, run.splits, run.splits_file)
        before = saved_recipe(folder)["train"]["epochs"]
        if before != cfg.train.epochs:
            console.print(
                f"fold {k}: train.epochs {before} -> {cfg.train.epochs}: the {cfg.sched.name} schedule continues "
                f"on the {cfg.train.epochs}-epoch curve"
            )
        if (folder / CHECKPOINT_LAST).is_file():
            started = (folder / CHECKPOINT_LAST).stat().st_mtime
    record = {
        **run.record,
        "fold": k,
        "family": run.family.name,
        "command": command_line(),
        "overrides": list(run.overrides),
        "recipe": cfg.model_dump(mode="json"),
        "data_root": cfg.data.root,
        "data_root_relative": os.path.relpath(cfg.data.root, folder.absolute()),
        "splits_file": str(run.splits_file),
        "splits_fingerprint": fingerprint(run.splits),
        "val_images": len(run.folds[k]["val"]),
        "versions": versions(),
        "device": str(context.device),
        "resumed": resuming,
        "started": now(),
        "ended": None,
    }
    if main:
        with atomic_write(folder / RECIPE_FILE, "w", encoding="utf-8") as f:
            f.write(cfg.to_yaml())
        write_run_record(folder, record)
        start = run.start
        console.print(
            f"fold {k} starts from {start.describe() if start is not None else 'random weights (model.encoder_weights: null)'}"
        )
        write_json(
            folder / PRETRAINED_FILE, start.record() if start is not None else {"name": cfg.model.encoder, "tag": None}
        )
    return FoldStart(k, folder, resuming, record, started)


def _fold_job(run: PreparedRun, caches: FoldCaches, fold: FoldStart, resume: bool, context: DistContext) -> FoldJob:
    split = run.folds[fold.k]
    data = FoldData(run.dataset, caches.cache, fold.k, split["train"], split["val"], pseudo=caches.pseudo)
    where = FoldRun(fold.folder, resume=resume, weights_cache=run.weights, start=run.start)
    return FoldJob(run.cfg, data, where, context, run.observer)


def train_and_predict(
    run: PreparedRun, caches: FoldCaches, fold: FoldStart, resume: bool, context: DistContext
) -> dict[str, Any]:
    """Train the fold, then (rank 0) predict its best checkpoint's out-of-fold and test stores (what
    ``compkit ensemble runs/*`` reads); its summary. An interruption says what the fold kept."""
    cfg, family = run.cfg, run.family
    job = _fold_job(run, caches, fold, resume, context)
    with interruptible(lambda: interrupted_fold(fold.folder, fold.k, fold.since)):
        try:
            outcome = family.train_fold(job)
        except torch.OutOfMemoryError:
            raise CompkitError(
                fold.folder,
                f"CUDA out of memory: lower train.batch_size (now {cfg.train.batch_size}) and raise "
                f"train.accumulate, or lower data.image_size (now {cfg.data.image_size})",
            ) from None
        if context.dist.is_main:
            predictor = load_fold(fold.folder, run.dataset.classes, context.device, recipe=cfg).predictor
            label = f"{family.name}, "
            oof = CachedImages(run.dataset, caches.cache, job.data.val_positions)
            write_store(predictor, oof, fold.folder / OOF_STORE, caches.settings, context.console, label)
            if caches.test is not None:
                write_store(predictor, caches.test, fold.folder / TEST_STORE, caches.settings, context.console, label)
    summary = {"best_dice": outcome.best_dice, "best_epoch": outcome.best_epoch, "epochs": outcome.epochs}
    return {"fold": fold.k, **summary, "folder": fold.folder}


def end_fold(fold: FoldStart, summary: dict[str, Any] | None, context: DistContext) -> None:
    """(Rank 0) the run record says when the fold ended, or that it was interrupted; ``train.log`` so far."""
    if not context.dist.is_main:
        return
    if summary is None:  # the record and log say where it stopped, and never that it ended
        write_run_record(fold.folder, {**fold.record, "interrupted": now()})
    else:
        ended = {"ended": now(), "best_dice": summary["best_dice"], "epochs": summary["epochs"]}
        write_run_record(fold.folder, {**fold.record, **ended})
    write_log(fold.folder, context.console)


def report(results: list[dict[str, Any]], run_dir: Path, run: PreparedRun, again: str, console: Console) -> None:
    """The cross-validation table of every trained fold of the run (``cv.json`` / ``cv.csv``), in the ``train.log`` of
    each fold trained now too, and what comes next: the ensemble once every fold is trained, else ``again`` (the
    train command) for the folds still missing."""
    summary = write_cross_validation(run_dir)
    missing = sorted(set(range(len(run.folds))) - {fold["fold"] for fold in summary["folds"]})
    next_step = f"{again} --fold {','.join(map(str, missing))}" if missing else f"compkit ensemble {run_dir}"
    table = Table(title=f"{run_dir.name} ({run.family.name}): best validation dice per fold")
    for column in ("fold", "best dice", "best epoch", "epochs", "worst class", "folder"):
        table.add_column(column, justify="left" if column in ("worst class", "folder") else "right")
    for fold in summary["folds"]:
        worst = worst_class(fold)
        table.add_row(
            str(fold["fold"]),
            f"{fold['best_dice']:.4f}",
            str(fold["best_epoch"] if fold["best_epoch"] is not None else "-"),
            str(fold["epochs"] if fold["epochs"] is not None else "-"),
            f"{worst[0]} ({worst[1]:.4f})" if worst else "-",
            str(fold_folder(run_dir, fold["fold"])),
        )
    if len(summary["folds"]) > 1:
        mean, std = summary["mean"], summary["std"]
        table.add_row("[bold]mean", f"[bold]{mean['best_dice']:.4f}[/bold] ± {std['best_dice']:.4f}", "", "", "", "")
    console.print(table)
    for r in results:
        write_log(r["folder"], console)
    trained = ", ".join(f"fold{r['fold']}" for r in results)
    console.print(f"wrote {run_dir} ({trained}; {CV_CSV}: every fold's figures); next: {next_step}")


def _share_budget(cfg: Recipe, clock: WallClock, folds: int, console: Console) -> None:
    """With ``--budget`` and no ``train.time_budget``, each fold's share of the budget as ``train.time_budget``."""
    if clock.budget is not None and cfg.train.time_budget is None:
        cfg.train.time_budget = clock.fold_share(folds)
        console.print(
            f"--budget {describe_seconds(clock.budget)}: each fold trains for at most "
            f"{cfg.train.time_budget:.0f} s (train.time_budget)"
        )


def _torchrun_arguments(recipe, data, fold, overrides, request: RunRequest, weights_cache, budget) -> list[str]:
    """The ``compkit train`` arguments that give each torchrun worker this same training."""
    args = ["--recipe", str(recipe), "--fold", str(fold), "--out", str(request.runs_dir)]
    args += ["--weights-cache", str(weights_cache)] if weights_cache else []
    args += [a for o in overrides for a in ("--set", o)]
    args += ["--data", str(data)] if data else []
    args += ["--name", request.name] if request.name else []
    args += ["--resume"] if request.resume else []
    args += [REPLACE_FLAG] if request.exist_ok else []
    args += ["--budget", str(budget)] if budget is not None else []
    return args


def train(
    recipe: str | Path,
    data: str | Path | None = None,
    fold: str = "all",
    overrides: list[str] | tuple[str, ...] = (),
    name: str | None = None,
    resume: bool = False,
    devices: int = 1,
    out: str | Path = RUNS_DIR,
    exist_ok: bool = False,
    weights_cache: str | Path | None = None,
    budget: str | float | None = None,
    console: Console | None = None,
    observer: RunObserver | None = None,
    record: dict[str, Any] | None = None,
) -> TrainedFolds:
    """Train ``recipe`` on every fold (``fold="all"``, what an ensemble needs), one (``"0"``) or several (``"0,2"``)
    into ``out/<name>/``; returns one summary per fold.

    A run folder never silently changes meaning: without ``name``, a run whose folds were trained with another
    resolved recipe or split moves on to ``<name>-2``; with ``name`` it is refused unless ``exist_ok``. ``resume``
    continues each fold from ``last.pt``; only ``train.epochs`` may differ (the schedule continues on the longer
    curve). ``weights_cache``: the weights folder (default ``$COMPKIT_WEIGHTS``, else the standard caches);
    pretrained weights missing there are downloaded when the network allows, else training stops before any data
    is read. ``recipe="plan"`` plans a recipe for ``data`` and ``budget`` first (:mod:`compkit.planning`; written
    to ``out/plan.yaml``); with another recipe, ``budget`` (``10m``, ``6h``) gives each fold its share (80 %, the
    rest for prediction) as ``train.time_budget``. The wall time is printed against the budget. ``observer`` hears
    every validation and may stop the run (``compkit tune``'s pruner); ``record`` adds keys to each fold's
    ``run.json``."""
    console = console or output_console()
    console.record = True  # the console output is kept as each fold's train.log
    clock = WallClock(budget)
    request = RunRequest(Path(out), name, resume, exist_ok)
    if devices < 1:
        raise CompkitError("--devices", f"must be at least 1, got {devices}")
    if devices > 1 and not launched_by_torchrun():
        _relaunch_with_torchrun(
            devices, _torchrun_arguments(recipe, data, fold, overrides, request, weights_cache, budget)
        )
        return TrainedFolds([], None)
    with warnings_to(console):  # so train.log keeps them
        if str(recipe) == PLAN_NAME:
            recipe = _planned(data, overrides, request.runs_dir, clock, console)
        cfg = _loaded_recipe(recipe, overrides, data)
        context = start_distributed(resolve_device(cfg.train.device), console)
        run_lock = None
        try:
            run = prepare(cfg, overrides, fold, clock, context, weights_cache, observer, record)
            # The recipe is final now and chooses the run folder. One lock per run: under torchrun rank 0 holds it
            # for every rank.
            splits_fingerprint = fingerprint(run.splits)
            if context.dist.is_main:
                run_lock = claim_run_dir(request, cfg, splits_fingerprint, context.console)
                run_dir = run_lock.output
            else:
                run_dir = choose_run_dir(request, cfg, splits_fingerprint, context.console)
            caches = cache_inputs(run, context)
            results = []
            for k in run.fold_ids:
                started = start_fold(run, run_dir, k, resume, context)
                try:
                    summary = train_and_predict(run, caches, started, resume, context)
                except KeyboardInterrupt:
                    end_fold(started, None, context)
                    raise
                end_fold(started, summary, context)
                barrier(context.dist)
                results.append(summary)
                if broadcast_flag(context.dist, run.observer.stopped is not None):
                    break
            if context.dist.is_main:
                again = f"compkit train --recipe {recipe}" + (f" --data {data}" if data else "")
                again += f" --name {run_dir.name}" if name else ""
                again += "".join(f" --set {shlex.quote(o)}" for o in overrides)  # the same run, its other folds
                again += f" --out {request.runs_dir}" if request.runs_dir != Path(RUNS_DIR) else ""
                report(results, run_dir, run, again, context.console)
                if clock.budget is not None:
                    context.console.print(clock.report())
            return TrainedFolds(results, run_dir, run.observer.stopped)
        finally:
            if run_lock is not None:
                run_lock.release()
            cleanup(context.dist)
