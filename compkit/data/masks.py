"""Mask-folder datasets (the FGADR Seg-set layout) and ISIC skin-lesion datasets: labels are mask images.

FGADR::

    <root>[/<split>]/Original_Images/0001_2.png
    <root>[/<split>]/Microaneurysms_Masks/0001_2.png     # one folder per class, same file names;
    <root>[/<split>]/HardExudate_Masks/...                # a class may lack an image's mask (= empty)
    <root>/*.csv                                          # image-level values (e.g. the DR grade)

ISIC 2018 / HAM10000::

    <root>[/<split>]/.../ISIC_0024306.jpg
    <root>[/<split>]/.../ISIC_0024306_segmentation.png    # 0/255
    <root>/*metadata*.csv                                  # lesion_id, image_id, dx, age, sex, localization

Masks are anti-aliased: a pixel belongs to the class where the mask is at least 128 (palette, 0/1, 16-bit and
RGBA masks by what they mean: :func:`binary_foreground`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from compkit.data.formats import SegmentationDataset, register_format
from compkit.data.sample import Sample
from compkit.data.writer import DatasetWriter
from compkit.util.errors import CompkitError
from compkit.util.fileio import open_text, read_text
from compkit.util.imageio import LabelImage, read_label

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_FILE_SUFFIXES = (*IMAGE_SUFFIXES, *(s.upper() for s in IMAGE_SUFFIXES))  # a.TIF's mask may be a.png or a.PNG
MASK_THRESHOLD = 128


def binary_foreground(label: LabelImage, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """A binary mask's foreground (bool), by what the file means: palette files where the index is not 0 (index 0
    is the background, as VOC and CVAT write it); grey files where the value is at least ``threshold`` (8-bit;
    anti-aliased and JPEG masks), where it is 1 in a lossless 0/1 file, and for 16-bit files with values past 255
    at the same share of the range (``threshold`` x 256: 32768 for 128); colour files by their grey value."""
    values = label.values
    if label.palette is not None:
        return values != 0
    grey = values if values.ndim == 2 else cv2.cvtColor(values, cv2.COLOR_BGR2GRAY)
    top = int(grey.max()) if grey.size else 0
    if top == 1 and not label.lossy:
        return grey >= 1
    if grey.dtype == np.uint16 and top > 255:
        return grey >= threshold * 256
    return grey >= threshold


def read_binary_mask(path: Path, shape: tuple[int, int], threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """A binary mask file (any image kind: PNG, palette PNG, 16-bit, RGBA, GIF, 1-bit BMP, JPEG with compression
    noise) as 0/1 uint8, foreground by :func:`binary_foreground`."""
    label = read_label(path)
    if label.values.shape[:2] != shape:
        height, width = label.values.shape[:2]
        raise CompkitError(path, f"mask is {width}x{height}, its image is {shape[1]}x{shape[0]}")
    return binary_foreground(label, threshold).astype(np.uint8)


def parse_number(value: str) -> Any:
    """A CSV cell as int, float, None (empty) or the stripped string."""
    try:
        number = float(value)
    except ValueError:
        return value.strip() or None
    return int(number) if number.is_integer() else number


def read_image_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV as (header, rows); a header-less file gets column names ``image``, ``value1``, ..."""
    try:
        with open_text(path, csv=True) as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CompkitError(path, f"unreadable CSV ({e})") from None
    if not rows:
        return [], []
    first = rows[0]
    has_header = not any(Path(c).suffix.lower() in IMAGE_SUFFIXES for c in first) and not all(
        isinstance(parse_number(c), (int, float)) for c in first[1:]
    )
    if has_header:
        return [c.strip() for c in first], rows[1:]
    width = len(first)
    return ["image"] + (["grade"] if width == 2 else [f"value{i}" for i in range(1, width)]), rows


def _split_base(root: Path, split: str, marker) -> Path:
    if marker(root / split):
        return root / split
    if split == "train" and marker(root):
        return root
    raise CompkitError(root / split, f"missing {split} split")


AUGMENTED_CSV = "augmented.csv"
CLASSES_FILE = "classes.txt"  # the class order of a written copy (folder names alone would sort it)


class MaskFolderWriter(DatasetWriter):
    """The ``masks`` layout: ``train/Original_Images/<id>.png`` and one ``train/<Class>_Masks/<id>.png`` per class
    (0/255); source patients in ``augmented.csv`` so that folds still group by them."""

    def new(self, image_id: str, image: np.ndarray, mask: np.ndarray, metadata: dict | None = None) -> None:
        metadata = metadata or {}
        image_id = Path(image_id).with_suffix(".png").as_posix()
        path = self.out / "train" / MaskFolderDataset.image_dir / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        for c, cls in enumerate(self.dataset.classes):
            target = self.out / "train" / f"{cls}{MaskFolderDataset.mask_suffix}" / image_id
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), mask[c].astype(np.uint8) * 255)
        if metadata.get("source_patients"):  # the masks layout keeps image-level values in a CSV
            with open(self.out / AUGMENTED_CSV, "a", encoding="utf-8") as f:
                if f.tell() == 0:
                    f.write("image,source_patients,augmented\n")
                f.write(f"{image_id},{'|'.join(metadata['source_patients'])},{int(bool(metadata.get('augmented')))}\n")

    def finish(self) -> None:
        super().finish()
        (self.out / CLASSES_FILE).write_text("\n".join(self.dataset.classes) + "\n", encoding="utf-8")


@register_format
class MaskFolderDataset(SegmentationDataset):
    """Mask folders (FGADR): ``Original_Images/`` and one ``<Class>_Masks/`` folder per class."""

    format_name = "masks"
    patients_from = "the meta table's patient column (else each image's name)"
    writer_class = MaskFolderWriter
    rle_order = "F"  # most Kaggle competitions flatten column-major
    image_dir = "Original_Images"
    mask_suffix = "_Masks"

    def __init__(self, root, split, classes, samples, mask_files: dict[str, dict[int, Path]]):
        super().__init__(root, split, classes, samples)
        self.mask_files = mask_files

    @classmethod
    def _has_images(cls, folder: Path) -> bool:
        return (folder / cls.image_dir).is_dir()

    @classmethod
    def detect(cls, root: Path) -> bool:
        return cls._has_images(root) or cls._has_images(root / "train")

    def has_split(self, split: str) -> bool:
        return self._has_images(self.root / split) or (split == "train" and self._has_images(self.root))

    @classmethod
    def open(cls, root: Path, split: str = "train", labels=None, classes: Sequence[str] | None = None):
        base = _split_base(root, split, cls._has_images)
        label_base = Path(labels) if labels is not None else base
        mask_dirs = (
            {
                p.name[: -len(cls.mask_suffix)]: p
                for p in label_base.iterdir()
                if p.is_dir() and p.name.endswith(cls.mask_suffix)
            }
            if label_base.is_dir()
            else {}
        )
        if classes is None and (root / CLASSES_FILE).is_file():  # a written copy keeps its source's class order
            classes = [c.strip() for c in read_text(root / CLASSES_FILE).splitlines() if c.strip()]
        if classes is None:  # the training split's mask folders name the classes (a test set may lack some)
            try:
                train_base = _split_base(root, "train", cls._has_images)
                classes = sorted(
                    p.name[: -len(cls.mask_suffix)]
                    for p in train_base.iterdir()
                    if p.is_dir() and p.name.endswith(cls.mask_suffix)
                )
            except CompkitError:
                classes = sorted(mask_dirs)
        classes = tuple(classes)
        if not classes:
            raise CompkitError(base, f"no <Class>{cls.mask_suffix} folders: the class list is unknown")
        unknown = [c for c in mask_dirs if c not in classes]
        if unknown:
            raise CompkitError(
                mask_dirs[unknown[0]], f"mask folder for unknown class {unknown[0]!r} (classes: {', '.join(classes)})"
            )
        image_dir = base / cls.image_dir
        paths = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise CompkitError(image_dir, "no images found")
        meta = cls._read_meta(root)
        labelled = bool(mask_dirs)
        samples, mask_files = [], {}
        for path in paths:
            image_id = path.relative_to(image_dir).as_posix()
            files = {}
            for c, name in enumerate(classes):
                if name in mask_dirs:
                    candidates = [
                        mask_dirs[name] / image_id,
                        *(mask_dirs[name] / Path(image_id).with_suffix(s) for s in MASK_FILE_SUFFIXES),
                    ]
                    found = next((m for m in candidates if m.is_file()), None)
                    if found is not None:
                        files[c] = found
            values = meta.get(path.stem, meta.get(path.name, {}))
            label = label_base if labelled else None  # the masks are per class; this marks the sample as labelled
            samples.append(Sample(image_id, str(values.get("patient", path.stem)), path, label, (), dict(values)))
            mask_files[image_id] = files
        return cls(root, split, classes, samples, mask_files)

    @staticmethod
    def _read_meta(root: Path) -> dict[str, dict[str, Any]]:
        meta: dict[str, dict[str, Any]] = {}
        for path in sorted(root.glob("*.csv")):
            header, rows = read_image_table(path)
            for row in rows:
                key = row[0].strip()
                values = {h: parse_number(v) for h, v in zip(header[1:], row[1:], strict=False)}
                for name in (key, Path(key).stem):  # several CSVs may describe one image: merge their columns
                    meta.setdefault(name, {}).update(values)
        return meta

    def meta_files(self) -> list[Path]:
        """The image-level CSVs (grades, patients) travel with written copies; compkit's own ``augmented.csv`` is
        written anew."""
        return [p for p in sorted(self.root.glob("*.csv")) if p.name != AUGMENTED_CSV]

    def source_files(self, sample: Sample) -> list[Path]:
        """The image and its class masks (``label_path`` is the masks' folder: it only marks the sample labelled)."""
        return [sample.image_path, *self.mask_files[sample.image_id].values(), *self.ignore_files(sample)]

    def dataset_files(self) -> list[Path]:
        """Also ``classes.txt`` and every root CSV (``augmented.csv`` is read as image-level values too)."""
        classes = self.root / CLASSES_FILE
        extra = [classes] if classes.is_file() else []
        return list(dict.fromkeys([*super().dataset_files(), *extra, *sorted(self.root.glob("*.csv"))]))

    def read_mask(self, sample: Sample, shape: tuple[int, int] | None = None) -> np.ndarray:
        if sample.label_path is None:
            raise CompkitError(sample.image_path, "image has no labels")
        shape = shape or self.image_shape(sample)
        mask = np.zeros((len(self.classes), *shape), np.uint8)
        for c, path in self.mask_files[sample.image_id].items():
            mask[c] = read_binary_mask(path, shape)
        return mask


@register_format
class IsicDataset(SegmentationDataset):
    """ISIC skin lesions: ``<id>.jpg`` beside ``<id>_segmentation.png``."""

    format_name = "isic"
    rle_order = "F"
    mask_suffix = "_segmentation"

    def __init__(self, root, split, classes, samples, mask_files: dict[str, Path]):
        super().__init__(root, split, classes, samples)
        self.mask_files = mask_files

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (
            next(root.rglob(f"ISIC_*{cls.mask_suffix}.png"), None) is not None
            or next(root.rglob("ISIC_*.jpg"), None) is not None
        )

    def has_split(self, split: str) -> bool:
        return (self.root / split).is_dir()

    @classmethod
    def open(cls, root: Path, split: str = "train", labels=None, classes: Sequence[str] | None = None):
        base = _split_base(root, split, lambda p: p.is_dir() and next(p.rglob("ISIC_*.jpg"), None) is not None)
        label_root = Path(labels) if labels is not None else base
        masks = {p.name[: -len(cls.mask_suffix) - 4]: p for p in label_root.rglob(f"*{cls.mask_suffix}.png")}
        images = sorted(p for p in base.rglob("ISIC_*.jpg") if p.is_file())
        if split == "train" and root == base and (root / "test").is_dir():
            images = [p for p in images if (root / "test") not in p.parents]
        meta = cls._read_meta(root)
        samples, files = [], {}
        for path in images:
            image_id = path.relative_to(base).as_posix()
            mask = masks.get(path.stem)
            if split == "train" and mask is None:
                raise CompkitError(path, f"image has no {path.stem}{cls.mask_suffix}.png")
            values = meta.get(path.stem, {})
            samples.append(Sample(image_id, str(values.get("lesion_id") or path.stem), path, mask, (), dict(values)))
            if mask is not None:
                files[image_id] = mask
        if not samples:
            raise CompkitError(base, "no ISIC_*.jpg images found")
        return cls(root, split, tuple(classes or ("lesion",)), samples, files)

    @staticmethod
    def _read_meta(root: Path) -> dict[str, dict[str, Any]]:
        meta: dict[str, dict[str, Any]] = {}
        for path in sorted(root.glob("*.csv")):
            header, rows = read_image_table(path)
            if "image_id" not in header:
                continue
            key = header.index("image_id")
            for row in rows:
                meta[row[key]] = {h: parse_number(v) for h, v in zip(header, row, strict=False) if h != "image_id"}
        return meta

    def dataset_files(self) -> list[Path]:
        """Also the root CSVs the image-level values are read from."""
        return list(dict.fromkeys([*super().dataset_files(), *sorted(self.root.glob("*.csv"))]))

    def read_mask(self, sample: Sample, shape: tuple[int, int] | None = None) -> np.ndarray:
        if sample.label_path is None:
            raise CompkitError(sample.image_path, "image has no labels")
        return read_binary_mask(self.mask_files[sample.image_id], shape or self.image_shape(sample))[None]

    def submission_name(self, sample: Sample) -> str:
        return Path(sample.image_id).stem  # Kaggle-style ids: ISIC_0024306
