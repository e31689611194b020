"""The preprocessing cache: every image decoded, CLAHE-equalised if asked, resized to the training size, with
its masks bit-packed, in two memory-mapped arrays. Built once per (dataset, split, size, preprocessing) and
shared by every fold and run; a later run with the same settings opens it instantly.

Layout of ``<cache_dir>/<split>-<size>px-<key>/``: ``images.npy`` (N, S, S, 3) uint8, ``masks.npy``
(N, C, ceil(S*S/8)) uint8 (``np.packbits`` of the (C, S, S) mask), ``index.json`` (image ids, classes, size,
preprocessing).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.progress import Progress

from compkit.data.formats import SegmentationDataset
from compkit.data.sample import Sample
from compkit.errors import CompkitError
from compkit.fileio import AtomicFolder, read_json

CACHE_VERSION = 1


def apply_clahe(image: np.ndarray, clip_limit: float, tile_grid: int) -> np.ndarray:
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    if image.ndim == 2:
        return clahe.apply(image)
    return cv2.merge([clahe.apply(np.ascontiguousarray(image[..., c])) for c in range(image.shape[2])])


def foreground_box(image: np.ndarray, level: int = 10) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the pixels brighter than ``level``: the eye disk of a fundus photograph without its
    black border. The whole image when nothing is that bright."""
    grey = image if image.ndim == 2 else image.max(axis=2)
    rows = np.flatnonzero((grey > level).any(axis=1))
    cols = np.flatnonzero((grey > level).any(axis=0))
    if not len(rows) or not len(cols):
        return 0, image.shape[0], 0, image.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def prepare_image(image: np.ndarray, size: int, clahe: dict[str, Any] | None = None, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Original BGR image -> (size, size, 3) uint8 RGB: crop to ``box``, CLAHE, then area resizing."""
    if box is not None:
        image = image[box[0] : box[1], box[2] : box[3]]
    if clahe:
        image = apply_clahe(image, clahe["clip_limit"], clahe["tile_grid"])
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) -> (C, size, size) with nearest-neighbour sampling, as the competition baseline resizes labels."""
    if mask.shape[1:] == (size, size):
        return mask
    # cv2 resizes at most 512 channels at once and wants (H, W, C).
    resized = cv2.resize(np.ascontiguousarray(mask.transpose(1, 2, 0)), (size, size), interpolation=cv2.INTER_NEAREST)
    if resized.ndim == 2:
        resized = resized[..., None]
    return np.ascontiguousarray(resized.transpose(2, 0, 1))


def load_sample(
    dataset: SegmentationDataset,
    sample: Sample,
    size: int,
    clahe: dict[str, Any] | None = None,
    crop: bool = False,
    intensity: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int, int] | None]:
    """The uncached path: decode, rasterise at the original size, crop, resize. (image HWC, mask CHW or None, box)."""
    image = dataset.read_image(sample, intensity)
    box = foreground_box(image) if crop else None
    mask = None
    if sample.label_path is not None:
        mask = dataset.read_mask(sample, image.shape[:2])
        if box is not None:
            mask = mask[:, box[0] : box[1], box[2] : box[3]]
        mask = resize_mask(mask, size)
    return prepare_image(image, size, clahe, box), mask, box


def load_ignore(dataset: SegmentationDataset, sample: Sample, size: int, box: tuple[int, int, int, int] | None) -> np.ndarray | None:
    """The sample's ignore mask (soft pseudo-labels), framed and resized like its labels, or None."""
    ignore = dataset.read_ignore(sample, dataset.image_shape(sample))
    if ignore is None:
        return None
    if box is not None:
        ignore = ignore[:, box[0] : box[1], box[2] : box[3]]
    return resize_mask(ignore, size)


def _fingerprint(dataset: SegmentationDataset, size: int, clahe: dict[str, Any] | None, crop: bool, intensity: str) -> str:
    files = []
    for s in dataset.samples:
        for path in dataset.source_files(s):
            stat = path.stat()
            files.append((str(path), stat.st_size, stat.st_mtime_ns))
    ignore_dir = dataset.root / "ignore"
    if ignore_dir.is_dir():
        files.append((str(ignore_dir), 0, ignore_dir.stat().st_mtime_ns))
    key = json.dumps(
        {
            "v": CACHE_VERSION,
            "format": dataset.format_name,
            "classes": dataset.classes,
            "size": size,
            "clahe": clahe,
            "crop": crop,
            "intensity": intensity,
            "files": files,
        },
        sort_keys=True,
    )
    return hashlib.sha1(key.encode()).hexdigest()[:12]


class SampleCache:
    """Read access to a built cache: ``image(i)`` (S, S, 3) uint8 RGB and ``mask(i)`` (C, S, S) uint8."""

    def __init__(self, folder: Path):
        self.folder = folder
        index = read_json(folder / "index.json")
        self.image_ids: list[str] = index["image_ids"]
        self.classes: list[str] = index["classes"]
        self.size: int = index["size"]
        self.has_masks: bool = index["has_masks"]
        self.boxes: list[list[int] | None] = index.get("boxes") or [None] * len(self.image_ids)
        self.position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.images = np.load(folder / "images.npy", mmap_mode="r")
        self.masks = np.load(folder / "masks.npy", mmap_mode="r") if self.has_masks else None
        self.ignores = np.load(folder / "ignore.npy", mmap_mode="r") if (folder / "ignore.npy").is_file() else None

    def __len__(self) -> int:
        return len(self.image_ids)

    def box(self, i: int) -> tuple[int, int, int, int] | None:
        """The crop (y0, y1, x0, x1) of the original image that the cached image shows, or None for all of it."""
        return tuple(self.boxes[i]) if self.boxes[i] is not None else None

    def image(self, i: int) -> np.ndarray:
        return np.asarray(self.images[i])

    def ignore(self, i: int) -> np.ndarray | None:
        """(C, S, S) uint8 pixels the loss ignores, or None when the dataset has no ignore masks."""
        if self.ignores is None:
            return None
        bits = np.unpackbits(self.ignores[i], axis=-1, count=self.size * self.size)
        return bits.reshape(len(self.classes), self.size, self.size)

    def mask(self, i: int) -> np.ndarray:
        if self.masks is None:
            raise KeyError(f"{self.folder}: no masks cached")
        bits = np.unpackbits(self.masks[i], axis=-1, count=self.size * self.size)
        return bits.reshape(len(self.classes), self.size, self.size)


def reserved_memmap(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 ``.npy`` memory map whose disk space is reserved first: writing through a map onto a full disk
    kills the process with SIGBUS, so a full disk must fail here, as an ordinary error, before any data."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as e:
        raise CompkitError(path, f"cannot write the preprocessing cache: {e.strerror or e} (set data.cache_dir to a disk with room)") from None
    return array


def cache_root(dataset: SegmentationDataset, cache_dir: str | Path | None = None) -> Path:
    """``data.cache_dir``, else ``DATA/.compkit-cache``; for a read-only dataset (a Kaggle input) the user's cache
    folder (``$COMPKIT_CACHE`` or ``~/.cache/compkit``), one subfolder per dataset location."""
    if cache_dir:
        return Path(cache_dir)
    if os.access(dataset.root, os.W_OK) and not read_only_mount(dataset.root):
        return dataset.root / ".compkit-cache"
    where = hashlib.sha1(str(dataset.root.resolve()).encode()).hexdigest()[:10]
    return Path(os.environ.get("COMPKIT_CACHE", Path.home() / ".cache" / "compkit")) / f"{dataset.root.name}-{where}"


def read_only_mount(path: Path) -> bool:
    """Whether ``path`` lies on a read-only file system (root may write anywhere else, so ask the mount)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def build_cache(
    dataset: SegmentationDataset,
    size: int,
    clahe: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    console: Console | None = None,
    crop: bool = False,
    intensity: str | None = None,
) -> SampleCache:
    """Open the cache for these settings, building it first if needed (atomically: a temp folder renamed).

    ``intensity``: how images of more than 8 bits become 8-bit (default: the dataset's rule)."""
    console = console or Console()
    root = cache_root(dataset, cache_dir)
    intensity = intensity or dataset.intensity
    folder = root / f"{dataset.split}-{size}px-{_fingerprint(dataset, size, clahe, crop, intensity)}"
    if (folder / "index.json").is_file():
        return SampleCache(folder)
    try:
        atomic = AtomicFolder(folder)
    except CompkitError as e:
        raise CompkitError(root, f"cannot write the preprocessing cache: {e.problem.removeprefix('cannot write: ')} (set data.cache_dir)") from None
    with atomic as staging:
        n, c = len(dataset.samples), len(dataset.classes)
        has_masks = all(s.label_path is not None for s in dataset.samples)
        images = reserved_memmap(staging / "images.npy", (n, size, size, 3))
        masks = None
        if has_masks:
            packed = (size * size + 7) // 8
            masks = reserved_memmap(staging / "masks.npy", (n, c, packed))
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"caching {dataset.split} at {size}px", total=n)
            boxes = []
            ignores = None
            for i, sample in enumerate(dataset.samples):
                image, mask, box = load_sample(dataset, sample, size, clahe, crop, intensity)
                boxes.append(list(box) if box is not None else None)
                images[i] = image
                ignore = load_ignore(dataset, sample, size, box) if has_masks else None
                if ignore is not None:
                    if ignores is None:
                        shape = (n, c, (size * size + 7) // 8)
                        ignores = reserved_memmap(staging / "ignore.npy", shape)
                    ignores[i] = np.packbits(ignore.reshape(c, -1), axis=-1)
                if masks is not None:
                    masks[i] = np.packbits(mask.reshape(c, -1), axis=-1)
                progress.advance(task)
        images.flush()
        del images
        if ignores is not None:
            ignores.flush()
            del ignores
        if masks is not None:
            masks.flush()
            del masks
        index = {
            "version": CACHE_VERSION,
            "image_ids": [s.image_id for s in dataset.samples],
            "classes": list(dataset.classes),
            "size": size,
            "clahe": clahe,
            "has_masks": has_masks,
            "boxes": boxes if crop else None,
        }
        (staging / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return SampleCache(folder)
