"""Training speed: compkit's training loop, from a real `compkit train` run, against the compute ceiling of a plain
PyTorch loop with the same model, batch, loss and optimizer on random tensors, in the same run.

Per recipe (default `tiny` at 192 px, batch 2; and `resnet34`'s UNet++ at its settings, batch 8 unless
``--batch``): synthetic hand bones at the recipe's size in 5 folds, fold 0 trained for ``--epochs`` epochs, and
the figures read from its results.csv:

- compkit's loop: ``train_images_per_s`` (data loading, augmentation, forward, loss, backward, optimizer step,
  schedule, progress);
- compkit's epoch: the training images over the epoch's ``seconds`` (the loop plus validation, the results row,
  the checkpoint);
- the plain loop: random (batch, 3, size, size) tensors and random 0/1 masks through the same network (smp,
  built as the recipe builds it), the recipe's loss (compkit's BCE + Dice) and optimizer (timm's AdamW), steps
  timed after warm-up ones.

The first epoch is left out of compkit's figures (it warms up allocators and caches); goal: loop >= 0.95 of the
plain loop on CPU.

Run: .venv/bin/python benchmarks/training.py [--recipes tiny resnet34] [--epochs 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from compkit.stages.split import split
from compkit.stages.synth import synth
from compkit.stages.train import train
from compkit.training.losses import create_loss
from compkit.training.models import create_model
from compkit.training.optimization import create_optimizer
from compkit.training.recipe import load_recipe

CLASSES = 29  # the synthetic hand bones


def plain_loop(recipe, steps: int, warmup: int = 3) -> float:
    """Images/s of forward, loss, backward and an optimizer step on random tensors (the compute ceiling)."""
    torch.manual_seed(0)
    model = create_model(recipe.model, CLASSES, pretrained=False).train()
    optimizer = create_optimizer(model, recipe.optim)
    criterion = create_loss(recipe.loss)
    batch, size = recipe.train.batch_size, recipe.data.image_size
    x = torch.randn(batch, 3, size, size)
    y = (torch.rand(batch, CLASSES, size, size) > 0.9).float()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def compkit_loop(recipe_name: str, overrides: list[str], epochs: int, patients: int, root: Path) -> dict:
    """Train fold 0 of 5 for ``epochs`` epochs; its loop's and its epochs' images/s after the first epoch."""
    quiet = Console(quiet=True)
    size = load_recipe(recipe_name, overrides).data.image_size
    data = root / "data"
    synth(data, patients=patients, test_patients=1, size=size, seed=0, console=quiet)
    split(data, folds=5, seed=0, console=quiet)
    started = time.perf_counter()
    train(recipe_name, data=data, fold="0", overrides=[*overrides, f"train.epochs={epochs}"], out=root, console=quiet)
    wall = time.perf_counter() - started
    with open(root / recipe_name / "fold0" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[1:]  # the first epoch warms up
    splits = json.loads((data / "splits.json").read_text())
    images = len(splits["folds"][0]["train"])
    return {
        "loop": sum(float(r["train_images_per_s"]) for r in rows) / len(rows),
        "epoch": images * len(rows) / sum(float(r["seconds"]) for r in rows),
        "images": images,
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["tiny", "resnet34"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of the plain loop")
    parser.add_argument("--patients", type=int, default=20, help="synthetic patients (5 folds: 4/5 train)")
    parser.add_argument("--batch", type=int, default=None, help="batch size for every recipe (default: its own)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe overrides (KEY=VALUE)")
    args = parser.parse_args()
    console = Console()
    table = Table(title=f"training images/s on {torch.get_num_threads()} CPU threads")
    for column in ("recipe", "size, batch", "plain loop", "compkit loop", "ratio", "compkit epoch", "ratio"):
        table.add_column(column, justify="left" if column == "recipe" else "right")
    for recipe_name in args.recipes:
        overrides = ["model.encoder_weights=null", "train.early_stop=null", *args.overrides]
        if args.batch:
            overrides.append(f"train.batch_size={args.batch}")
        recipe = load_recipe(recipe_name, overrides)
        status = console.status(f"{recipe_name}: compkit train, {args.epochs} epochs")
        with tempfile.TemporaryDirectory() as tmp, status:
            measured = compkit_loop(recipe_name, overrides, args.epochs, args.patients, Path(tmp))
        with console.status(f"{recipe_name}: the plain loop, {args.steps} steps"):
            ceiling = plain_loop(recipe, args.steps)
        table.add_row(
            recipe_name,
            f"{recipe.data.image_size} px, {recipe.train.batch_size}",
            f"{ceiling:.2f}",
            f"{measured['loop']:.2f}",
            f"{measured['loop'] / ceiling:.2f}",
            f"{measured['epoch']:.2f}",
            f"{measured['epoch'] / ceiling:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
