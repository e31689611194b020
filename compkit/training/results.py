"""``results.csv`` (one row per epoch) and ``results.png`` of a fold folder: one writer for every family."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from compkit.training.runs import fold_dirs, fold_number, read_run_record
from compkit.training.tracking import Tracking
from compkit.util.fileio import atomic_write, open_text, write_csv, write_json
from compkit.util.plots import subplots  # figures on their own Agg canvas, no pyplot

RESULTS_CSV = "results.csv"
RESULTS_PNG = "results.png"
OVERLAYS_PNG = "val_overlays.png"
DICE_PREFIX = "val_dice_"  # results.csv: val_dice_<class> per class, val_dice_mean
# results.png is redrawn at most this often while a fold trains (and always when it ends): drawing it takes about
# 0.5-0.9 s on a CPU, which after every short epoch cost 15 % of a 10-minute planned run's training time.
PLOT_INTERVAL_S = 30.0


class ResultsWriter:
    """The one results writer of a fold: ``results.csv`` after every epoch, ``results.png`` every
    :data:`PLOT_INTERVAL_S` and at the end, and each new row, the resolved recipe and the fold's images to the
    trackers of ``train.loggers`` (see :mod:`compkit.training.tracking`)."""

    def __init__(self, folder: Path, recipe, rows_already_logged: int = 0):
        self.folder = folder
        cfg = recipe.train
        settings = {"tracking_uri": cfg.tracking_uri, "wandb_project": cfg.wandb_project}
        self.tracking = Tracking(folder, list(cfg.loggers), recipe.model_dump(mode="json"), settings)
        self.logged = rows_already_logged
        self.rows: list[dict[str, Any]] = []
        self.plotted_at = -PLOT_INTERVAL_S

    def write(self, rows: list[dict[str, Any]]) -> None:
        plot = time.monotonic() - self.plotted_at >= PLOT_INTERVAL_S
        write_results(self.folder, rows, plot=plot)
        self.plotted_at = time.monotonic() if plot else self.plotted_at
        self.rows = rows
        for row in rows[self.logged :]:
            self.tracking.epoch(row)
        self.logged = len(rows)

    def close(self, images: dict[str, Path] | None = None) -> None:
        """Draw ``results.png``, log it and any other images (e.g. validation overlays), then end the trackers' runs."""
        if self.rows:
            plot_results(self.folder, self.rows)
        for name, path in {"results": self.folder / RESULTS_PNG, **(images or {})}.items():
            if path.is_file():
                self.tracking.image(name, path, int(self.rows[-1]["epoch"]) if self.rows else 0)
        self.tracking.close()


def write_results(folder: Path, rows: list[dict[str, Any]], plot: bool = True) -> None:
    """Write every row (columns: the union, in first-seen order) and redraw the plot (unless ``plot`` is false)."""
    if not rows:
        return
    write_csv(folder / RESULTS_CSV, rows)
    if plot:
        plot_results(folder, rows)


def read_results(folder: Path, up_to_epoch: int | None = None) -> list[dict[str, Any]]:
    path = folder / RESULTS_CSV
    if not path.is_file():
        return []
    with open_text(path, csv=True) as f:
        return [row for row in csv.DictReader(f) if up_to_epoch is None or int(row["epoch"]) <= up_to_epoch]


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _series(rows: list[dict[str, Any]], column: str) -> tuple[list[int], list[float]]:
    points = [(int(r["epoch"]), _number(r.get(column))) for r in rows]
    points = [(e, v) for e, v in points if v is not None and v == v]
    return [e for e, _ in points], [v for _, v in points]


def best_epoch(rows: list[dict[str, Any]]) -> tuple[int, float] | None:
    """The epoch with the highest validation mean dice (the one ``best.pt`` holds), and that dice."""
    epochs, dice = _series(rows, "val_dice_mean")
    if not dice:
        return None
    k = max(range(len(dice)), key=lambda i: (dice[i], -i))
    return epochs[k], dice[k]


def plot_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    """results.png: training and validation loss, each loss term, validation mean dice with the best epoch marked,
    and the learning rate, per (integer) epoch; below, each class's validation dice per epoch as a heatmap (the
    worst classes at the best epoch named in red)."""
    validated = any(_number(r.get("val_dice_mean")) is not None for r in rows)  # the heatmap needs a validation
    columns = dict.fromkeys(k for r in rows for k in r)
    classes = [k.removeprefix(DICE_PREFIX) for k in columns if _is_class_column(k)] if validated else []
    heat_height = max(1.6, 0.17 * len(classes) + 0.8) if classes else 0
    fig = Figure(figsize=(17, 3.8 + heat_height))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if classes else 1, 4, height_ratios=[3.8, heat_height] if classes else [1])
    axes = [fig.add_subplot(grid[0, k]) for k in range(4)]
    best = best_epoch(rows)
    ax = axes[0]
    for column, colour in (("train_loss", "tab:blue"), ("val_loss", "tab:red")):
        x, y = _series(rows, column)
        if y:
            ax.plot(x, y, marker="o", ms=3, color=colour, label=column)
    ax.legend(fontsize=7)
    ax.set_title("loss (training, validation)")
    terms = [
        c
        for c in dict.fromkeys(k for r in rows for k in r)
        if c.startswith("train_") and c != "train_loss" and c != "train_images_per_s"
    ]
    for column in terms:
        x, y = _series(rows, column)
        if y:
            axes[1].plot(x, y, marker=".", label=column.removeprefix("train_"))
    if terms:
        axes[1].legend(fontsize=7)
    axes[1].set_title("training loss terms")
    for column, colour in (("val_dice_mean", "tab:green"), ("val_dice_mean_tuned", "tab:olive")):
        x, y = _series(rows, column)
        if y:
            axes[2].plot(x, y, marker="o", ms=3, color=colour, label=column)
    if best is not None:
        axes[2].axvline(best[0], color="tab:gray", ls="--", lw=1)
        axes[2].plot(
            [best[0]], [best[1]], marker="*", ms=12, color="tab:red", label=f"best: epoch {best[0]} ({best[1]:.4f})"
        )
    if axes[2].get_legend_handles_labels()[0]:  # a run stopped before its first validation has nothing to show
        axes[2].legend(fontsize=7)
    axes[2].set_title("validation mean dice")
    x, y = _series(rows, "lr")
    axes[3].plot(x, y, color="tab:orange", marker=".")
    if y and all(v > 0 for v in y):
        axes[3].set_yscale("log")
    axes[3].set_title("learning rate")
    epochs = [int(r["epoch"]) for r in rows]
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)  # whole epochs, even for a single one
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if classes:
        _class_heatmap(fig.add_subplot(grid[1, :]), rows, classes, best)
    fig.suptitle(folder.as_posix())
    fig.tight_layout()
    with atomic_write(folder / RESULTS_PNG, "wb") as f:
        fig.savefig(f, format="png", dpi=90)


WORST_CLASSES_MARKED = 3


def _is_class_column(column: str) -> bool:
    return column.startswith(DICE_PREFIX) and not column.startswith(f"{DICE_PREFIX}mean")


def _class_heatmap(ax, rows: list[dict[str, Any]], classes: list[str], best: tuple[int, float] | None) -> None:
    """Each class's validation dice (rows) per validated epoch (columns), 0 to 1; the worst classes at the best
    epoch have red names."""
    validated = [r for r in rows if _number(r.get("val_dice_mean")) is not None]
    values = np.array(
        [[_number(r.get(f"{DICE_PREFIX}{c}")) or 0.0 for r in validated] for c in classes], np.float32
    ).reshape(len(classes), len(validated))
    epochs = [int(r["epoch"]) for r in validated]
    image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(classes)), classes, fontsize=6 if len(classes) > 12 else 8)
    step = max(1, len(epochs) // 30)
    ax.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]], fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_title("validation dice per class (worst at the best epoch in red)")
    fig = ax.get_figure()
    fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    if best is not None and epochs and best[0] in epochs:
        column = values[:, epochs.index(best[0])]
        for c in np.argsort(column, kind="stable")[: min(WORST_CLASSES_MARKED, len(classes) - 1 or 1)]:
            ax.get_yticklabels()[c].set_color("tab:red")


OVERLAY_IMAGES = 4


def worst_validation_images(
    predictor, cache, positions: list[int], threshold: float, settings, count: int = OVERLAY_IMAGES
) -> list[tuple[float, int, np.ndarray, np.ndarray]]:
    """The ``count`` validation images with the lowest mean dice, worst first (ties: cache order), as (dice,
    position, prediction, truth), both (C, S, S) bool inside the field of view; only these stay in memory."""
    from compkit.evaluation.metrics import dice_per_class
    from compkit.inference.predictor import predict_cached

    worst: list[tuple[float, int, np.ndarray, np.ndarray]] = []
    for i, prob in predict_cached(predictor, cache, positions, settings):
        pred, truth = prob > threshold, cache.mask(i).astype(bool)
        ignore = cache.ignore(i)
        if ignore is not None:
            pred &= ~ignore.astype(bool)
            truth &= ~ignore.astype(bool)
        worst.append((float(dice_per_class(pred, truth).mean()), i, pred, truth))
        worst = sorted(worst, key=lambda w: (w[0], w[1]))[:count]
    return worst


def validation_overlays(
    folder: Path, predictor, cache, positions: list[int], threshold: float, settings, classes
) -> Path:
    """``val_overlays.png``: the validation images the given model (the fold's best checkpoint) does worst on,
    worst first, each with its id and mean dice; every class in its own colour (prediction filled, label outlined,
    inside the field of view) and a legend, for people and trackers."""
    from matplotlib.patches import Patch

    from compkit.util.overlay import class_colours, overlay

    worst = worst_validation_images(predictor, cache, positions, threshold, settings)
    colours = class_colours(len(classes))
    n = max(len(worst), 1)
    fig, axes = subplots(1, n, figsize=(3.4 * n, 4.2), squeeze=False)
    for ax, (dice, i, pred, truth) in zip(axes[0], worst, strict=False):
        ax.imshow(overlay(cache.image(i), pred, colours, outline=truth))
        ax.set_title(f"{cache.image_ids[i]}\nmean dice {dice:.3f}", fontsize=8)
    for ax in axes[0]:
        ax.axis("off")
    handles = [Patch(color=colours[c] / 255, label=name) for c, name in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), max(4, 2 * n)), fontsize=7, frameon=False)
    fig.suptitle(
        f"validation, worst {len(worst)} of {len(positions)} images first (best checkpoint): prediction filled, "
        "label outlined",
        fontsize=9,
    )
    rows = -(-len(classes) // min(len(classes), max(4, 2 * n)))
    fig.tight_layout(rect=(0, min(0.45, 0.05 * rows + 0.02), 1, 0.95))
    path = folder / OVERLAYS_PNG
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    return path


def validation_columns(classes, dice) -> dict[str, Any]:
    """A results row's validation columns from a :class:`compkit.inference.predictor.ValidationDice` (None: not validated
    this epoch): ``val_dice_<class>``, ``val_dice_mean`` and, where measured, ``val_dice_mean_tuned``."""
    if dice is None:
        return {**{f"val_dice_{c}": "" for c in classes}, "val_dice_mean": ""}
    row: dict[str, Any] = {f"val_dice_{c}": round(float(d), 6) for c, d in zip(classes, dice.per_class, strict=True)}
    row["val_dice_mean"] = round(dice.mean, 6)
    if dice.loss is not None:
        row["val_loss"] = round(dice.loss, 6)
    if dice.tuned is not None:
        row["val_dice_mean_tuned"] = round(float(dice.tuned.mean()), 6)
    return row


CV_JSON = "cv.json"
CV_CSV = "cv.csv"


def _fold_summary(folder: Path) -> dict[str, Any] | None:
    """A fold's best validation dice, its epoch, the epochs trained and each class's dice at that epoch (from
    ``results.csv``; the run record's figures for a family that validates outside it); None before any epoch."""
    rows = read_results(folder)
    record = read_run_record(folder)
    best = best_epoch(rows)
    if best is None and "best_dice" not in record:
        return None
    summary: dict[str, Any] = {"fold": fold_number(folder)}
    epochs = [int(r["epoch"]) for r in rows]
    if best is not None:
        row = next(r for r in rows if int(r["epoch"]) == best[0])
        per_class = {k.removeprefix(DICE_PREFIX): _number(v) for k, v in row.items() if _is_class_column(k)}
        summary.update(best_dice=best[1], best_epoch=best[0], epochs=max(epochs))
        summary.update({f"dice_{c}": d for c, d in per_class.items() if d is not None})
    else:
        summary.update(best_dice=float(record["best_dice"]), best_epoch=None, epochs=record.get("epochs"))
    return summary


def cross_validation(run_dir: Path) -> dict[str, Any]:
    """Every trained fold of ``run_dir`` (:func:`_fold_summary`), and the mean and standard deviation over folds of
    each figure: what ``cv.json`` and ``cv.csv`` hold."""
    folds = [s for s in (_fold_summary(f) for f in fold_dirs(run_dir)) if s is not None]
    figures = [k for k in dict.fromkeys(k for s in folds for k in s) if k not in ("fold", "best_epoch")]
    stats: dict[str, dict[str, Any]] = {"mean": {}, "std": {}}
    for key in figures:
        values = [float(s[key]) for s in folds if s.get(key) is not None]
        if values:
            stats["mean"][key] = round(float(np.mean(values)), 6)
            stats["std"][key] = round(float(np.std(values)), 6)
    return {"run": run_dir.name, "folds": folds, **stats}


def write_cross_validation(run_dir: Path) -> dict[str, Any]:
    """``cv.json`` and ``cv.csv`` in the run folder (one row per fold, then the mean and std rows); the summary."""
    summary = cross_validation(run_dir)
    write_json(run_dir / CV_JSON, summary)
    rows = [*summary["folds"], {"fold": "mean", **summary["mean"]}, {"fold": "std", **summary["std"]}]
    write_csv(run_dir / CV_CSV, rows)
    return summary


def worst_class(fold: dict[str, Any]) -> tuple[str, float] | None:
    """The class with the lowest dice at a fold's best epoch (from :func:`cross_validation`'s rows)."""
    per_class = {k.removeprefix("dice_"): v for k, v in fold.items() if k.startswith("dice_")}
    if not per_class:
        return None
    name = min(per_class, key=lambda c: per_class[c])
    return name, per_class[name]
