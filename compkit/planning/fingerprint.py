"""A dataset's fingerprint: per-class areas, widths, frequencies, components and positions, image sizes, intensities,
overlaps, polygons clipped to the image, meta distributions, outliers and a training-size recommendation,
accumulated image by image (memory stays flat). ``compkit eda`` reports it; ``compkit plan`` turns it into a
recipe."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import cv2
import numpy as np

from compkit.data import SegmentationDataset
from compkit.data.raster import Clip, clip_summary, polygon_clips

SMALL_AREA_PIXELS = 100  # a class smaller than this at the training size is hard to segment
CANDIDATE_SIZES = (256, 384, 512, 768, 1024, 1536, 2048)
OUTLIER_Z = 2.5
WIDTH_BIN = 0.5  # px: widths are counted in a histogram of this step (memory stays flat)
WIDTH_BINS = 2048


def structure_widths(mask: np.ndarray) -> np.ndarray:
    """Widths (px) of a binary mask's structures, one per pixel of its medial ridge: twice the distance to the
    background at the ridge of the distance transform, less one (a 1-px line is 1 wide, a 5-px bar 5). Area alone
    hides thin structures: a vessel tree is large in area and 1-10 px wide."""
    if not mask.any():
        return np.zeros(0, np.float32)
    padded = np.pad(mask.astype(np.uint8), 1)  # structures touching the border are measured to it
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ridge = (distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8))) & (distance > 0)
    return 2 * distance[ridge] - 1


def hand_angle(mask: np.ndarray) -> float:
    """Orientation in degrees (0 = upright) of the labelled area's main axis, from second moments."""
    fg = mask.any(axis=0).astype(np.uint8)
    m = cv2.moments(fg, binaryImage=True)
    if m["m00"] == 0:
        return 0.0
    angle = 0.5 * math.degrees(math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"]))  # from the x axis
    return float((angle + 90.0 + 90.0) % 180.0 - 90.0)  # relative to vertical, in [-90, 90)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return (math.nan, math.nan)
    return (float(xs.mean() + 0.5) / mask.shape[1], float(ys.mean() + 0.5) / mask.shape[0])


def _nan_stat(stat, values: np.ndarray) -> float:
    return float(stat(values)) if np.isfinite(values).any() else 0.0


def fingerprint_of(dataset: SegmentationDataset, on_image=None, progress=None) -> dict[str, Any]:
    """The fingerprint of a dataset's images (streamed one at a time); ``on_image(i, sample, image, mask)`` sees
    each image as it goes by, ``progress`` (a rich Progress) shows how far it is."""
    fp = Fingerprint(dataset.classes)
    task = progress.add_task("reading images", total=len(dataset)) if progress is not None else None
    for i, sample in enumerate(dataset.samples):
        image = dataset.read_image(sample)
        mask = dataset.read_mask(sample, image.shape[:2])
        ignore = dataset.read_ignore(sample, image.shape[:2])  # a field of view: outside it is not data
        fp.add(sample.image_id, image, mask, None if ignore is None else ~ignore.astype(bool).any(axis=0))
        fp.clips += polygon_clips(sample.polygons, image.shape[:2], dataset.classes, sample.label_path)
        if on_image is not None:
            on_image(i, sample, image, mask)
        if progress is not None:
            progress.advance(task)
    return fp.result(dataset, [s.meta for s in dataset.samples])


class Fingerprint:
    """Accumulates statistics image by image."""

    def __init__(self, classes: tuple[str, ...]):
        self.classes = classes
        c = len(classes)
        self.sizes: Counter = Counter()
        self.histogram = np.zeros(256, np.int64)
        self.field_of_view_pixels = (
            0  # pixels the intensity statistics saw (inside a field of view, where there is one)
        )
        self.image_pixels = 0
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
        self.centroids: list[
            np.ndarray
        ] = []  # per image, per class (x, y) as fractions of the width/height; nan: absent
        self.grey_images = 0
        self.clips: list[Clip] = []  # how far each polygon runs out of its image (polygon formats)
        self.widths = np.zeros((c, WIDTH_BINS), np.int64)  # per class, a histogram of structure widths

    def add(self, image_id: str, image: np.ndarray, mask: np.ndarray, inside: np.ndarray | None = None) -> None:
        """One image; ``inside`` (H, W) bool: its field of view, where the intensity statistics are taken."""
        is_grey = image.ndim == 2 or bool(
            (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        )
        self.grey_images += is_grey
        grey = image if image.ndim == 2 else image[..., 0] if is_grey else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        self.ids.append(image_id)
        self.sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
        seen = grey[inside] if inside is not None and inside.any() else grey.ravel()
        self.field_of_view_pixels += seen.size
        self.image_pixels += grey.size
        self.histogram += np.bincount(seen, minlength=256)
        self.image_means.append(float(seen.mean()))
        self.image_stds.append(float(seen.std()))
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
        self.centroids.append(np.array([_centroid(m) for m in mask]))
        for c, m in enumerate(mask):
            bins = np.minimum((structure_widths(m) / WIDTH_BIN).astype(np.int64), WIDTH_BINS - 1)
            self.widths[c] += np.bincount(bins, minlength=WIDTH_BINS)

    def result(self, dataset: SegmentationDataset, metas: list[dict[str, Any]]) -> dict[str, Any]:
        areas = np.stack(self.areas).astype(np.float64)
        per_class = self._per_class(areas)
        return {
            "images": len(self.ids),
            "classes": list(self.classes),
            "format": dataset.format_name,
            "image_sizes": dict(self.sizes),
            "intensity": self._intensity(),
            "per_class": per_class,
            "overlap_matrix": self.overlap.tolist(),
            "top_overlaps": self._top_overlaps(10),
            "grey_fraction": self.grey_images / max(len(self.ids), 1),
            "rotation_std": float(np.std(self.angles)),
            "multilabel_pixel_fraction": self.multi_pixels / max(self.labelled_pixels, 1),
            "labelled_pixel_fraction": self.labelled_pixels / max(self.total_pixels, 1),
            "clipped_polygons": clip_summary(self.clips, self.classes),
            "meta": summarise_meta(metas),
            "outliers": self._outliers(areas.sum(axis=1)),
            "recommendation": self._recommendation(per_class),
        }

    def _per_class(self, areas: np.ndarray) -> dict[str, dict[str, Any]]:
        comps = np.stack(self.components)
        present = areas > 0
        centroids = np.stack(self.centroids)
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
                # Structure width along the medial ridge (px at the original size): median and the thin end.
                "width_median": self.width_quantile(c, 0.5),
                "width_p10": self.width_quantile(c, 0.1),
                # Where the class lies (fractions of the width and height): a class always on one side is side-specific.
                "centroid_x_mean": _nan_stat(np.nanmean, centroids[:, c, 0]),
                "centroid_x_std": _nan_stat(np.nanstd, centroids[:, c, 0]),
                "centroid_y_mean": _nan_stat(np.nanmean, centroids[:, c, 1]),
                "centroid_y_std": _nan_stat(np.nanstd, centroids[:, c, 1]),
            }
        return per_class

    def width_quantile(self, c: int, q: float) -> float:
        counts = self.widths[c]
        if not counts.any():
            return 0.0
        position = int(np.searchsorted(np.cumsum(counts), q * counts.sum()))
        return position * WIDTH_BIN  # the bin's lower edge: whole widths come out exact

    def _intensity(self) -> dict[str, Any]:
        levels = np.arange(256)
        mean = np.average(levels, weights=self.histogram)
        return {
            "mean": float(mean),
            "std": float(math.sqrt(np.average((levels - mean) ** 2, weights=self.histogram))),
            "image_mean_range": [float(min(self.image_means)), float(max(self.image_means))],
            "histogram": self.histogram.tolist(),
            # below 1 where the dataset has a field of view: the statistics leave the outside (e.g. black) out
            "field_of_view_fraction": self.field_of_view_pixels / max(self.image_pixels, 1),
        }

    def _top_overlaps(self, count: int) -> list[dict[str, Any]]:
        """The class pairs sharing the most pixels, most first."""
        overlap = self.overlap.copy()
        np.fill_diagonal(overlap, 0)
        n = len(self.classes)
        pairs = sorted(
            (
                (int(overlap[i, j]), self.classes[i], self.classes[j])
                for i in range(n)
                for j in range(i + 1, n)
                if overlap[i, j]
            ),
            reverse=True,
        )
        return [{"classes": [a, b], "pixels": pixels} for pixels, a, b in pairs[:count]]

    def _recommendation(self, per_class: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The training size the smallest class asks for: the sizes at which it falls under SMALL_AREA_PIXELS."""
        size = int(np.median([int(s.split("x")[0]) for s in self.sizes.elements()]))
        smallest = min(per_class, key=lambda n: per_class[n]["area_mean"] if per_class[n]["frequency"] else math.inf)
        small_area = per_class[smallest]["area_mean"]
        below = [s for s in CANDIDATE_SIZES if s <= size and small_area * (s / size) ** 2 < SMALL_AREA_PIXELS]
        if below:
            advice = f"at {max(below)} px or less it falls under {SMALL_AREA_PIXELS} px: train larger."
        else:
            advice = f"it stays above {SMALL_AREA_PIXELS} px at every size down to {CANDIDATE_SIZES[0]} px."
        return {
            "smallest_class": smallest,
            "smallest_class_area": small_area,
            "original_size": size,
            "min_area_pixels": SMALL_AREA_PIXELS,
            "sizes_below_min_area": below,
            "text": f"{smallest} averages {small_area:.0f} px at {size} px; {advice}",
        }

    def _outliers(self, total_area: np.ndarray) -> list[dict[str, Any]]:
        found = []
        for kind, values in (
            ("brightness", np.array(self.image_means)),
            ("labelled area", total_area),
            ("rotation", np.array(self.angles)),
        ):
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
            summary[col] = {
                "type": "numeric",
                "count": len(numeric),
                "mean": float(np.mean(numeric)),
                "min": float(min(numeric)),
                "max": float(max(numeric)),
            }
        elif values:
            summary[col] = {"type": "categorical", "counts": dict(Counter(map(str, values)))}
    return summary
