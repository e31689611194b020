"""A fold's training in named phases, as ultralytics' ``BaseTrainer`` and nnU-Net's ``run_training`` lay it out.

:meth:`Trainer.fit` is the whole loop: :meth:`~Trainer.setup` once, then per epoch :meth:`~Trainer.train_epoch`,
:meth:`~Trainer.validate`, :meth:`~Trainer.save` and :meth:`~Trainer.should_stop`, then :meth:`~Trainer.finish`.
A family's trainer fills in the model-specific phases; keeping the best epoch, writing ``results.csv``, ``best.pt``
and ``last.pt`` as one unit, early stopping and the time budget are the same for every trainer.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from compkit.training.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LAST, save_checkpoint
from compkit.training.distributed import DistContext, barrier, broadcast_flag
from compkit.training.recipe import Recipe
from compkit.training.results import ResultsWriter
from compkit.util.console import transient_progress
from compkit.util.locks import deferred_interrupts

#: How many recent epochs say how long the next one takes (their slowest): recent, so the first epoch's warm-up
#: stops counting, several, so one fast epoch does not start one that cannot finish.
TIMING_WINDOW = 5
#: The smallest duration a rate is divided by (two readings of a coarse clock can be equal).
MIN_SECONDS = 1e-9


@dataclass
class FoldState:
    """Where a fold's training stands; ``last.pt`` keeps it, so a resumed fold goes on from here."""

    epoch: int = 0  # epochs completed
    best_dice: float = -1.0
    best_epoch: int = 0
    stale_epochs: int = 0  # validations since the best one
    rows: list[dict[str, Any]] = field(default_factory=list)  # results.csv so far

    def record_validation(self, epoch: int, dice: float) -> bool:
        """Count a validation; whether it is the best so far."""
        if dice > self.best_dice:
            self.best_dice, self.best_epoch, self.stale_epochs = dice, epoch, 0
            return True
        self.stale_epochs += 1
        return False

    def slowest_recent_epoch(self) -> float:
        """Seconds of the slowest of the last :data:`TIMING_WINDOW` epochs (0 before any)."""
        recent = [float(r["seconds"]) for r in self.rows[-TIMING_WINDOW:] if r.get("seconds") not in ("", None)]
        return max(recent, default=0.0)


class BudgetClock:
    """Seconds left of a fold's time budget (infinite without one), from when the loop starts."""

    def __init__(self, budget: float | None):
        self.budget, self.started = budget, time.time()

    def elapsed(self) -> float:
        return time.time() - self.started

    def left(self) -> float:
        return math.inf if self.budget is None else self.budget - self.elapsed()


class RunObserver:
    """Hears every validation of a run's folds (fold, epoch, dice), and may ask the run to stop: a search's pruner
    listens here. ``listener`` returns a reason to stop (None: go on); once it has given one, the fold stops after
    that epoch as at an early stop (its best.pt, stores and records complete) and the run trains no further fold."""

    def __init__(self, listener: Callable[[int, int, float], str | None] | None = None):
        self.listener = listener
        self.stopped: str | None = None  # the reason, once the listener gave one

    def validated(self, fold: int, epoch: int, dice: float) -> None:
        if self.listener is not None and self.stopped is None:
            self.stopped = self.listener(fold, epoch, dice)


def progress_bar(console) -> Progress:
    return transient_progress(
        console,
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


class Trainer(ABC):
    """One fold's training into ``folder``; rank 0 alone writes it."""

    def __init__(
        self, recipe: Recipe, fold: int, folder: Path, context: DistContext, observer: RunObserver | None = None
    ):
        self.recipe, self.cfg = recipe, recipe.train
        self.observer = observer or RunObserver()
        self.fold, self.folder, self.context = fold, folder, context
        self.dist, self.device, self.console = context.dist, context.device, context.console
        self.state = FoldState()
        self.writer: ResultsWriter | None = None  # set by setup, on rank 0
        self.steps_per_epoch = 1  # optimizer steps, set by setup (the progress bar counts them)
        self.clock = BudgetClock(None)
        self.progress: Progress | None = None

    def fit(self) -> FoldState:
        """The training loop: setup, then epochs until should_stop, then finish."""
        self.setup()
        self.clock = BudgetClock(self.cfg.time_budget)
        with progress_bar(self.console) as self.progress:
            total, done = self.steps_per_epoch * self.cfg.epochs, self.steps_per_epoch * self.state.epoch
            self.task = self.progress.add_task(
                f"fold {self.fold}", total=total, completed=done, stats="", visible=self.dist.is_main
            )
            stop = self.state.epoch >= self.cfg.epochs
            while not stop:
                epoch, started = self.state.epoch + 1, time.time()
                row = self.train_epoch(epoch)
                dice = self.validate(epoch, row)
                row["seconds"] = round(time.time() - started, 2)
                self.state.epoch = epoch
                self.state.rows.append(row)
                improved = dice is not None and self.state.record_validation(epoch, dice)
                if dice is not None:
                    self.observer.validated(self.fold, epoch, dice)
                self.save(improved)
                self.announce(epoch, row, dice, improved)
                stop = self.should_stop(epoch)
                barrier(self.dist)
        self.finish()
        return self.state

    @abstractmethod
    def setup(self) -> None:
        """Model, optimizer, schedule, scaler, weight averaging; resume from ``last.pt``; ``self.writer``."""

    @abstractmethod
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of optimizer steps; its results row so far (epoch, losses, learning rate, speed)."""

    @abstractmethod
    def validate(self, epoch: int, row: dict[str, Any]) -> float | None:
        """Add the validation columns to ``row``; the mean dice where this rank validated this epoch, else None."""

    @abstractmethod
    def checkpoint(self) -> dict[str, Any]:
        """What ``best.pt`` and ``last.pt`` hold: the weights, the optimizer's state and the fold state."""

    def finish(self) -> None:
        """After the last epoch (the results writer closed with its plots)."""
        if self.writer is not None:
            self.writer.close()

    def save(self, improved: bool) -> None:
        """results.csv, then best.pt (when improved) and last.pt, as one unit for a signal (it waits)."""
        if not self.dist.is_main:
            return
        # results.csv first: should the process die between them anyway, --resume keeps the rows up to last.pt's
        # epoch and replays this one; the other way round its row would be lost.
        with deferred_interrupts():
            self.writer.write(self.state.rows)
            payload = self.checkpoint()
            if improved:
                save_checkpoint(self.folder / CHECKPOINT_BEST, payload)
            save_checkpoint(self.folder / CHECKPOINT_LAST, payload)

    def announce(self, epoch: int, row: dict[str, Any], dice: float | None, improved: bool) -> None:
        if self.dist.is_main and dice is not None:
            best = "  [green]best[/green]" if improved else ""
            self.progress.console.print(
                f"fold {self.fold} epoch {epoch}: loss {row['train_loss']:.4f}  val dice {dice:.4f}{best}"
            )

    def should_stop(self, epoch: int) -> bool:
        """The last epoch, no improvement for ``train.early_stop`` validations, no time for one more epoch
        (as long as the slowest recent one), or the observer asked; rank 0 decides for every rank."""
        cfg = self.cfg
        early = cfg.early_stop is not None and self.state.stale_epochs >= cfg.early_stop
        out_of_time = epoch < cfg.epochs and self.clock.left() < self.state.slowest_recent_epoch()
        asked = epoch < cfg.epochs and self.observer.stopped is not None
        stop = broadcast_flag(self.dist, epoch >= cfg.epochs or early or out_of_time or asked)
        if asked and self.dist.is_main:
            self.progress.console.print(f"fold {self.fold} stops after epoch {epoch}: {self.observer.stopped}")
        elif early and self.dist.is_main:
            self.progress.console.print(f"early stop: no improvement for {cfg.early_stop} validations")
        elif out_of_time and self.dist.is_main:
            self.progress.console.print(
                f"time budget: fold {self.fold} stops after epoch {epoch} of {cfg.epochs} "
                f"({self.clock.elapsed():.0f} s of train.time_budget {cfg.time_budget:.0f} s); "
                f"{CHECKPOINT_BEST} holds epoch {self.state.best_epoch} (val dice {self.state.best_dice:.4f})"
            )
        return stop
