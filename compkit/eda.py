"""``compkit eda``: a dataset report -> ``reports/eda/fingerprint.json`` and a self-contained ``eda.html``.

Streams the training images one at a time (memory stays flat for 800 images of 2048 px): image sizes,
intensities, per-class areas, frequency and connected components, the class overlap matrix (pixels in two
classes at once), the multi-label pixel fraction, meta distributions, outlier candidates (brightness, labelled
area and hand rotation z-scores) and a recommendation on the training size. Plots are matplotlib PNGs embedded in
the HTML; the terminal gets a rich summary.
"""
from __future__ import annotations

import html
import math
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import matplotlib
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from compkit.data import SegmentationDataset, open_dataset
from compkit.errors import CompkitError
from compkit.fileio import atomic_write, write_json
from compkit.runs import output_folder
from compkit.plots import array_png, figure_png, plt
from compkit.entry import callable_stage

SMALL_AREA_PIXELS = 100  # a class smaller than this at the training size is hard to segment
CANDIDATE_SIZES = (256, 384, 512, 768, 1024, 1536, 2048)
GALLERY_SIZE = 8
DEFAULT_OUT = "reports/eda"
THUMB = 320
OUTLIER_Z = 2.5


def class_colours(n: int) -> np.ndarray:
    cmap = matplotlib.colormaps["tab20"]
    return (np.array([cmap(i % 20)[:3] for i in range(n)]) * 255).astype(np.uint8)


def overlay(image_bgr: np.ndarray, mask: np.ndarray, colours: np.ndarray, size: int = THUMB) -> np.ndarray:
    """RGB thumbnail with each class's outline and a light fill."""
    scale = size / max(image_bgr.shape[:2])
    dsize = (max(1, round(image_bgr.shape[1] * scale)), max(1, round(image_bgr.shape[0] * scale)))
    thumb = cv2.cvtColor(cv2.resize(image_bgr, dsize, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB).astype(np.float32)
    for c in range(mask.shape[0]):
        m = cv2.resize(mask[c], dsize, interpolation=cv2.INTER_NEAREST).astype(bool)
        if m.any():
            thumb[m] = 0.65 * thumb[m] + 0.35 * colours[c]
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(thumb, contours, -1, colours[c].tolist(), 1)
    return np.clip(thumb, 0, 255).astype(np.uint8)


def hand_angle(mask: np.ndarray) -> float:
    """Orientation in degrees (0 = upright) of the labelled area's main axis, from second moments."""
    fg = mask.any(axis=0).astype(np.uint8)
    m = cv2.moments(fg, binaryImage=True)
    if m["m00"] == 0:
        return 0.0
    angle = 0.5 * math.degrees(math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"]))  # from the x axis
    return float((angle + 90.0 + 90.0) % 180.0 - 90.0)  # relative to vertical, in [-90, 90)


class Fingerprint:
    """Accumulates statistics image by image."""

    def __init__(self, classes: tuple[str, ...]):
        self.classes = classes
        c = len(classes)
        self.sizes: Counter = Counter()
        self.histogram = np.zeros(256, np.int64)
        self.image_means: list[float] = []
        self.image_stds: list[float] = []
        self.areas: list[np.ndarray] = []  # per image, per class pixels
        self.components: list[np.ndarray] = []
        self.overlap = np.zeros((c, c), np.int64)
        self.labelled_pixels = 0
        self.multi_pixels = 0
        self.total_pixels = 0
        self.angles: list[float] = []
        self.ids: list[str] = []

    def add(self, image_id: str, image: np.ndarray, mask: np.ndarray) -> None:
        grey = image if image.ndim == 2 else image[..., 0] if (image[..., 0] == image[..., 1]).all() else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        self.ids.append(image_id)
        self.sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
        self.histogram += np.bincount(grey.ravel(), minlength=256)
        self.image_means.append(float(grey.mean()))
        self.image_stds.append(float(grey.std()))
        flat = mask.reshape(mask.shape[0], -1)
        self.areas.append(np.count_nonzero(flat, axis=1))
        self.components.append(np.array([cv2.connectedComponents(m)[0] - 1 if m.any() else 0 for m in mask]))
        counts = flat.sum(axis=0, dtype=np.int32)
        multi = counts > 1
        if multi.any():  # only the few multi-label pixels: exact and cheap
            sub = flat[:, multi].astype(np.float32)
            self.overlap += np.rint(sub @ sub.T).astype(np.int64)
        self.multi_pixels += int(multi.sum())
        self.labelled_pixels += int((counts > 0).sum())
        self.total_pixels += flat.shape[1]
        self.angles.append(hand_angle(mask))

    def result(self, dataset: SegmentationDataset, metas: list[dict[str, Any]]) -> dict[str, Any]:
        areas = np.stack(self.areas).astype(np.float64)
        comps = np.stack(self.components)
        present = areas > 0
        per_class = {}
        for c, name in enumerate(self.classes):
            a = areas[present[:, c], c]
            per_class[name] = {
                "frequency": float(present[:, c].mean()),
                "area_mean": float(a.mean()) if len(a) else 0.0,
                "area_std": float(a.std()) if len(a) else 0.0,
                "area_min": int(a.min()) if len(a) else 0,
                "area_max": int(a.max()) if len(a) else 0,
                "components_mean": float(comps[present[:, c], c].mean()) if len(a) else 0.0,
            }
        overlap = self.overlap.copy()
        np.fill_diagonal(overlap, 0)
        pairs = sorted(
            ((int(overlap[i, j]), self.classes[i], self.classes[j]) for i in range(len(self.classes)) for j in range(i + 1, len(self.classes)) if overlap[i, j]),
            reverse=True,
        )
        size = int(np.median([int(s.split("x")[0]) for s in self.sizes.elements()]))
        smallest = min(per_class, key=lambda n: per_class[n]["area_mean"] if per_class[n]["frequency"] else math.inf)
        small_area = per_class[smallest]["area_mean"]
        below = [s for s in CANDIDATE_SIZES if s <= size and small_area * (s / size) ** 2 < SMALL_AREA_PIXELS]
        outliers = self._outliers(areas.sum(axis=1))
        return {
            "images": len(self.ids),
            "classes": list(self.classes),
            "format": dataset.format_name,
            "image_sizes": dict(self.sizes),
            "intensity": {
                "mean": float(np.average(np.arange(256), weights=self.histogram)),
                "std": float(math.sqrt(np.average((np.arange(256) - np.average(np.arange(256), weights=self.histogram)) ** 2, weights=self.histogram))),
                "image_mean_range": [float(min(self.image_means)), float(max(self.image_means))],
                "histogram": self.histogram.tolist(),
            },
            "per_class": per_class,
            "overlap_matrix": self.overlap.tolist(),
            "top_overlaps": [{"classes": [a, b], "pixels": n} for n, a, b in pairs[:10]],
            "multilabel_pixel_fraction": self.multi_pixels / max(self.labelled_pixels, 1),
            "labelled_pixel_fraction": self.labelled_pixels / max(self.total_pixels, 1),
            "meta": summarise_meta(metas),
            "outliers": outliers,
            "recommendation": {
                "smallest_class": smallest,
                "smallest_class_area": small_area,
                "original_size": size,
                "min_area_pixels": SMALL_AREA_PIXELS,
                "sizes_below_min_area": below,
                "text": (
                    f"{smallest} averages {small_area:.0f} px at {size} px; "
                    + (f"at {max(below)} px or less it falls under {SMALL_AREA_PIXELS} px: train larger." if below else f"it stays above {SMALL_AREA_PIXELS} px at every size down to {CANDIDATE_SIZES[0]} px.")
                ),
            },
        }

    def _outliers(self, total_area: np.ndarray) -> list[dict[str, Any]]:
        found = []
        for kind, values in (("brightness", np.array(self.image_means)), ("labelled area", total_area), ("rotation", np.array(self.angles))):
            std = values.std()
            if std == 0:
                continue
            z = (values - values.mean()) / std
            for i in np.flatnonzero(np.abs(z) > OUTLIER_Z):
                found.append({"image": self.ids[i], "kind": kind, "value": float(values[i]), "z": float(z[i])})
        return sorted(found, key=lambda o: -abs(o["z"]))


def summarise_meta(metas: list[dict[str, Any]]) -> dict[str, Any]:
    columns = sorted({k for m in metas for k in m if k not in ("id", "source_patients")})
    summary = {}
    for col in columns:
        values = [m.get(col) for m in metas if m.get(col) is not None]
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if values and len(numeric) == len(values):
            summary[col] = {"type": "numeric", "count": len(numeric), "mean": float(np.mean(numeric)), "min": float(min(numeric)), "max": float(max(numeric))}
        elif values:
            summary[col] = {"type": "categorical", "counts": dict(Counter(map(str, values)))}
    return summary


def plots(fp: dict[str, Any], metas: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    names = fp["classes"]
    areas = [fp["per_class"][n]["area_mean"] for n in names]
    smallest = set(np.argsort([a if a > 0 else np.inf for a in areas])[:3].tolist())
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 3.6))
    ax.bar(range(len(names)), areas, color=["tab:red" if i in smallest else "tab:blue" for i in range(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=8)
    ax.set_ylabel("mean area (pixels)")
    ax.set_title("mean area per class (smallest in red)")
    out["areas"] = figure_png(fig)

    matrix = np.array(fp["overlap_matrix"], np.float64)
    np.fill_diagonal(matrix, 0)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(np.log10(matrix + 1), cmap="magma")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title("class overlap (log10 pixels in both classes)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    out["overlap"] = figure_png(fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    hist = np.array(fp["intensity"]["histogram"], np.float64)
    ax.fill_between(range(256), hist / hist.sum(), step="mid", alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("intensity")
    ax.set_title("intensity histogram (all images)")
    out["intensity"] = figure_png(fig)

    numeric = [c for c, s in fp["meta"].items() if s["type"] == "numeric"]
    if numeric:
        groups = sorted({str(m.get("sex")) for m in metas if m.get("sex") is not None}) or ["all"]
        fig, axes = plt.subplots(1, len(numeric), figsize=(3.2 * len(numeric), 3), squeeze=False)
        for ax, col in zip(axes[0], numeric, strict=True):
            for g in groups:
                vals = [m[col] for m in metas if m.get(col) is not None and (g == "all" or str(m.get("sex")) == g)]
                ax.hist(vals, bins=12, alpha=0.6, label=g)
            ax.set_title(col)
        axes[0][0].legend(fontsize=7)
        fig.suptitle("meta data by sex", y=1.04)
        out["meta"] = figure_png(fig)
    return out


def render_html(title: str, fp: dict[str, Any], figures: dict[str, str], gallery: list[tuple[str, str]], outlier_gallery: list[tuple[str, str]]) -> str:
    def img(b64: str, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{s['frequency']:.2f}</td><td>{s['area_mean']:.0f}</td><td>{s['area_min']}</td><td>{s['area_max']}</td><td>{s['components_mean']:.2f}</td></tr>"
        for n, s in fp["per_class"].items()
    )
    overlaps = "".join(f"<li>{html.escape(o['classes'][0])} &amp; {html.escape(o['classes'][1])}: {o['pixels']:,} px</li>" for o in fp["top_overlaps"])
    outliers = "".join(f"<li>{html.escape(o['image'])}: {o['kind']} z = {o['z']:+.1f}</li>" for o in fp["outliers"][:20]) or "<li>none</li>"
    cards = "".join(f"<figure>{img(b, c)}<figcaption>{html.escape(c)}</figcaption></figure>" for c, b in gallery)
    odd = "".join(f"<figure>{img(b, c)}<figcaption>{html.escape(c)}</figcaption></figure>" for c, b in outlier_gallery)
    sections = "".join(f"<section><h2>{html.escape(k)}</h2>{img(v, k)}</section>" for k, v in figures.items())
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1400px}} img{{max-width:100%}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} td:first-child{{text-align:left}}
.gallery{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0}} figcaption{{font-size:11px;max-width:320px;word-break:break-all}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{fp['images']} images, {len(fp['classes'])} classes, sizes {html.escape(str(fp['image_sizes']))};
multi-label pixels: {fp['multilabel_pixel_fraction']:.2%} of labelled pixels.</p>
<p><b>Recommendation:</b> {html.escape(fp['recommendation']['text'])}</p>
{sections}
<h2>classes</h2><table><tr><th>class</th><th>frequency</th><th>mean area</th><th>min</th><th>max</th><th>components</th></tr>{rows}</table>
<h2>largest overlaps</h2><ul>{overlaps}</ul>
<h2>gallery</h2><div class="gallery">{cards}</div>
<h2>outlier candidates</h2><ul>{outliers}</ul><div class="gallery">{odd}</div>
</body></html>"""


def eda(data: str | Path, out: str | Path | None = None, gallery: int = GALLERY_SIZE, exist_ok: bool = False, console: Console | None = None) -> Path:
    """Write ``fingerprint.json`` and ``eda.html`` for the dataset's training split; returns the HTML path."""
    console = console or Console()
    if gallery < 0:
        raise CompkitError("--gallery", f"must be 0 or more, got {gallery}")
    dataset = open_dataset(data, "train")
    out = output_folder(Path(out or DEFAULT_OUT), explicit=out is not None, exist_ok=exist_ok)
    fp = Fingerprint(dataset.classes)
    colours = class_colours(len(dataset.classes))
    picks = set(np.linspace(0, len(dataset) - 1, min(gallery, len(dataset))).round().astype(int).tolist())
    thumbs: list[tuple[str, str]] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("reading images", total=len(dataset))
        for i, sample in enumerate(dataset.samples):
            image = dataset.read_image(sample)
            mask = dataset.read_mask(sample, image.shape[:2])
            fp.add(sample.image_id, image, mask)
            if i in picks:
                thumbs.append((sample.image_id, array_png(overlay(image, mask, colours))))
            progress.advance(task)
    metas = [s.meta for s in dataset.samples]
    result = fp.result(dataset, metas)
    by_id = {s.image_id: s for s in dataset.samples}
    odd = []
    for o in result["outliers"][:6]:  # outliers read again: only a handful
        s = by_id[o["image"]]
        image = dataset.read_image(s)
        odd.append((f"{o['image']} ({o['kind']} z={o['z']:+.1f})", array_png(overlay(image, dataset.read_mask(s, image.shape[:2]), colours))))
    write_json(out / "fingerprint.json", {k: v for k, v in result.items()})
    page = render_html(f"compkit eda: {Path(data).name}", result, plots(result, metas), thumbs, odd)
    with atomic_write(out / "eda.html", "w", encoding="utf-8") as f:
        f.write(page)

    table = Table(title=f"{result['images']} images, {len(dataset.classes)} classes ({dataset.format_name})")
    for column in ("class", "frequency", "mean area", "components"):
        table.add_column(column, justify="right" if column != "class" else "left")
    for name, s in result["per_class"].items():
        mark = "[red]" if name == result["recommendation"]["smallest_class"] else ""
        table.add_row(f"{mark}{name}", f"{s['frequency']:.2f}", f"{s['area_mean']:.0f}", f"{s['components_mean']:.2f}")
    console.print(table)
    console.print(f"multi-label pixels: {result['multilabel_pixel_fraction']:.2%}; outlier candidates: {len(result['outliers'])}")
    console.print(f"recommendation: {result['recommendation']['text']}")
    console.print(f"[green]wrote[/green] {out / 'fingerprint.json'} and {out / 'eda.html'}")
    console.print(f"next: compkit split {data}")
    return out / "eda.html"


callable_stage(__name__, eda)
