"""``results.csv`` (one row per epoch) and ``results.png`` of a fold folder: one writer for every family."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)

from compkit.fileio import atomic_write  # noqa: E402

RESULTS_CSV = "results.csv"
RESULTS_PNG = "results.png"


def write_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Write every row (columns: the union, in first-seen order) and redraw the plot."""
    if not rows:
        return
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with atomic_write(folder / RESULTS_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(rows)
    plot_results(folder, rows)


def read_results(folder: Path, up_to_epoch: int | None = None) -> list[dict[str, Any]]:
    path = folder / RESULTS_CSV
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if up_to_epoch is None or int(row["epoch"]) <= up_to_epoch]


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    """results.png: training loss, validation mean dice and learning rate per epoch."""
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [_number(r.get("train_loss")) for r in rows], marker="o", ms=3)
    axes[0].set_title("training loss")
    for column, colour in (("val_dice_mean", "tab:green"), ("val_dice_mean_tuned", "tab:olive")):
        val = [(int(r["epoch"]), _number(r.get(column))) for r in rows if _number(r.get(column)) is not None]
        if val:
            axes[1].plot(*zip(*val, strict=True), marker="o", ms=3, color=colour, label=column)
    if any(_number(r.get("val_dice_mean_tuned")) is not None for r in rows):
        axes[1].legend()
    axes[1].set_title("validation mean dice")
    axes[2].plot(epochs, [_number(r.get("lr")) for r in rows], color="tab:orange")
    if all((_number(r.get("lr")) or 0) > 0 for r in rows):
        axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(folder.as_posix())
    fig.tight_layout()
    with atomic_write(folder / RESULTS_PNG, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def validation_columns(classes, dice) -> dict[str, Any]:
    """A results row's validation columns from a :class:`compkit.prediction.ValidationDice` (None: not validated
    this epoch): ``val_dice_<class>``, ``val_dice_mean`` and, where measured, ``val_dice_mean_tuned``."""
    if dice is None:
        return {**{f"val_dice_{c}": "" for c in classes}, "val_dice_mean": ""}
    row: dict[str, Any] = {f"val_dice_{c}": round(float(d), 6) for c, d in zip(classes, dice.per_class, strict=True)}
    row["val_dice_mean"] = round(dice.mean, 6)
    if dice.tuned is not None:
        row["val_dice_mean_tuned"] = round(float(dice.tuned.mean()), 6)
    return row
