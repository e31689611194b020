"""Ensemble + submit throughput and memory: compkit's streaming path vs a naive reference, same stores, same run.

Builds 5 member stores of M test images x 29 classes at 512 px (probabilities from the synthetic ground truth,
blurred and perturbed per member), then times `ensemble` (soft) + `submit` to 2048 x 2048 masks, for each M. The
naive reference loads every member into memory as float32, averages, upsamples with torch and encodes with the
competition baseline's RLE. Each path runs in its own process so that its peak RSS is its own.

Run: .venv/bin/python benchmarks/ensemble.py [--images 50 200] [--members 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from baselines import baseline_encode  # benchmarks/ is on sys.path when run as a script


def build(root: Path, images: int, members: int, size: int, image_size: int) -> None:
    import cv2
    from rich.console import Console

    from compkit.data.cache import resize_mask
    from compkit.data.labelled import open_labelled
    from compkit.stages.synth import synth
    from compkit.stores.probabilities import StoreWriter

    data = root / "data"
    synth(data, patients=1, test_patients=(images + 1) // 2, size=image_size, seed=0, console=Console(quiet=True))
    test = open_labelled(data, "test")
    samples = test.samples[:images]
    writers = [StoreWriter(root / f"member{m}", test.classes, (size, size)) for m in range(members)]
    rng = np.random.default_rng(0)
    for sample in samples:
        truth = resize_mask(test.read_mask(sample), size).astype(np.float32)
        blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 1.5) for c in truth])
        for w in writers:
            noise = rng.normal(0, 0.05, size=(1, size, size)).astype(np.float32)
            w.write(sample.image_id, np.clip(blurred + noise, 0, 1), (image_size, image_size))
    for w in writers:
        w.close()
    # Only the first M test images are predicted: keep the test set to those.
    keep = {s.image_path for s in samples}
    for path in (data / "test" / "DCM").rglob("*.png"):
        if path not in keep:
            path.unlink()


def run_compkit(root: Path, members: int) -> dict:
    from rich.console import Console

    from compkit.stages.ensemble import ensemble
    from compkit.stages.submit import submit

    quiet = Console(quiet=True)
    start = time.perf_counter()
    ens = ensemble(
        [root / f"member{m}" for m in range(members)], name="bench", data=root / "data", out=root / "ens", console=quiet
    )
    out = submit(ens, out=root / "compkit.csv", console=quiet)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "csv": str(out)}


def run_naive(root: Path, members: int) -> dict:
    import torch
    import torch.nn.functional as F

    from compkit.data import open_dataset
    from compkit.stores.probabilities import Store

    start = time.perf_counter()
    stores = [Store(root / f"member{m}") for m in range(members)]
    test = open_dataset(root / "data", "test")
    ids = [s.image_id for s in test.samples]
    everything = np.stack([np.stack([s.read(i) for i in ids]) for s in stores])  # (members, M, C, h, w) float32
    mean = torch.from_numpy(everything.mean(axis=0))
    with open(root / "naive.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image_name", "class", "rle"))
        for k, sample in enumerate(test.samples):
            h, w = stores[0].original_size(sample.image_id)
            up = F.interpolate(mean[k : k + 1], size=(h, w), mode="bilinear", align_corners=False)[0]
            masks = (up > 0.5).numpy().astype(np.uint8)
            for name, m in zip(test.classes, masks, strict=True):
                writer.writerow((sample.image_name, name, baseline_encode(m)))
    return {"seconds": time.perf_counter() - start, "csv": str(root / "naive.csv")}


def child(args: argparse.Namespace) -> None:
    root = Path(args.root)
    result = (run_compkit if args.child == "compkit" else run_naive)(root, args.members)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(which: str, root: Path, members: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", which, "--root", str(root), "--members", str(members)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def mask_agreement(a: str, b: str, shape: tuple[int, int]) -> float:
    """Mean dice between the two submissions' masks, row by row (cv2 and torch upsampling differ at edges)."""
    from compkit.evaluation.metrics import dice_from_counts
    from compkit.submission import rle

    with open(a) as fa, open(b) as fb:
        ra, rb = list(csv.reader(fa))[1:], list(csv.reader(fb))[1:]
    scores = []
    for x, y in zip(ra, rb, strict=True):
        ma, mb = rle.decode(x[2], shape).astype(bool), rle.decode(y[2], shape).astype(bool)
        scores.append(dice_from_counts(np.count_nonzero(ma & mb), np.count_nonzero(ma), np.count_nonzero(mb)))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--size", type=int, default=512, help="store resolution")
    parser.add_argument("--image-size", type=int, default=2048, help="original image size (submission masks)")
    parser.add_argument("--child", choices=["compkit", "naive"])
    parser.add_argument("--root")
    args = parser.parse_args()
    if args.child:
        return child(args)

    from rich.console import Console
    from rich.table import Table

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    rows = []
    for m in args.images:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            build(root, m, args.members, args.size, args.image_size)
            ours = measure("compkit", root, args.members)
            need = args.members * m * 29 * args.size * args.size * 4
            if need < 0.6 * memory:
                naive = measure("naive", root, args.members)
                agreement = mask_agreement(ours["csv"], naive["csv"], (args.image_size, args.image_size))
            else:
                naive, agreement = None, None
            rows.append((m, ours, naive, need, agreement))

    table = Table(
        title=f"ensemble ({args.members} members, soft) + submit, {args.size} px stores -> {args.image_size} px masks"
    )
    for column in (
        "images",
        "compkit img/s",
        "compkit peak RSS",
        "naive img/s",
        "naive peak RSS",
        "speed-up",
        "mask dice vs naive",
    ):
        table.add_column(column, justify="right")
    for m, ours, naive, need, agreement in rows:
        if naive:
            table.add_row(
                str(m),
                f"{m / ours['seconds']:.2f}",
                f"{ours['peak_rss_mb']:.0f} MB",
                f"{m / naive['seconds']:.2f}",
                f"{naive['peak_rss_mb']:.0f} MB",
                f"{naive['seconds'] / ours['seconds']:.1f}x",
                f"{agreement:.4f}",
            )
        else:
            table.add_row(
                str(m),
                f"{m / ours['seconds']:.2f}",
                f"{ours['peak_rss_mb']:.0f} MB",
                "-",
                f"needs > {need / 2**30:.0f} GB: skipped",
                "-",
                "-",
            )
    Console().print(table)
    for m, ours, naive, _, _ in rows:
        line = f"M={m}: compkit {m / ours['seconds']:.2f} img/s, peak {ours['peak_rss_mb']:.0f} MB"
        if naive:
            line += f"; naive {m / naive['seconds']:.2f} img/s, peak {naive['peak_rss_mb']:.0f} MB; ratio {naive['seconds'] / ours['seconds']:.1f}x"
        print(line)


if __name__ == "__main__":
    main()
