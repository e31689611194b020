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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from compkit.data import SegmentationDataset
from compkit.data.cache import build_cache
from compkit.data.labelled import open_labelled
from compkit.evaluation.metrics import DiceMeter, dice_table
from compkit.evaluation.postprocess import apply_rule
from compkit.stores.members import Member, check_member_split, dataset_root, describe_tuning, open_stores_member
from compkit.training.runs import claim_output_folder, output_folder
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError
from compkit.util.fileio import atomic_write, write_json
from compkit.util.plots import array_png

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


TILE_PX = 192  # each half of a tile: the crop and the whole image, at this height


def class_tile(image_rgb: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The overlay cropped to the class (truth and prediction) with a margin, beside the whole image with the crop
    marked (where on the image the error is); the whole image alone if both are empty."""
    import cv2

    ys, xs = np.nonzero(truth | pred)
    overlay = error_overlay(image_rgb, pred, truth)
    h, w = truth.shape
    whole = cv2.resize(overlay, (max(1, round(w * TILE_PX / h)), TILE_PX), interpolation=cv2.INTER_AREA)
    if len(ys) == 0:
        return whole
    y0, y1 = max(0, ys.min() - TILE_MARGIN), min(h, ys.max() + TILE_MARGIN + 1)
    x0, x1 = max(0, xs.min() - TILE_MARGIN), min(w, xs.max() + TILE_MARGIN + 1)
    side = min(max(y1 - y0, x1 - x0, 24), h, w)  # square crops, small classes enlarged
    y0, x0 = max(0, min(y0, h - side)), max(0, min(x0, w - side))
    crop = cv2.resize(overlay[y0 : y0 + side, x0 : x0 + side], (TILE_PX, TILE_PX), interpolation=cv2.INTER_NEAREST)
    scale = TILE_PX / h
    corner = (round(x0 * scale), round(y0 * scale))
    far = (round((x0 + side) * scale) - 1, round((y0 + side) * scale) - 1)
    cv2.rectangle(whole, corner, far, tuple(int(v) for v in OUTLINE), 1)
    gap = np.full((TILE_PX, 4, 3), 255, np.uint8)
    return np.concatenate([crop, gap, whole], axis=1)


def _legend() -> str:
    swatches = (("correct", CORRECT), ("missed", MISSED), ("extra", EXTRA), ("truth outline", OUTLINE))
    return " ".join(
        f'<span class="swatch" style="background:rgb({int(c[0])},{int(c[1])},{int(c[2])})"></span>{name}'
        for name, c in swatches
    )


def _bars(per_class: dict[str, float]) -> str:
    """Dice per class as a horizontal bar chart, worst first."""
    rows = []
    for name, d in sorted(per_class.items(), key=lambda kv: kv[1]):
        hue = int(120 * max(0.0, min(1.0, d)))  # red (0) to green (1)
        rows.append(
            f'<div class="bar"><span class="label">{html.escape(name)}</span>'
            f'<span class="track"><span class="fill" '
            f'style="width:{100 * max(d, 0):.1f}%;background:hsl({hue},70%,45%)"></span></span>'
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


@dataclass(frozen=True)
class _SplitStores:
    """A member's predictions for one split: a reader of each image's probabilities, each image's box (None: not
    cropped), the labelled images they predict, and the store resolution."""

    read: dict[str, Callable[[], np.ndarray]]
    box_of: dict[str, tuple[int, int, int, int] | None]
    dataset: SegmentationDataset
    resolution: tuple[int, int]

    @property
    def cropped(self) -> bool:
        return any(b is not None for b in self.box_of.values())


def _split_stores(
    member: Member, root: str | Path, split: str, source: str | Path, gt: str | Path | None
) -> _SplitStores:
    """``val``: the out-of-fold stores against the training labels; ``test``: the test stores against ``gt``."""
    if split == "val":
        index = member.oof_index()
        if not index:
            raise CompkitError(
                source, "no out-of-fold stores (oof/): train with compkit or `compkit predict --split val`"
            )
        check_member_split(member, root)
        read = {i: (lambda i=i: index[i].read(i)) for i in index}
        box_of = {i: index[i].box(i) for i in index}
        return _SplitStores(read, box_of, open_labelled(root, "train"), next(iter(index.values())).resolution)
    if split == "test":
        read = {i: (lambda i=i: member.test_probs(i)) for i in member.image_ids}
        box_of = {i: member.box(i) for i in member.image_ids}
        return _SplitStores(read, box_of, open_labelled(root, "test", gt), member.resolution)
    raise CompkitError("--split", f"must be val or test, got {split!r}")


@dataclass(frozen=True)
class _Thresholded:
    """Each image's prediction thresholded and postprocessed as `compkit submit` does (at the store resolution)."""

    read: dict[str, Callable[[], np.ndarray]]
    classes: list[str]
    thresholds: np.ndarray  # (classes, 1, 1)
    rules: dict[str, dict]  # class -> postprocessing rule

    def __call__(self, image_id: str) -> np.ndarray:
        pred = self.read[image_id]() > self.thresholds
        for c, name in enumerate(self.classes):
            if name in self.rules:
                pred[c] = apply_rule(pred[c], self.rules[name])
        return pred


@dataclass(frozen=True)
class _Findings:
    """Where the predictions are wrong, over the images compared."""

    image_ids: list[str]
    per_class: np.ndarray  # mean dice per class
    worst: list[tuple[float, str]]  # (mean dice, image), worst first
    worst_pairs: list[tuple[float, str, int]]  # (dice, image, class) of the classes present, worst first
    confusions: list[tuple[float, int, str, str]]  # Confusions.pairs()


def _compare(cache, predicted: _Thresholded, console: Console) -> _Findings:
    """Every predicted image of the cache against its truth: dice per image and class, and the confused classes."""
    classes = predicted.classes
    meter = DiceMeter(classes)
    pair_scores: list[tuple[float, str, int]] = []
    confusions = Confusions(classes)
    scored: list[tuple[float, str]] = []
    ids = [i for i in cache.image_ids if i in predicted.read]
    with transient_progress(console) as progress:
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
    return _Findings(ids, meter.per_class(), sorted(scored)[:WORST], sorted(pair_scores)[:WORST], confusions.pairs())


def _gallery(findings: _Findings, cache, predicted: _Thresholded) -> list[tuple[str, str, str]]:
    """(class, caption, base64 PNG) of a tile per worst image-class pair."""
    classes = predicted.classes
    gallery = []
    for dice, image_id, c in findings.worst_pairs:
        i = cache.position[image_id]
        pred = predicted(image_id)
        tile = class_tile(cache.image(i), pred[c], cache.mask(i)[c].astype(bool))
        gallery.append((classes[c], f"{classes[c]} in {image_id}: dice {dice:.3f}", array_png(tile)))
    return gallery


def _report(
    source: str | Path, split: str, resolution: tuple[int, int], findings: _Findings, classes: list[str]
) -> dict:
    """``inspect.json``."""
    measured = (
        f"thresholded and postprocessed as compkit submit does, at the store resolution {resolution[0]}x{resolution[1]}"
    )
    if split == "test":
        measured += "; compkit score measures the submission at full image size, so its test dice can differ slightly"
    return {
        "source": str(source),
        "split": split,
        "images": len(findings.image_ids),
        "mean_dice": float(findings.per_class.mean()),
        "per_class": {c: float(d) for c, d in zip(classes, findings.per_class, strict=True)},
        "measured": measured,
        "worst_images": [{"image": i, "dice": d} for d, i in findings.worst],
        "worst_classes": [{"image": i, "class": classes[c], "dice": d} for d, i, c in findings.worst_pairs],
        "confusions": [
            {"missed": a, "predicted_instead": b, "pixels": n, "share_of_class": round(float(share), 4)}
            for share, n, a, b in findings.confusions
        ],
    }


def _page(report: dict, gallery: list[tuple[str, str, str]], confusions: list[tuple[float, int, str, str]]) -> str:
    """``inspect.html``: the worst tiles, the bar chart and the confused classes."""
    confusion_items = (
        "".join(
            f"<li>{html.escape(a)} missed where {html.escape(b)} was predicted: {n:,} px "
            f"({100 * share:.1f}% of {html.escape(a)})</li>"
            for share, n, a, b in confusions
        )
        or f"<li>none reaches {100 * CONFUSION_SHARE:.0f}% of a class's area</li>"
    )
    cards = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{b}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption, b in gallery
    )
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>compkit inspect</title>
<style>body{{font-family:sans-serif;margin:24px}} .gallery{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0}}
figcaption{{font-size:11px;max-width:200px}} img{{width:200px;height:200px;image-rendering:pixelated;background:#000}}
.swatch{{display:inline-block;width:14px;height:14px;margin:0 4px 0 12px;vertical-align:middle;border:1px solid #444}}
.bar{{display:flex;align-items:center;font-size:12px;margin:1px 0}} .label{{width:160px}} .value{{width:60px;text-align:right}}
.track{{display:inline-block;width:420px;height:12px;background:#eee}} .fill{{display:block;height:12px}}</style></head><body>
<h1>compkit inspect: {html.escape(report["source"])} ({report["split"]})</h1>
<p>{report["images"]} images, mean dice {report["mean_dice"]:.4f}, {html.escape(report["measured"])}.</p>
<h2>worst classes: one tile per image and class</h2><p class="legend">{_legend()}</p><div class="gallery">{cards}</div>
<h2>dice per class (worst first)</h2><div class="bars">{_bars(report["per_class"])}</div>
<h2>confused classes</h2><ul>{confusion_items}</ul></body></html>"""


def _print_summary(
    console: Console, dataset: SegmentationDataset, findings: _Findings, title: str, report: dict
) -> None:
    """The dice table, the worst images and how they were measured."""
    console.print(dice_table(dataset.classes, findings.per_class, title))
    table = Table(title="worst images")
    table.add_column("image")
    table.add_column("dice", justify="right")
    for d, i in findings.worst[:5]:
        table.add_row(i, f"{d:.4f}")
    console.print(table)
    console.print(f"measured {report['measured']}")


def inspect(
    source: str | Path,
    split: str = "val",
    data: str | Path | None = None,
    gt: str | Path | None = None,
    out: str | Path | None = None,
    exist_ok: bool = False,
    console: Console | None = None,
) -> Path:
    """Per-class dice, the worst image-class tiles and the confused classes of ``source``'s ``split`` predictions,
    written to ``out`` (default ``reports/inspect``; replaced only with ``exist_ok``); returns the HTML page."""
    console = console or output_console()
    folder = Path(out or "reports/inspect")
    output_folder(folder, explicit=out is not None, exist_ok=exist_ok)  # a taken --out fails before the work
    member = open_stores_member(source, "inspect")
    root = dataset_root(member, data)
    stores = _split_stores(member, root, split, source, gt)
    cache = build_cache(stores.dataset, stores.resolution[0], console=console, crop=stores.cropped)
    classes = list(stores.dataset.classes)
    predicted = _Thresholded(stores.read, classes, member.threshold_vector()[:, None, None], member.postprocess or {})
    findings = _compare(cache, predicted, console)
    gallery = _gallery(findings, cache, predicted)
    report = _report(source, split, stores.resolution, findings, classes)
    if split == "val" and member.oof_figures:  # an ensemble: its thresholds were chosen on these very images
        report["cross_validated"] = member.oof_figures
    page = _page(report, gallery, findings.confusions)
    with claim_output_folder(folder, explicit=out is not None, exist_ok=exist_ok) as written:
        write_json(written / "inspect.json", report)
        with atomic_write(written / "inspect.html", "w", encoding="utf-8") as f:
            f.write(page)
    if "cross_validated" in report:
        console.print(
            f"OOF {describe_tuning(member.oof_figures)}; below, the kept thresholds scored on the images they were "
            "chosen on (in-sample)"
        )
    _print_summary(console, stores.dataset, findings, f"{Path(source).name} ({split}): dice per class", report)
    mean = f"mean dice {report['mean_dice']:.4f}" + (" in-sample" if "cross_validated" in report else "")
    console.print(f"[green]wrote[/green] {written / 'inspect.html'} and inspect.json ({mean})")
    console.print(
        "next: fix the worst classes (more epochs, a larger data.image_size, loss weights), train again and compare "
        "with compkit inspect"
    )
    return written / "inspect.html"
