"""COCO-style polygon annotations::

    <root>/annotations/instances_<split>.json   # images, categories, annotations with polygon segmentation
    <root>/<split>/<file_name>                   # the images

Classes are the categories (by id order); each polygon is rasterised into its category's channel, as for the
hand-bone JSONs. An image's ``patient_id`` field, when present, groups its images in one fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compkit.data.formats import SegmentationDataset, register_format
from compkit.data.raster import check_points, polygon_clips, rasterize
from compkit.data.sample import Polygon, Sample
from compkit.util.errors import CompkitError
from compkit.util.fileio import read_json


@register_format
class CocoDataset(SegmentationDataset):
    """COCO polygon annotations (``annotations/instances_<split>.json``)."""

    format_name = "coco"
    patients_from = "each image's patient_id field (else its file name)"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (
            next((root / "annotations").glob("instances_*.json"), None) is not None
            if (root / "annotations").is_dir()
            else False
        )

    def has_split(self, split: str) -> bool:
        return (self.root / split).is_dir()

    @classmethod
    def open(cls, root: Path, split: str = "train", labels=None, classes: Sequence[str] | None = None):
        ann_root = Path(labels) if labels is not None else root
        ann_path = ann_root / "annotations" / f"instances_{split}.json"
        image_dir = root / split
        if not image_dir.is_dir():
            raise CompkitError(image_dir, f"missing image folder for the {split} split")
        if not ann_path.is_file():
            if split == "train":
                raise CompkitError(ann_path, "missing COCO annotation file")
            return cls(
                root,
                split,
                tuple(classes or cls._classes(root / "annotations" / "instances_train.json")),
                cls._unlabelled(image_dir),
            )
        data = read_json(ann_path)
        for key in ("images", "categories", "annotations"):
            if not isinstance(data.get(key), list):
                raise CompkitError(ann_path, f"COCO file has no '{key}' list")
        categories = sorted(data["categories"], key=lambda c: c["id"])
        names = tuple(classes or (c["name"] for c in categories))
        index = {c["id"]: names.index(c["name"]) for c in categories if c["name"] in names}
        polygons: dict[int, list[Polygon]] = {}
        for n, ann in enumerate(data["annotations"]):
            if ann.get("category_id") not in index:
                raise CompkitError(ann_path, f"annotation {n}: unknown category_id {ann.get('category_id')!r}")
            segmentation = ann.get("segmentation")
            if not isinstance(segmentation, list):
                raise CompkitError(ann_path, f"annotation {n}: only polygon segmentations are supported (found RLE)")
            for flat in segmentation:
                try:
                    points = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
                except (TypeError, ValueError):
                    raise CompkitError(
                        ann_path, f"annotation {n}: a polygon is not a flat list of x, y numbers"
                    ) from None
                check_points(points, ann_path, f"annotation {n}")
                if len(points) < 3:
                    raise CompkitError(ann_path, f"annotation {n}: polygon has {len(points)} points, needs at least 3")
                polygons.setdefault(ann["image_id"], []).append(
                    Polygon(index[ann["category_id"]], np.rint(points).astype(np.int32), n)
                )
        samples = []
        for image in sorted(data["images"], key=lambda i: i["file_name"]):
            path = image_dir / image["file_name"]
            if not path.is_file():
                raise CompkitError(path, f"image listed in {ann_path.name} not found")
            patient = str(image.get("patient_id", Path(image["file_name"]).stem))
            samples.append(
                Sample(
                    Path(image["file_name"]).as_posix(),
                    patient,
                    path,
                    ann_path,
                    tuple(polygons.get(image["id"], ())),
                    {},
                )
            )
        return cls(root, split, names, samples)

    @staticmethod
    def _classes(path: Path) -> list[str]:
        data = read_json(path)
        return [c["name"] for c in sorted(data.get("categories", []), key=lambda c: c["id"])]

    @staticmethod
    def _unlabelled(image_dir: Path) -> list[Sample]:
        paths = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.is_file())
        return [Sample(p.relative_to(image_dir).as_posix(), p.stem, p) for p in paths]

    def read_mask(self, sample: Sample, shape: tuple[int, int] | None = None) -> np.ndarray:
        if sample.label_path is None:
            raise CompkitError(sample.image_path, "image has no labels")
        shape = shape or self.image_shape(sample)
        polygon_clips(sample.polygons, shape, self.classes, sample.label_path)  # refuses what cannot be clipped
        return rasterize(sample.polygons, len(self.classes), shape)
