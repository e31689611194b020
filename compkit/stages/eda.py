"""``compkit eda``: a dataset report -> ``reports/eda/fingerprint.json`` and a self-contained ``eda.html``.

Streams the training images one at a time (memory stays flat for 800 images of 2048 px): image sizes,
intensities, per-class areas, structure widths, frequency and connected components, polygons clipped to the image, the class
overlap matrix (pixels in two classes at once), the multi-label pixel fraction, meta distributions, outlier
candidates (brightness, labelled area and hand rotation z-scores) and a recommendation on the training size. Plots
are matplotlib PNGs embedded in the HTML; the terminal gets a rich summary.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from compkit.data import open_dataset
from compkit.data.formats import dataset_folder
from compkit.data.raster import describe_clips
from compkit.data.splits import SPLITS_FILE
from compkit.planning.fingerprint import fingerprint_of, hand_angle  # noqa: F401  (hand_angle: part of this module's API)
from compkit.training.runs import claim_output_folder, output_folder
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError
from compkit.util.fileio import atomic_write, writable_folder, write_json
from compkit.util.overlay import class_colours, overlay
from compkit.util.plots import array_png, figure_png, subplots

GALLERY_SIZE = 8
DEFAULT_OUT = "reports/eda"
FINGERPRINT_FILE = "fingerprint.json"  # the dataset's measured facts, as compkit.planning.fingerprint computes them
REPORT_PAGE = "eda.html"
THUMB = 320


def thumbnail(image_bgr: np.ndarray, mask: np.ndarray, colours: np.ndarray, size: int = THUMB) -> np.ndarray:
    """RGB thumbnail with each class filled and outlined in its colour (:mod:`compkit.util.overlay`)."""
    scale = size / max(image_bgr.shape[:2])
    dsize = (max(1, round(image_bgr.shape[1] * scale)), max(1, round(image_bgr.shape[0] * scale)))
    thumb = cv2.cvtColor(cv2.resize(image_bgr, dsize, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    small = np.stack([cv2.resize(m, dsize, interpolation=cv2.INTER_NEAREST) for m in mask]).astype(bool)
    return overlay(thumb, small, colours, outline=small)


def legend_html(classes: list[str], colours: np.ndarray) -> str:
    """The gallery's colours, one swatch per class."""
    return "".join(
        f'<span class="swatch"><i style="background:rgb({r},{g},{b})"></i>{html.escape(name)}</span>'
        for name, (r, g, b) in zip(classes, colours.tolist(), strict=True)
    )


def intensity_where(fp: dict[str, Any]) -> str:
    """Which pixels the intensity statistics cover, in words."""
    inside = fp["intensity"].get("field_of_view_fraction", 1.0)
    return f"inside the field of view ({inside:.0%} of the pixels)" if inside < 1 else "all pixels"


def sizes_html(sizes: dict[str, int]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(size)}</td><td>{count}</td></tr>"
        for size, count in sorted(sizes.items(), key=lambda item: -item[1])
    )
    return f"<table><tr><th>size (w x h)</th><th>images</th></tr>{rows}</table>"


def plots(fp: dict[str, Any], metas: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    names = fp["classes"]
    areas = [fp["per_class"][n]["area_mean"] for n in names]
    smallest = set(np.argsort([a if a > 0 else np.inf for a in areas])[:3].tolist())
    fig, ax = subplots(figsize=(max(6, 0.35 * len(names)), 3.6))
    ax.bar(range(len(names)), areas, color=["tab:red" if i in smallest else "tab:blue" for i in range(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=8)
    ax.set_ylabel("mean area (pixels)")
    ax.set_title("mean area per class (smallest in red)")
    out["areas"] = figure_png(fig)

    if len(names) > 1:  # one class overlaps nothing
        matrix = np.array(fp["overlap_matrix"], np.float64)
        np.fill_diagonal(matrix, 0)
        fig, ax = subplots(figsize=(6.5, 5.5))
        im = ax.imshow(np.log10(matrix + 1), cmap="magma")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title("class overlap (log10 pixels in both classes)")
        fig.colorbar(im, ax=ax, shrink=0.8)
        out["overlap"] = figure_png(fig)

    fig, ax = subplots(figsize=(6, 3.2))
    hist = np.array(fp["intensity"]["histogram"], np.float64)
    ax.fill_between(range(256), hist / hist.sum(), step="mid", alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("intensity")
    ax.set_title(f"intensity histogram (every image, {intensity_where(fp)})")
    out["intensity"] = figure_png(fig)

    numeric = [c for c, s in fp["meta"].items() if s["type"] == "numeric"]
    if numeric:
        groups = sorted({str(m.get("sex")) for m in metas if m.get("sex") is not None}) or ["all"]
        fig, axes = subplots(1, len(numeric), figsize=(3.2 * len(numeric), 3), squeeze=False)
        for ax, col in zip(axes[0], numeric, strict=True):
            for g in groups:
                vals = [m[col] for m in metas if m.get(col) is not None and (g == "all" or str(m.get("sex")) == g)]
                ax.hist(vals, bins=12, alpha=0.6, label=g)
            ax.set_title(col)
        axes[0][0].legend(fontsize=7)
        fig.suptitle("meta data by sex", y=1.04)
        out["meta"] = figure_png(fig)
    return out


def render_html(
    title: str,
    fp: dict[str, Any],
    figures: dict[str, str],
    gallery: list[tuple[str, str]],
    outlier_gallery: list[tuple[str, str]],
    colours: np.ndarray,
) -> str:
    def img(b64: str, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{s['frequency']:.2f}</td><td>{s['area_mean']:.0f}</td><td>{s['area_min']}</td><td>{s['area_max']}</td><td>{s['components_mean']:.2f}</td><td>{s['width_median']:.1f}</td><td>{s['width_p10']:.1f}</td></tr>"
        for n, s in fp["per_class"].items()
    )
    overlaps = "".join(
        f"<li>{html.escape(o['classes'][0])} &amp; {html.escape(o['classes'][1])}: {o['pixels']:,} px</li>"
        for o in fp["top_overlaps"]
    )
    overlap_section = (
        f"<h2>largest overlaps</h2><ul>{overlaps or '<li>none</li>'}</ul>" if len(fp["classes"]) > 1 else ""
    )
    outliers = (
        "".join(f"<li>{html.escape(o['image'])}: {o['kind']} z = {o['z']:+.1f}</li>" for o in fp["outliers"][:20])
        or "<li>none</li>"
    )
    cards = "".join(f"<figure>{img(b, c)}<figcaption>{html.escape(c)}</figcaption></figure>" for c, b in gallery)
    odd = "".join(f"<figure>{img(b, c)}<figcaption>{html.escape(c)}</figcaption></figure>" for c, b in outlier_gallery)
    sections = "".join(f"<section><h2>{html.escape(k)}</h2>{img(v, k)}</section>" for k, v in figures.items())
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1400px}} img{{max-width:100%}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}} td:first-child{{text-align:left}}
.gallery{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0}} figcaption{{font-size:11px;max-width:320px;word-break:break-all}}
.swatch{{display:inline-block;margin:2px 10px 2px 0;font-size:12px}}
.swatch i{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{fp["images"]} images, {len(fp["classes"])} classes; multi-label pixels: {fp["multilabel_pixel_fraction"]:.2%} of
labelled pixels.</p>
<p>intensity: mean {fp["intensity"]["mean"]:.1f}, std {fp["intensity"]["std"]:.1f}, {intensity_where(fp)}.</p>
<h2>image sizes</h2>{sizes_html(fp["image_sizes"])}
<p>polygons clipped to the image: {html.escape(describe_clips(fp["clipped_polygons"]))}.</p>
<p><b>Recommendation:</b> {html.escape(fp["recommendation"]["text"])}</p>
{sections}
<h2>classes</h2><table><tr><th>class</th><th>frequency</th><th>mean area</th><th>min</th><th>max</th><th>components</th>
<th>width median (px)</th><th>thinnest 10% (px)</th></tr>{rows}</table>
{overlap_section}
<h2>gallery</h2><p>{legend_html(fp["classes"], colours)}</p><div class="gallery">{cards}</div>
<h2>outlier candidates</h2><ul>{outliers}</ul><div class="gallery">{odd}</div>
</body></html>"""


def eda(
    data: str | Path,
    out: str | Path | None = None,
    gallery: int = GALLERY_SIZE,
    exist_ok: bool = False,
    console: Console | None = None,
) -> Path:
    """Write ``fingerprint.json`` and ``eda.html`` for the dataset's training split; returns the HTML path."""
    console = console or output_console()
    if gallery < 0:
        raise CompkitError("--gallery", f"must be 0 or more, got {gallery}")
    dataset = open_dataset(data, "train")
    output_folder(
        Path(out or DEFAULT_OUT), explicit=out is not None, exist_ok=exist_ok
    )  # a taken --out fails before the work
    colours = class_colours(len(dataset.classes))
    picks = set(np.linspace(0, len(dataset) - 1, min(gallery, len(dataset))).round().astype(int).tolist())
    thumbs: list[tuple[str, str]] = []

    def keep_thumbnail(i, sample, image, mask) -> None:
        if i in picks:
            thumbs.append((sample.image_id, array_png(thumbnail(image, mask, colours))))

    with transient_progress(console) as progress:
        result = fingerprint_of(dataset, keep_thumbnail, progress)
    metas = [s.meta for s in dataset.samples]
    by_id = {s.image_id: s for s in dataset.samples}
    odd = []
    for o in result["outliers"][:6]:  # outliers read again: only a handful
        s = by_id[o["image"]]
        image = dataset.read_image(s)
        odd.append(
            (
                f"{o['image']} ({o['kind']} z={o['z']:+.1f})",
                array_png(thumbnail(image, dataset.read_mask(s, image.shape[:2]), colours)),
            )
        )
    page = render_html(f"compkit eda: {Path(data).name}", result, plots(result, metas), thumbs, odd, colours)
    with claim_output_folder(Path(out or DEFAULT_OUT), explicit=out is not None, exist_ok=exist_ok) as out:
        write_json(out / FINGERPRINT_FILE, {k: v for k, v in result.items()})
        with atomic_write(out / REPORT_PAGE, "w", encoding="utf-8") as f:
            f.write(page)

    table = Table(title=f"{result['images']} images, {len(dataset.classes)} classes ({dataset.format_name})")
    for column in ("class", "frequency", "mean area", "components", "width (median)", "width (thinnest 10%)"):
        table.add_column(column, justify="right" if column != "class" else "left")
    for name, s in result["per_class"].items():
        mark = "[red]" if name == result["recommendation"]["smallest_class"] else ""
        widths = (f"{s['width_median']:.1f}", f"{s['width_p10']:.1f}")
        table.add_row(
            f"{mark}{name}", f"{s['frequency']:.2f}", f"{s['area_mean']:.0f}", f"{s['components_mean']:.2f}", *widths
        )
    console.print(table)
    sizes = Table(title="image sizes")
    for column in ("size (w x h)", "images"):
        sizes.add_column(column, justify="right" if column == "images" else "left")
    for size, count in sorted(result["image_sizes"].items(), key=lambda item: -item[1]):
        sizes.add_row(size, str(count))
    console.print(sizes)
    console.print(
        f"multi-label pixels: {result['multilabel_pixel_fraction']:.2%}; outlier candidates: {len(result['outliers'])}"
    )
    if result["clipped_polygons"]:
        console.print(f"polygons clipped to the image: {describe_clips(result['clipped_polygons'])}")
    console.print(f"recommendation: {result['recommendation']['text']}")
    console.print(f"[green]wrote[/green] {out / FINGERPRINT_FILE} and {out / REPORT_PAGE}")
    where = "" if writable_folder(dataset_folder(data)) else f" --out {SPLITS_FILE}"  # read-only data: splits here
    console.print(f"next: compkit split --data {data}{where}")
    return out / REPORT_PAGE
