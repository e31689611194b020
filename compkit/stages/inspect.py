"""``compkit inspect``: where a model is wrong -> ``reports/inspect/inspect.html`` and ``inspect.json``.

Per-class dice of a run's or ensemble's out-of-fold predictions (``--split val``) or of its test predictions
against local ground truth (``--split test``), as a sorted bar chart; the worst image-class pairs, one tile each,
cropped to the class (correct pixels green, missed yellow, extra magenta, the truth's outline cyan: per class the
three never overlap, so neither error hides the other); and the class pairs confused where it matters: pixels of a
class missed while another is predicted in their place, listed when they reach a share of the class's area.

Predictions are thresholded and postprocessed as ``compkit submit`` does, at the store resolution; ``compkit
score`` measures the submission at full image size, so its test dice can differ slightly (the report says so).
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
from compkit.util.errors import CompkitError
from compkit.util.fileio import atomic_write, write_json
from compkit.stores.members import check_member_split, dataset_root, open_stores_member
from compkit.evaluation.metrics import DiceMeter, dice_table
from compkit.util.plots import array_png
from compkit.evaluation.postprocess import apply_rule
from compkit.training.runs import claim_output_folder, output_folder

MISSED = np.array([255, 220, 0], np.float32)  # yellow
EXTRA = np.array([230, 0, 200], np.float32)  # magenta
CORRECT = np.array([0, 200, 70], np.float32)  # green
OUTLINE = np.array([0, 230, 255], np.float32)  # cyan: the truth's outline
WORST = 12  # tiles in the gallery
CONFUSION_SHARE = 0.05  # a confused pair is listed when its pixels reach this share of the missed class's area
TILE_MARGIN = 8


def error_overlay(image_rgb: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """One class (``pred``, ``truth``: (H, W) bool): correct pixels green, missed yellow, extra magenta, and the
    truth's outline cyan where it was found. Missed and extra are disjoint within a class, so each shows."""
    import cv2

    out = image_rgb.astype(np.float32) * 0.8
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    for region, colour in ((truth & pred, CORRECT), (truth & ~pred, MISSED), (pred & ~truth, EXTRA)):
        out[region] = 0.35 * out[region] + 0.65 * colour
    edge = truth.astype(np.uint8) - cv2.erode(truth.astype(np.uint8), np.ones((3, 3), np.uint8))
    out[edge.astype(bool) & pred] = OUTLINE  # over correct pixels only: a small missed class stays yellow
    return np.clip(out, 0, 255).astype(np.uint8)


def class_tile(image_rgb: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The overlay cropped to the class (truth and prediction) with a margin; the whole image if both are empty."""
    ys, xs = np.nonzero(truth | pred)
    overlay = error_overlay(image_rgb, pred, truth)
    if len(ys) == 0:
        return overlay
    h, w = truth.shape
    y0, y1 = max(0, ys.min() - TILE_MARGIN), min(h, ys.max() + TILE_MARGIN + 1)
    x0, x1 = max(0, xs.min() - TILE_MARGIN), min(w, xs.max() + TILE_MARGIN + 1)
    side = max(y1 - y0, x1 - x0, 24)  # square tiles, small classes enlarged by the page
    y0, x0 = max(0, min(y0, h - side)), max(0, min(x0, w - side))
    return overlay[y0 : y0 + side, x0 : x0 + side]


def _legend() -> str:
    swatches = (("correct", CORRECT), ("missed", MISSED), ("extra", EXTRA), ("truth outline", OUTLINE))
    return " ".join(
        f'<span class="swatch" style="background:rgb({int(c[0])},{int(c[1])},{int(c[2])})"></span>{name}' for name, c in swatches
    )


def _bars(per_class: dict[str, float]) -> str:
    """Dice per class as a horizontal bar chart, worst first."""
    rows = []
    for name, d in sorted(per_class.items(), key=lambda kv: kv[1]):
        hue = int(120 * max(0.0, min(1.0, d)))  # red (0) to green (1)
        rows.append(
            f'<div class="bar"><span class="label">{html.escape(name)}</span>'
            f'<span class="track"><span class="fill" style="width:{100 * max(d, 0):.1f}%;background:hsl({hue},70%,45%)"></span></span>'
            f'<span class="value">{d:.4f}</span></div>'
        )
    return "".join(rows)


class Confusions:
    """Per pair of classes (a, b): pixels of a missed where b was predicted instead; and each class's true area."""

    def __init__(self, classes: list[str]) -> None:
        self.classes = classes
        self.areas = np.zeros(len(classes), np.int64)
        self.pixels = np.zeros((len(classes), len(classes)), np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """One image's (classes, H, W) boolean prediction and truth."""
        self.areas += truth.reshape(len(self.classes), -1).sum(axis=1)
        missed, extra = truth & ~pred, pred & ~truth
        both = missed.any(axis=0) & extra.any(axis=0)
        if both.any():
            self.pixels += missed[:, both].astype(np.int64) @ extra[:, both].T.astype(np.int64)

    def pairs(self, limit: int = 10) -> list[tuple[float, int, str, str]]:
        """(share of the missed class's area, pixels, missed class, predicted class), largest share first; pairs
        under CONFUSION_SHARE are left out (a few stray pixels are noise)."""
        found = [
            (self.pixels[a, b] / max(self.areas[a], 1), int(self.pixels[a, b]), self.classes[a], self.classes[b])
            for a in range(len(self.classes))
            for b in range(len(self.classes))
            if a != b and self.pixels[a, b] and self.pixels[a, b] >= CONFUSION_SHARE * max(self.areas[a], 1)
        ]
        return sorted(found, reverse=True)[:limit]


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
    output_folder(Path(out or "reports/inspect"), explicit=out is not None, exist_ok=exist_ok)  # a taken --out fails before the work
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
    rules = member.postprocess or {}

    def predicted(image_id: str) -> np.ndarray:
        """Thresholded and postprocessed as `compkit submit` does (at the store resolution)."""
        pred = read[image_id]() > thresholds
        for c, name in enumerate(classes):
            if name in rules:
                pred[c] = apply_rule(pred[c], rules[name])
        return pred

    meter = DiceMeter(dataset.classes)
    pair_scores: list[tuple[float, str, int]] = []
    confusions = Confusions(classes)
    scored: list[tuple[float, str]] = []
    ids = [i for i in cache.image_ids if i in read]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("comparing with the truth", total=len(ids))
        for image_id in ids:
            truth = cache.mask(cache.position[image_id]).astype(bool)
            pred = predicted(image_id)
            per_class_dice = meter.update(pred, truth)
            scored.append((float(per_class_dice.mean()), image_id))
            present = (truth | pred).reshape(len(classes), -1).any(axis=1)
            pair_scores += [(float(per_class_dice[c]), image_id, c) for c in np.flatnonzero(present)]
            confusions.update(pred, truth)
            progress.advance(task)
    pairs = confusions.pairs()
    worst = sorted(scored)[:WORST]
    worst_pairs = sorted(pair_scores)[:WORST]
    gallery = []
    for dice, image_id, c in worst_pairs:
        i = cache.position[image_id]
        pred = predicted(image_id)
        tile = class_tile(cache.image(i), pred[c], cache.mask(i)[c].astype(bool))
        gallery.append((classes[c], f"{classes[c]} in {image_id}: dice {dice:.3f}", array_png(tile)))

    per_class = meter.per_class()
    report = {
        "source": str(source),
        "split": split,
        "images": len(ids),
        "mean_dice": float(per_class.mean()),
        "per_class": {c: float(d) for c, d in zip(classes, per_class, strict=True)},
        "measured": f"thresholded and postprocessed as compkit submit does, at the store resolution {resolution[0]}x{resolution[1]}"
        + ("; compkit score measures the submission at full image size, so its test dice can differ slightly" if split == "test" else ""),
        "worst_images": [{"image": i, "dice": d} for d, i in worst],
        "worst_classes": [{"image": i, "class": classes[c], "dice": d} for d, i, c in worst_pairs],
        "confusions": [{"missed": a, "predicted_instead": b, "pixels": n, "share_of_class": round(float(share), 4)} for share, n, a, b in pairs],
    }
    confusion_items = "".join(
        f"<li>{html.escape(a)} missed where {html.escape(b)} was predicted: {n:,} px ({100 * share:.1f}% of {html.escape(a)})</li>" for share, n, a, b in pairs
    ) or f"<li>none reaches {100 * CONFUSION_SHARE:.0f}% of a class's area</li>"
    cards = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{b}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, caption, b in gallery
    )
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>compkit inspect</title>
<style>body{{font-family:sans-serif;margin:24px}} .gallery{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0}}
figcaption{{font-size:11px;max-width:200px}} img{{width:200px;height:200px;image-rendering:pixelated;background:#000}}
.swatch{{display:inline-block;width:14px;height:14px;margin:0 4px 0 12px;vertical-align:middle;border:1px solid #444}}
.bar{{display:flex;align-items:center;font-size:12px;margin:1px 0}} .label{{width:160px}} .value{{width:60px;text-align:right}}
.track{{display:inline-block;width:420px;height:12px;background:#eee}} .fill{{display:block;height:12px}}</style></head><body>
<h1>compkit inspect: {html.escape(str(source))} ({split})</h1>
<p>{len(ids)} images, mean dice {report['mean_dice']:.4f}, {html.escape(report['measured'])}.</p>
<h2>worst classes: one tile per image and class</h2><p class="legend">{_legend()}</p><div class="gallery">{cards}</div>
<h2>dice per class (worst first)</h2><div class="bars">{_bars(report['per_class'])}</div>
<h2>confused classes</h2><ul>{confusion_items}</ul></body></html>"""
    with claim_output_folder(Path(out or "reports/inspect"), explicit=out is not None, exist_ok=exist_ok) as out:
        write_json(out / "inspect.json", report)
        with atomic_write(out / "inspect.html", "w", encoding="utf-8") as f:
            f.write(page)
    console.print(dice_table(dataset.classes, per_class, f"{Path(source).name} ({split}): dice per class"))
    table = Table(title="worst images")
    table.add_column("image")
    table.add_column("dice", justify="right")
    for d, i in worst[:5]:
        table.add_row(i, f"{d:.4f}")
    console.print(table)
    console.print(f"measured {report['measured']}")
    console.print(f"[green]wrote[/green] {out / 'inspect.html'} and inspect.json (mean dice {report['mean_dice']:.4f})")
    console.print("next: fix the worst classes (more epochs, a larger data.image_size, loss weights), train again and compare with compkit inspect")
    return out / "inspect.html"
