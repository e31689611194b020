"""The hand-bone X-ray competition layout.

```
<root>/meta_data.xlsx                              # or meta_data.csv
<root>/train/DCM/ID001/image1661130828152_R.png
<root>/train/outputs_json/ID001/image1661130828152_R.json
<root>/test/DCM/ID040/image1661319116107.png       # labels, if any, live in a separate folder
```
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from compkit.data.classes import HANDBONE_CLASSES
from compkit.data.formats import SegmentationDataset, register_format
from compkit.data.meta import patient_key, read_meta
from compkit.data.raster import check_points, polygon_clips, rasterize
from compkit.data.sample import Polygon, Sample
from compkit.data.writer import DatasetWriter, trace_polygons
from compkit.util.errors import CompkitError, warn
from compkit.util.fileio import link_or_copy, read_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
META_FILES = ("meta_data.xlsx", "meta_data.csv")


def read_annotations(path: Path, classes: Sequence[str]) -> tuple[Polygon, ...]:
    """The polygons of one label JSON, validated: known labels, at least 3 points each."""
    return _read_label(path, classes)[0]


def _read_label(path: Path, classes: Sequence[str]) -> tuple[tuple[Polygon, ...], dict]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise CompkitError(path, "label JSON has no 'annotations' list")
    index = {name: i for i, name in enumerate(classes)}
    polygons = []
    for n, annotation in enumerate(data["annotations"]):
        label = annotation.get("label") if isinstance(annotation, dict) else None
        if label not in index:
            raise CompkitError(path, f"annotation {n}: unknown label {label!r}")
        try:
            points = np.asarray(annotation.get("points"), dtype=np.float64)
        except (TypeError, ValueError):
            raise CompkitError(path, f"annotation {n} ({label}): points are not [x, y] pairs") from None
        if points.ndim != 2 or points.shape[1] != 2:
            raise CompkitError(path, f"annotation {n} ({label}): points are not [x, y] pairs")
        check_points(points, path, f"annotation {n} ({label})")
        if len(points) < 3:
            raise CompkitError(path, f"annotation {n} ({label}): polygon has {len(points)} points, needs at least 3")
        polygons.append(Polygon(index[label], np.rint(points).astype(np.int32), n))
    metadata = data.get("metadata")
    return tuple(polygons), metadata if isinstance(metadata, dict) else {}


def find_meta_file(root: Path) -> Path | None:
    for name in META_FILES:
        if (root / name).is_file():
            return root / name
    return None


class HandBoneWriter(DatasetWriter):
    """The hand-bone layout: images under ``train/DCM``, polygons traced from the masks into ``train/outputs_json``;
    originals are linked, not rewritten."""

    def original(self, sample: Sample) -> None:
        link_or_copy(sample.image_path, self.out / "train" / "DCM" / sample.image_id)
        link_or_copy(
            sample.label_path, self.out / "train" / "outputs_json" / Path(sample.image_id).with_suffix(".json")
        )

    def labelled(self, sample: Sample, mask: np.ndarray, metadata: dict | None = None) -> None:
        link_or_copy(sample.image_path, self.out / "train" / "DCM" / sample.image_id)
        self._labels(sample.image_id, mask, metadata or {})

    def new(self, image_id: str, image: np.ndarray, mask: np.ndarray, metadata: dict | None = None) -> None:
        path = self.out / "train" / "DCM" / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        self._labels(image_id, mask, metadata or {})

    def _labels(self, image_id: str, mask: np.ndarray, metadata: dict) -> None:
        annotations = [
            {"id": f"{c}-{n}", "type": "poly_seg", "attributes": {}, "points": points, "label": name}
            for c, name in enumerate(self.dataset.classes)
            for n, points in enumerate(trace_polygons(mask[c]))
        ]
        label = self.out / "train" / "outputs_json" / Path(image_id).with_suffix(".json")
        label.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "filename": Path(image_id).name,
            "metadata": metadata,
            "attributes": {},
            "last_workers": {},
            "annotations": annotations,
        }
        label.write_text(json.dumps(data), encoding="utf-8")


@register_format
class HandBoneDataset(SegmentationDataset):
    """The hand-bone X-ray layout: ``<split>/DCM`` images, ``<split>/outputs_json`` polygons."""

    format_name = "handbone"
    patients_from = "the patient folder each image is in (train/<patient>/...)"
    writer_class = HandBoneWriter

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "train" / "DCM").is_dir() or (root / "test" / "DCM").is_dir()

    @classmethod
    def open(
        cls, root: Path, split: str = "train", labels: str | Path | None = None, classes: Sequence[str] | None = None
    ) -> HandBoneDataset:
        classes = tuple(classes or HANDBONE_CLASSES)
        image_dir = root / split / "DCM"
        if not image_dir.is_dir():
            raise CompkitError(image_dir, f"missing image folder (expected {split}/DCM in the dataset)")
        if labels is not None:
            label_dir: Path | None = Path(labels) / "outputs_json"
            if not label_dir.is_dir():
                raise CompkitError(label_dir, "missing label folder")
        else:
            label_dir = root / split / "outputs_json"
            if not label_dir.is_dir():
                if split == "train":
                    raise CompkitError(label_dir, "missing label folder (expected train/outputs_json)")
                label_dir = None  # unlabelled test split

        meta_file = find_meta_file(root)
        meta = read_meta(meta_file) if meta_file else {}

        samples = []
        paths = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise CompkitError(image_dir, "no images found")
        for image_path in paths:
            rel = image_path.relative_to(image_dir)
            image_id = rel.as_posix()
            patient = rel.parts[0] if len(rel.parts) > 1 else image_path.stem
            label_path = None
            polygons: tuple[Polygon, ...] = ()
            extra: dict = {}
            if label_dir is not None:
                label_path = (label_dir / rel).with_suffix(".json")
                if not label_path.is_file():
                    raise CompkitError(image_path, f"image has no label JSON (expected {label_path})")
                polygons, metadata = _read_label(label_path, classes)
                # `compkit augment`: what an image was made from, so that folds never leak.
                extra = {key: metadata[key] for key in ("augmented", "source_patients") if metadata.get(key)}
            samples.append(
                Sample(
                    image_id=image_id,
                    patient=patient,
                    image_path=image_path,
                    label_path=label_path,
                    polygons=polygons,
                    meta={**meta.get(patient_key(patient), {}), **extra},
                )
            )
        if label_dir is not None:
            stems = {Path(s.image_id).with_suffix("").as_posix() for s in samples}
            orphans = sorted(
                p for p in label_dir.rglob("*.json") if p.relative_to(label_dir).with_suffix("").as_posix() not in stems
            )
            if orphans:
                warn(
                    label_dir,
                    f"{len(orphans)} label JSONs have no image and are not used (first: {orphans[0].relative_to(label_dir)})",
                )
        samples.sort(key=lambda s: s.image_id)
        return cls(root, split, classes, samples)

    def has_split(self, split: str) -> bool:
        return (self.root / split / "DCM").is_dir()

    def meta_files(self) -> list[Path]:
        meta = find_meta_file(self.root)
        return [meta] if meta is not None else []

    def read_mask(self, sample: Sample, shape: tuple[int, int] | None = None) -> np.ndarray:
        if sample.label_path is None:
            raise CompkitError(sample.image_path, "image has no labels")
        shape = shape or self.image_shape(sample)
        polygon_clips(sample.polygons, shape, self.classes, sample.label_path)  # refuses what cannot be clipped
        return rasterize(sample.polygons, len(self.classes), shape)
