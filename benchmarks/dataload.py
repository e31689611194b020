"""Data loading speed: compkit's preprocessing cache vs the competition baseline's per-sample loading
(decode the PNG, rasterise the polygons at full size, resize image and mask), same samples, same run.

Run: .venv/bin/python benchmarks/dataload.py [--size 1024] [--train-size 512] [--patients 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from compkit.data import open_dataset
from compkit.data.cache import build_cache, load_sample
from compkit.stages.synth import synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=2048, help="synthetic image size (the real data: 2048)")
    parser.add_argument("--train-size", type=int, default=512, help="training resolution")
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="passes over the data for the cached loader")
    args = parser.parse_args()
    console = Console()
    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synth(root, patients=args.patients, test_patients=0, size=args.size, seed=0, console=quiet)
        dataset = open_dataset(root)
        n = len(dataset)

        start = time.perf_counter()
        for sample in dataset.samples:
            image, mask, _ = load_sample(dataset, sample, args.train_size)
        baseline = n / (time.perf_counter() - start)

        start = time.perf_counter()
        cache = build_cache(dataset, args.train_size, console=quiet)
        build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.epochs):
            for i in range(n):
                cache.image(i), cache.mask(i)  # what an epoch reads
        cached = args.epochs * n / (time.perf_counter() - start)
        for i, sample in enumerate(dataset.samples[:4]):
            fresh_image, fresh_mask, _ = load_sample(dataset, sample, args.train_size)
            assert np.array_equal(cache.image(i), fresh_image) and np.array_equal(cache.mask(i), fresh_mask)

    table = Table(title=f"{n} samples of {args.size} px -> {args.train_size} px, 29 classes")
    for column in ("loader", "samples/s"):
        table.add_column(column, justify="right")
    table.add_row("baseline (decode + rasterise + resize)", f"{baseline:.1f}")
    table.add_row("compkit cache (memmap + unpackbits)", f"{cached:.1f}")
    console.print(table)
    print(f"cache build (one-off): {build_seconds:.1f} s for {n} samples")
    print(f"baseline {baseline:.1f} samples/s, cache {cached:.1f} samples/s, ratio {cached / baseline:.1f}x")


if __name__ == "__main__":
    main()
