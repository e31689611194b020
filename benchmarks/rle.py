"""RLE speed: compkit's encoder/decoder vs the competition baseline's, on real-shaped 2048 x 2048 bone masks.

Run: .venv/bin/python benchmarks/rle.py [--images 4] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from baselines import baseline_decode, baseline_encode  # benchmarks/ is on sys.path when run as a script
from rich.console import Console
from rich.table import Table

from compkit.data import open_dataset
from compkit.stages.synth import synth
from compkit.submission import rle


def per_mask_ms(fn, items, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        times.append((time.perf_counter() - start) / len(items) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=4, help="synthetic 2048 px images (29 masks each)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synth(root, patients=max(1, args.images // 2), test_patients=0, size=2048, seed=0, console=Console(quiet=True))
        dataset = open_dataset(root)
        masks = [channel for s in dataset.samples[: args.images] for channel in dataset.read_mask(s)]
    shape = masks[0].shape
    texts = [rle.encode(m) for m in masks]
    assert all(baseline_encode(m) == t for m, t in zip(masks, texts, strict=True)), "encoders disagree"
    assert all((baseline_decode(t, *shape) == rle.decode(t, shape)).all() for t in texts[:29]), "decoders disagree"

    rows = [
        (
            "encode (row-major)",
            per_mask_ms(baseline_encode, masks, args.repeat),
            per_mask_ms(rle.encode, masks, args.repeat),
        ),
        (
            "decode (row-major)",
            per_mask_ms(lambda t: baseline_decode(t, *shape), texts, args.repeat),
            per_mask_ms(lambda t: rle.decode(t, shape), texts, args.repeat),
        ),
    ]
    table = Table(title=f"RLE on {len(masks)} bone masks of {shape[0]} x {shape[1]} px (median of {args.repeat} runs)")
    for name in ("operation", "baseline ms/mask", "compkit ms/mask", "speed-up"):
        table.add_column(name, justify="right")
    for name, base, ours in rows:
        table.add_row(name, f"{base:.2f}", f"{ours:.2f}", f"{base / ours:.1f}x")
    console.print(table)
    for name, base, ours in rows:
        print(f"{name}: baseline {base:.2f} ms, compkit {ours:.2f} ms, ratio {base / ours:.1f}x")


if __name__ == "__main__":
    main()
