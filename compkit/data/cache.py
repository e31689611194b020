"""The preprocessing cache: every image decoded, CLAHE-equalised if asked, resized to the training size, with
its masks bit-packed, in two memory-mapped arrays. Built once per (dataset, split, size, preprocessing) and
shared by every fold and run; a later run with the same settings opens it instantly.

Layout of ``<cache_dir>/<split>-<size>px-<key>/``: ``images.npy`` (N, S, S, 3) uint8, ``masks.npy``
(N, C, ceil(S*S/8)) uint8 (``np.packbits`` of the (C, S, S) mask), ``ignore.npy`` (the same, pixels the loss
ignores, when any sample has some), ``index.json`` (image ids, classes, size, preprocessing, and the signature of
every file each sample and the dataset were read from).

``<key>`` hashes the settings (format, classes, size, CLAHE, crop, intensity, whether there are masks, the image ids
in order, the cache version). The files are checked on every open: samples whose files changed are re-read into a
new folder, the others copied from the old one, and the new folder is swapped in whole; a damaged cache (truncated,
corrupt, half-written) is rebuilt with a note.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console

from compkit.data.formats import SegmentationDataset
from compkit.data.sample import Sample
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError, first_line
from compkit.util.fileio import AtomicFolder, read_json, writable_folder

CACHE_VERSION = 2  # 2: per-sample file signatures in index.json


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


def prepare_image(
    image: np.ndarray, size: int, clahe: dict[str, Any] | None = None, box: tuple[int, int, int, int] | None = None
) -> np.ndarray:
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


def load_ignore(
    dataset: SegmentationDataset, sample: Sample, size: int, box: tuple[int, int, int, int] | None
) -> np.ndarray | None:
    """The sample's ignore mask (soft pseudo-labels), framed and resized like its labels, or None."""
    ignore = dataset.read_ignore(sample, dataset.image_shape(sample))
    if ignore is None:
        return None
    if box is not None:
        ignore = ignore[:, box[0] : box[1], box[2] : box[3]]
    return resize_mask(ignore, size)


def file_signature(path: Path, root: Path) -> list:
    """``[path, size, mtime_ns, ctime_ns, inode]`` of one source file (path relative to the dataset when inside it,
    so that ``DATA`` and ``/abs/DATA`` agree); sizes and times None for a missing file.

    Size and mtime alone miss a same-size rewrite whose mtime was set back (``os.utime``, archives re-extracted
    with their stored times); ctime is set by the kernel on every write, rename or chmod and cannot be set back by
    users, and the inode changes when a file is replaced by a new one. A content hash would read every image again
    on every open (800 X-rays of 2048 px: gigabytes); this costs one ``stat``. A hard link or chmod also moves
    ctime: the sample is then re-read for nothing, never kept stale."""
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path.absolute())
    try:
        stat = path.stat()
    except OSError:
        return [name, None, None, None, None]
    return [name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def file_signatures(paths: list[Path], root: Path) -> list[list]:
    return [file_signature(p, root) for p in paths]


@dataclass(frozen=True)
class SourceSignatures:
    """The signatures (:func:`file_signature`) of the files a cache is built from: per sample (``samples[i]``: the
    files of sample ``i``), and the dataset's own (description, class list, meta table) that every sample reads."""

    samples: list[list[list]]
    dataset: list[list]

    @classmethod
    def of(cls, dataset: SegmentationDataset) -> SourceSignatures:
        """The signatures of ``dataset``'s files now (each sample's first, then the dataset's)."""
        samples = [file_signatures(dataset.source_files(s), dataset.root) for s in dataset.samples]
        return cls(samples, file_signatures(dataset.dataset_files(), dataset.root))


def cache_settings(
    dataset: SegmentationDataset, size: int, clahe: dict[str, Any] | None, crop: bool, intensity: str
) -> dict[str, Any]:
    """What a cache folder is keyed by: everything that changes every entry, and the entries' ids in order."""
    return {
        "version": CACHE_VERSION,
        "format": dataset.format_name,
        "classes": list(dataset.classes),
        "size": size,
        "clahe": clahe,
        "crop": crop,
        "intensity": intensity,
        "has_masks": all(s.label_path is not None for s in dataset.samples),
        "image_ids": [s.image_id for s in dataset.samples],
    }


def settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


class BrokenCache(CompkitError):
    """A cache folder that does not read as it was written (truncated, corrupt or half-written files)."""


class SampleCache:
    """Read access to a built cache: ``image(i)`` (S, S, 3) uint8 RGB and ``mask(i)`` (C, S, S) uint8."""

    def __init__(self, folder: Path):
        """Open a built cache, checking that its files are whole (else :class:`BrokenCache`)."""
        self.folder = folder
        try:
            index = read_json(folder / "index.json")
        except CompkitError as e:
            raise BrokenCache(e.path, e.problem) from None
        try:
            self.settings: dict[str, Any] = dict(index["settings"])
            self.image_ids: list[str] = list(index["image_ids"])
            self.classes: list[str] = list(index["classes"])
            self.size: int = int(index["size"])
            self.has_masks: bool = bool(index["has_masks"])
            has_ignores = bool(index["has_ignores"])
            n = len(self.image_ids)
            self.boxes: list[list[int] | None] = list(index.get("boxes") or [None] * n)
            #: Per sample, the signatures of its source files (:func:`file_signature`); and the dataset's own.
            self.sources: list[list[list]] = list(index["sources"])
            self.dataset_sources: list[list] = list(index["dataset_sources"])
            if not (len(self.boxes) == len(self.sources) == n):
                raise ValueError(f"{n} images but {len(self.sources)} signatures and {len(self.boxes)} boxes")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BrokenCache(folder / "index.json", f"not a cache index ({type(e).__name__}: {e})") from None
        self.position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        packed = (self.size * self.size + 7) // 8
        self.images = self._array("images.npy", (n, self.size, self.size, 3))
        self.masks = self._array("masks.npy", (n, len(self.classes), packed)) if self.has_masks else None
        self.ignores = self._array("ignore.npy", (n, len(self.classes), packed)) if has_ignores else None

    def _array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self.folder / name
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (
            OSError,
            ValueError,
            EOFError,
        ) as e:  # missing, truncated ("mmap length is greater than file size"), not .npy
            raise BrokenCache(path, f"unreadable ({first_line(e)})") from None
        if array.shape != shape or array.dtype != np.uint8:
            raise BrokenCache(path, f"holds {array.dtype} {array.shape}, index.json says uint8 {shape}")
        return array

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
        raise CompkitError(
            path, f"cannot write the preprocessing cache: {e.strerror or e} (set data.cache_dir to a disk with room)"
        ) from None
    return array


def cache_root(dataset: SegmentationDataset, cache_dir: str | Path | None = None) -> Path:
    """``data.cache_dir``, else ``DATA/.compkit-cache``; for a read-only dataset (a Kaggle input) the user's cache
    folder (``$COMPKIT_CACHE`` or ``~/.cache/compkit``), one subfolder per dataset location."""
    if cache_dir:
        return Path(cache_dir)
    if writable_folder(dataset.root):
        return dataset.root / ".compkit-cache"
    where = hashlib.sha1(str(dataset.root.resolve()).encode()).hexdigest()[:10]
    return Path(os.environ.get("COMPKIT_CACHE", Path.home() / ".cache" / "compkit")) / f"{dataset.root.name}-{where}"


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

    A built cache is checked against the files it was built from: samples whose files changed are re-read (the
    others copied), into a new folder swapped in whole, so that readers of the old one keep theirs; a cache that
    does not read as written is rebuilt. Each prints one line.

    ``intensity``: how images of more than 8 bits become 8-bit (default: the dataset's rule)."""
    console = console or output_console()
    root = cache_root(dataset, cache_dir)
    intensity = intensity or dataset.intensity
    settings = cache_settings(dataset, size, clahe, crop, intensity)
    folder = root / f"{dataset.split}-{size}px-{settings_key(settings)}"
    # Signed before anything is read: a file changed while it is being read is re-read next time, never kept.
    signatures = SourceSignatures.of(dataset)
    sources, shared = signatures.samples, signatures.dataset
    old = open_built(folder, settings, console)
    changed = list(range(len(dataset.samples)))
    if old is not None:
        if old.dataset_sources != shared:  # a description, class list or meta table: every sample may read otherwise
            names = sorted(
                {e[0] for e in shared if e not in old.dataset_sources}
                | {e[0] for e in old.dataset_sources if e not in shared}
            )
            note(console, f"cache: {', '.join(names)} changed since it was built: all {len(changed)} images re-read")
            old = None
        else:
            changed = [i for i, files in enumerate(sources) if files != old.sources[i]]
            if not changed:
                return old
            note(console, f"cache: {len(changed)} of {len(sources)} images changed since it was built: re-read")
    write_cache(folder, dataset, settings, signatures, changed, old, console)
    return SampleCache(folder)


def note(console: Console, line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def open_built(folder: Path, settings: dict[str, Any], console: Console) -> SampleCache | None:
    """The cache built in ``folder``, or None where there is none or it is damaged (said in one line)."""
    if not folder.exists():
        return None
    try:
        cache = SampleCache(folder)
        if {**cache.settings, "image_ids": cache.image_ids} != json.loads(json.dumps(settings)):
            raise BrokenCache(folder / "index.json", "written for other settings")
    except BrokenCache as e:
        note(console, f"cache: {e}: rebuilt")
        return None
    return cache


def write_cache(
    folder: Path,
    dataset: SegmentationDataset,
    settings: dict[str, Any],
    signatures: SourceSignatures,
    changed: list[int],
    old: SampleCache | None,
    console: Console,
) -> None:
    """Write the cache into a staging folder and swap it in: the ``changed`` samples decoded, the others copied from
    ``old`` (the same settings, so the same entries in the same places); ``signatures``: of the files read, for the
    index (signed before they were read)."""
    size, clahe, crop, intensity, has_masks = (settings[k] for k in ("size", "clahe", "crop", "intensity", "has_masks"))
    try:
        atomic = AtomicFolder(folder)
    except CompkitError as e:
        raise CompkitError(
            folder.parent,
            f"cannot write the preprocessing cache: {e.problem.removeprefix('cannot write: ')} (set data.cache_dir)",
        ) from None
    reread = set(changed)
    with atomic as staging:
        n, c = len(dataset.samples), len(dataset.classes)
        packed = (size * size + 7) // 8
        images = reserved_memmap(staging / "images.npy", (n, size, size, 3))
        masks = reserved_memmap(staging / "masks.npy", (n, c, packed)) if has_masks else None
        ignores = None
        boxes: list[list[int] | None] = []
        with transient_progress(console) as progress:
            task = progress.add_task(f"caching {dataset.split} at {size}px", total=len(reread))
            for i, sample in enumerate(dataset.samples):
                if i not in reread and old is not None:
                    box = old.boxes[i]
                    images[i] = old.images[i]
                    if masks is not None:
                        masks[i] = old.masks[i]
                    ignore_bits = old.ignores[i] if old.ignores is not None and old.ignores[i].any() else None
                else:
                    image, mask, decoded_box = load_sample(dataset, sample, size, clahe, crop, intensity)
                    box = list(decoded_box) if decoded_box is not None else None
                    images[i] = image
                    if masks is not None:
                        masks[i] = np.packbits(mask.reshape(c, -1), axis=-1)
                    ignore = load_ignore(dataset, sample, size, decoded_box) if has_masks else None
                    ignore_bits = np.packbits(ignore.reshape(c, -1), axis=-1) if ignore is not None else None
                    progress.advance(task)
                boxes.append(box)
                if ignore_bits is not None:
                    if ignores is None:  # made at the first sample with an ignore mask: the rows before are zeros
                        ignores = reserved_memmap(staging / "ignore.npy", (n, c, packed))
                    ignores[i] = ignore_bits
        for array in (images, masks, ignores):
            if array is not None:
                array.flush()
        has_ignores = ignores is not None
        del images, masks, ignores
        index = {
            "version": CACHE_VERSION,
            "settings": {k: v for k, v in settings.items() if k != "image_ids"},
            "image_ids": settings["image_ids"],
            "classes": list(dataset.classes),
            "size": size,
            "clahe": clahe,
            "has_masks": has_masks,
            "has_ignores": has_ignores,
            "boxes": boxes if crop else None,
            "sources": signatures.samples,
            "dataset_sources": signatures.dataset,
        }
        (staging / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
