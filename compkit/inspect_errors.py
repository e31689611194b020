"""``compkit inspect``: where a model is wrong -> ``reports/inspect/inspect.html`` and ``inspect.json``.

Per-class dice of a run's or ensemble's out-of-fold predictions (``--split val``) or of its test predictions
against local ground truth (``--split test``), the worst images with overlays coloured by error (missed pixels
yellow, extra pixels green, as the seed team drew them), and the class pairs most often confused: pixels where
one class is missed while another is predicted in its place.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from compkit.data.cache import build_cache
from compkit.data.labelled import open_labelled
from compkit.errors import CompkitError
from compkit.fileio import atomic_write, write_json
from compkit.members import check_member_split, dataset_root, open_stores_member
from compkit.metrics import DiceMeter, dice_table
from compkit.plots import array_png
from compkit.runs import output_folder
from compkit.entry import callable_stage

MISSED = np.array([255, 220, 0], np.float32)  # yellow
EXTRA = np.array([0, 200, 70], np.float32)  # green
WORST = 12


def error_overlay(image_rgb: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    out = image_rgb.astype(np.float32) * 0.8
    missed = (truth & ~pred).any(axis=0)
    extra = (pred & ~truth).any(axis=0)
    out[missed] = 0.3 * out[missed] + 0.7 * MISSED
    out[extra] = 0.3 * out[extra] + 0.7 * EXTRA
    return np.clip(out, 0, 255).astype(np.uint8)


def inspect(
    source: str | Path,
    split: str = "val",
    data: str | Path | None = None,
    gt: str | Path | None = None,
    out: str | Path | None = None,
    exist_ok: bool = False,
    console: Console | None = None,
) -> Path:
    console = console or Console()
    member = open_stores_member(source, "inspect")
    root = dataset_root(member, data)
    if split == "val":
        index = member.oof_index()
        if not index:
            raise CompkitError(source, "no out-of-fold stores (oof/): train with compkit or `compkit predict --split val`")
        check_member_split(member, root)
        read = {i: (lambda i=i: index[i].read(i)) for i in index}
        box_of = {i: index[i].box(i) for i in index}
        dataset = open_labelled(root, "train")
    elif split == "test":
        read = {i: (lambda i=i: member.test_probs(i)) for i in member.image_ids}
        box_of = {i: member.box(i) for i in member.image_ids}
        dataset = open_labelled(root, "test", gt)
    else:
        raise CompkitError("--split", f"must be val or test, got {split!r}")
    resolution = member.resolution if split == "test" else next(iter(index.values())).resolution
    cache = build_cache(dataset, resolution[0], console=console, crop=any(b is not None for b in box_of.values()))
    classes = list(dataset.classes)
    thresholds = member.threshold_vector()[:, None, None]
    meter = DiceMeter(dataset.classes)
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    scored: list[tuple[float, str]] = []
    ids = [i for i in cache.image_ids if i in read]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("comparing with the truth", total=len(ids))
        for image_id in ids:
            truth = cache.mask(cache.position[image_id]).astype(bool)
            pred = read[image_id]() > thresholds
            scored.append((float(meter.update(pred, truth).mean()), image_id))
            missed, extra = truth & ~pred, pred & ~truth
            both = missed.any(axis=0) & extra.any(axis=0)
            if both.any():
                confusion += (missed[:, both].astype(np.int64) @ extra[:, both].T.astype(np.int64))
            progress.advance(task)
    np.fill_diagonal(confusion, 0)
    pairs = sorted(
        ((int(confusion[a, b]), classes[a], classes[b]) for a in range(len(classes)) for b in range(len(classes)) if confusion[a, b]), reverse=True
    )[:10]
    worst = sorted(scored)[:WORST]
    gallery = []
    for dice, image_id in worst:
        i = cache.position[image_id]
        pred = read[image_id]() > thresholds
        gallery.append((f"{image_id}: dice {dice:.3f}", array_png(error_overlay(cache.image(i), pred, cache.mask(i).astype(bool)))))

    per_class = meter.per_class()
    report = {
        "source": str(source),
        "split": split,
        "images": len(ids),
        "mean_dice": float(per_class.mean()),
        "per_class": {c: float(d) for c, d in zip(classes, per_class, strict=True)},
        "worst_images": [{"image": i, "dice": d} for d, i in worst],
        "confusions": [{"missed": a, "predicted_instead": b, "pixels": n} for n, a, b in pairs],
    }
    out = output_folder(Path(out or "reports/inspect"), explicit=out is not None, exist_ok=exist_ok)
    write_json(out / "inspect.json", report)
    rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{d:.4f}</td></tr>" for c, d in report["per_class"].items())
    confusions = "".join(f"<li>{html.escape(a)} missed where {html.escape(b)} was predicted: {n:,} px</li>" for n, a, b in pairs) or "<li>none</li>"
    cards = "".join(f'<figure><img alt="{html.escape(c)}" src="data:image/png;base64,{b}"><figcaption>{html.escape(c)}</figcaption></figure>' for c, b in gallery)
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>compkit inspect</title>
<style>body{{font-family:sans-serif;margin:24px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 8px}}
.gallery{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0}} figcaption{{font-size:11px}} img{{width:300px}}</style></head><body>
<h1>compkit inspect: {html.escape(str(source))} ({split})</h1>
<p>{len(ids)} images, mean dice {report['mean_dice']:.4f}. Overlays: <b style="color:#c9a800">missed</b> pixels yellow, <b style="color:#00a040">extra</b> pixels green.</p>
<h2>worst images</h2><div class="gallery">{cards}</div>
<h2>confused at overlaps</h2><ul>{confusions}</ul>
<h2>dice per class</h2><table><tr><th>class</th><th>dice</th></tr>{rows}</table></body></html>"""
    with atomic_write(out / "inspect.html", "w", encoding="utf-8") as f:
        f.write(page)
    console.print(dice_table(dataset.classes, per_class, f"{Path(source).name} ({split}): dice per class"))
    table = Table(title="worst images")
    table.add_column("image")
    table.add_column("dice", justify="right")
    for d, i in worst[:5]:
        table.add_row(i, f"{d:.4f}")
    console.print(table)
    console.print(f"[green]wrote[/green] {out / 'inspect.html'} (mean dice {report['mean_dice']:.4f})")
    return out / "inspect.html"


callable_stage(__name__, inspect)
