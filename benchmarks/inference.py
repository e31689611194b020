"""Prediction speed: `compkit predict` (torch eager, and onnxruntime through `--engine onnx`) against the ceiling of a
plain loop over the same network, batch and TTA on preloaded tensors, at equal outputs, in the same run.

Per recipe (default: `tiny` at 192 px and `resnet34`'s UNet++ at 512 px, their batch and TTA): synthetic hand bones
at the recipe's size, fold 0 trained for one epoch (the weights' values do not change the speed), exported with
`compkit export onnx`, then the test images predicted by

- `compkit predict` whole (the command: loading the fold, reading the cache, writing the store), and its loop
  (`write_store`: what the command spends per image);
- a plain PyTorch loop: the preloaded, normalised images through the model in the recipe's batches, each TTA view
  (hflip: the image and its mirror) averaged in logit space, sigmoid: the ceiling compkit's loop should reach
  (goal: ratio >= 0.9);
- the same loops through onnxruntime (goal: >= 1.5x torch eager on 2 CPU cores);
- optionally (`--int8`) onnxruntime on the model quantised to int8 (dynamic quantisation), with the change of the
  validation fold's dice.

Every output is compared with the plain torch loop's (max |Δp|). Each figure is the best of ``--repeat`` runs.

Run: .venv/bin/python benchmarks/inference.py [--recipes tiny resnet34] [--images 16] [--repeat 3] [--int8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from compkit.data import open_dataset
from compkit.evaluation.metrics import DiceMeter
from compkit.families import load_fold
from compkit.inference.onnx_engine import ONNX_FILE, OnnxNetwork
from compkit.inference.predictor import CachedImages, inference_settings, write_store
from compkit.inference.views import TTA_VIEWS
from compkit.stages.export import export_onnx
from compkit.stages.predict import predict
from compkit.stages.split import split
from compkit.stages.synth import synth
from compkit.stages.train import train
from compkit.training.preprocess import Normaliser, cache_for
from compkit.training.recipe import load_recipe

FAST_TRAINING = ["train.epochs=1", "model.encoder_weights=null", "train.batch_size=2", "train.workers=0"]


def best_seconds(run, repeat: int) -> float:
    """The fastest of ``repeat`` timed calls of ``run`` (after one untimed warm-up call)."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def plain_loop(network, images: torch.Tensor, batch: int, tta: str) -> np.ndarray:
    """What a competitor's notebook does on preloaded tensors: each batch and its TTA views through the network,
    logits averaged, sigmoid."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = images[start : start + batch]
            views = [inverse(network(forward(x))) for forward, inverse in TTA_VIEWS[tta]]
            out.append(torch.sigmoid(torch.stack(views).mean(0)).numpy())
    return np.concatenate(out)


def prepare_run(recipe_name: str, root: Path, images: int, quiet: Console) -> tuple[Path, Path]:
    """Synthetic data at the recipe's size and fold 0 trained for an epoch; returns (data, run)."""
    size = load_recipe(recipe_name).data.image_size
    data = root / "data"
    synth(data, patients=6, test_patients=max(1, images // 2), size=size, seed=0, console=quiet)
    split(data, folds=2, seed=0, console=quiet)
    train(recipe_name, data=data, fold="0", overrides=FAST_TRAINING, out=root / "runs", console=quiet)
    return data, root / "runs" / recipe_name


def measure(recipe_name: str, count: int, repeat: int, int8: bool, console: Console) -> Table:
    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with console.status(f"{recipe_name}: training fold 0 for an epoch, exporting it"):
            data, run = prepare_run(recipe_name, root, count, quiet)
            export_onnx(run, fold="0", console=quiet)
        folder = run / "fold0"
        dataset = open_dataset(data, "test")
        cpu = torch.device("cpu")
        torch_fold = load_fold(folder, dataset.classes, cpu)
        onnx_fold = load_fold(folder, dataset.classes, cpu, engine="onnx")
        recipe = torch_fold.recipe
        settings = inference_settings(recipe)
        cache = cache_for(dataset, recipe, quiet)
        positions = list(range(len(dataset)))[:count]
        n = len(positions)
        pixels = np.stack([cache.image(i) for i in positions])
        tensors = Normaliser(recipe).batch(pixels)
        network = torch_fold.predictor.model
        session = OnnxNetwork(folder / ONNX_FILE, cpu)
        batch, tta = settings.batch_size, settings.tta

        results: dict[str, tuple[float, np.ndarray | None]] = {}
        with console.status(f"{recipe_name}: timing {n} images, batch {batch}, tta {tta}"):
            reference = plain_loop(network, tensors, batch, tta)
            results["plain PyTorch loop (preloaded tensors)"] = (
                best_seconds(lambda: plain_loop(network, tensors, batch, tta), repeat),
                reference,
            )
            images = CachedImages(dataset, cache, positions)
            for label, fold in (("torch", torch_fold), ("onnx", onnx_fold)):
                store = root / f"loop-{label}"
                results[f"compkit predict loop, {label}"] = (
                    best_seconds(lambda f=fold, s=store: write_store(f.predictor, images, s, settings), repeat),
                    None,
                )
                out = root / f"predict-{label}"
                results[f"compkit predict (whole command), {label}"] = (
                    best_seconds(
                        lambda label=label, out=out: predict(
                            [folder], device="cpu", out=out, exist_ok=True, engine=label, console=quiet
                        ),
                        repeat,
                    ),
                    None,
                )
            ort_probs = plain_loop(session, tensors, batch, tta)
            results["plain onnxruntime loop (preloaded tensors)"] = (
                best_seconds(lambda: plain_loop(session, tensors, batch, tta), repeat),
                ort_probs,
            )
            compkit_torch = np.concatenate(
                [torch_fold.predictor.predict(pixels[i : i + batch], settings) for i in range(0, n, batch)]
            )
            compkit_onnx = np.concatenate(
                [onnx_fold.predictor.predict(pixels[i : i + batch], settings) for i in range(0, n, batch)]
            )
            differences = {
                "compkit predict loop, torch": np.abs(compkit_torch - reference).max(),
                "compkit predict (whole command), torch": np.abs(compkit_torch - reference).max(),
                "compkit predict loop, onnx": np.abs(compkit_onnx - reference).max(),
                "compkit predict (whole command), onnx": np.abs(compkit_onnx - reference).max(),
                "plain onnxruntime loop (preloaded tensors)": np.abs(ort_probs - reference).max(),
                "plain PyTorch loop (preloaded tensors)": 0.0,
            }
            if int8:
                results.update(quantised(folder, data, recipe, tensors, batch, tta, repeat, reference))

        size = recipe.data.image_size
        table = Table(
            title=f"{recipe_name}: {recipe.model.arch}/{recipe.model.encoder} at {size} px, {n} images, batch {batch}, "
            f"tta {tta}, {torch.get_num_threads()} threads"
        )
        for column in ("path", "images/s", "vs plain PyTorch", "max |Δp| vs plain PyTorch"):
            table.add_column(column, justify="left" if column == "path" else "right")
        ceiling = n / results["plain PyTorch loop (preloaded tensors)"][0]
        for label, (seconds, _) in results.items():
            rate = n / seconds
            difference = differences.get(label)
            shown = f"{difference:.1e}" if difference is not None else "(see below)"
            table.add_row(label, f"{rate:.2f}", f"{rate / ceiling:.2f}", shown)
        return table


def quantised(folder: Path, data: Path, recipe, tensors, batch, tta, repeat, reference) -> dict:
    """onnxruntime on the int8 model (dynamic quantisation): its speed on the test images, and the dice change it
    causes on the fold's validation images."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from compkit.data.splits import load_splits

    int8_path = folder / "model.int8.onnx"
    quantize_dynamic(str(folder / ONNX_FILE), str(int8_path), weight_type=QuantType.QInt8)
    cpu = torch.device("cpu")
    fp32, int8 = OnnxNetwork(folder / ONNX_FILE, cpu), OnnxNetwork(int8_path, cpu)
    probs = plain_loop(int8, tensors, batch, tta)
    seconds = best_seconds(lambda: plain_loop(int8, tensors, batch, tta), repeat)
    train_set = open_dataset(data, "train")
    cache = cache_for(train_set, recipe, Console(quiet=True))
    val = set(load_splits(data)["folds"][0]["val"])
    positions = [i for i, s in enumerate(train_set.samples) if s.image_id in val]
    val_tensors = Normaliser(recipe).batch(np.stack([cache.image(i) for i in positions]))
    dice = {}
    for name, network in (("fp32", fp32), ("int8", int8)):
        meter = DiceMeter(cache.classes)
        for k, p in zip(positions, plain_loop(network, val_tensors, batch, tta), strict=True):
            meter.update(p > 0.5, cache.mask(k))
        dice[name] = float(meter.per_class().mean())
    label = (
        f"plain onnxruntime loop, int8 (validation dice {dice['int8']:.4f} vs {dice['fp32']:.4f}; "
        f"max |Δp| {np.abs(probs - reference).max():.1e})"
    )
    return {label: (seconds, probs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["tiny", "resnet34"])
    parser.add_argument("--images", type=int, default=16, help="test images predicted per figure")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (the best is kept)")
    parser.add_argument("--int8", action="store_true", help="also onnxruntime on the int8-quantised model")
    args = parser.parse_args()
    console = Console()
    for recipe_name in args.recipes:
        console.print(measure(recipe_name, args.images, args.repeat, args.int8, console))


if __name__ == "__main__":
    main()
