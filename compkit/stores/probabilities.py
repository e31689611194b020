"""The probability store: per-class probabilities of a set of images, one file per image, plus an index.

Layout of a store folder (``runs/<name>/fold<k>/oof/``, ``.../test/``, ``ensembles/<name>/test/``)::

    index.json     {"version": 1, "classes": [...], "resolution": [h, w], "dtype": "uint8",
                    "images": [{"id": "ID001/image1.png", "file": "ID001__image1.png.npy", "size": [H, W]}, ...]}
    <file>.npy     (C, h, w) probabilities at the store resolution; uint8 = round(p * 255), or float16

``size`` is the image's original size (submissions upsample to it); an optional ``box`` [y0, y1, x0, x1] says
which part of the original image the probabilities cover (``data.crop_border``), the rest being background. A store is written into a hidden staging
folder and renamed into place when complete, so a store with an ``index.json`` is always whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from compkit.util.errors import CompkitError
from compkit.util.fileio import AtomicFolder, link_or_copy, read_json, write_problem

STORE_VERSION = 1
DTYPES = ("uint8", "float16")
STORE_INDEX = "index.json"  # written last: a store with one is whole
OOF_STORE = "oof"  # a fold's (or ensemble's) store of its out-of-fold validation images
TEST_STORE = "test"  # a fold's (or ensemble's) store of the test images


def file_name(image_id: str) -> str:
    return image_id.replace("/", "__") + ".npy"


def quantise(probs: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.rint(np.clip(probs, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.clip(probs, 0.0, 1.0).astype(np.float16)


class StoreWriter:
    """Write a store image by image; ``close()`` writes the index and renames the store into place."""

    def __init__(
        self,
        folder: str | Path,
        classes: list[str] | tuple[str, ...],
        resolution: tuple[int, int],
        dtype: str = "uint8",
    ):
        if dtype not in DTYPES:
            raise CompkitError(folder, f"store dtype must be one of {DTYPES}, got {dtype!r}")
        self.folder = Path(folder)
        self.classes = list(classes)
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.dtype = dtype
        self.images: list[dict[str, Any]] = []
        self.atomic = AtomicFolder(self.folder)
        self.staging = self.atomic.staging

    def write(
        self,
        image_id: str,
        probs: np.ndarray,
        original_size: tuple[int, int],
        box: tuple[int, int, int, int] | None = None,
    ) -> None:
        """``box`` (y0, y1, x0, x1): the part of the original image the probabilities cover (default: all of it)."""
        if probs.shape != (len(self.classes), *self.resolution):
            raise ValueError(
                f"{image_id}: probabilities of shape {probs.shape}, store wants {(len(self.classes), *self.resolution)}"
            )
        if not np.isfinite(probs).all():
            raise CompkitError(image_id, "probabilities contain NaN or infinity")
        name = file_name(image_id)
        try:
            np.save(self.staging / name, quantise(probs, self.dtype))
        except OSError as e:
            problem = write_problem(self.staging / name, e)  # before the staging folder (and its space) is gone
            self.abort()
            raise CompkitError(self.folder / name, problem) from None
        entry = {"id": image_id, "file": name, "size": [int(original_size[0]), int(original_size[1])]}
        if box is not None:
            entry["box"] = [int(v) for v in box]
        self.images.append(entry)

    def close(self) -> Path:
        index = {
            "version": STORE_VERSION,
            "classes": self.classes,
            "resolution": list(self.resolution),
            "dtype": self.dtype,
            "images": self.images,
        }
        try:
            (self.staging / STORE_INDEX).write_text(json.dumps(index, indent=1, ensure_ascii=False), encoding="utf-8")
        except OSError as e:
            self.abort()
            raise CompkitError(self.folder / STORE_INDEX, f"cannot write: {e.strerror or e}") from None
        return self.atomic.commit()

    def abort(self) -> None:
        self.atomic.abort()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Store:
    """Read access to a store: ``read(image_id)`` gives float32 (C, h, w) probabilities in [0, 1]."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / STORE_INDEX).is_file():
            raise CompkitError(self.folder, f"not a probability store (no {STORE_INDEX})")
        index = read_json(self.folder / STORE_INDEX)
        try:
            self.classes: list[str] = list(index["classes"])
            self.resolution: tuple[int, int] = tuple(index["resolution"])
            self.dtype: str = index["dtype"]
            self.entries = {e["id"]: e for e in index["images"]}
        except (KeyError, TypeError) as e:
            raise CompkitError(self.folder / STORE_INDEX, f"malformed store index (missing {e})") from None
        self.image_ids = list(self.entries)

    def original_size(self, image_id: str) -> tuple[int, int]:
        h, w = self.entries[image_id]["size"]
        return int(h), int(w)

    def box(self, image_id: str) -> tuple[int, int, int, int] | None:
        box = self.entries[image_id].get("box")
        return tuple(box) if box else None

    def read_raw(self, image_id: str) -> np.ndarray:
        path = self.folder / self.entries[image_id]["file"]
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise CompkitError(path, f"unreadable or truncated store file ({e})") from None
        if data.shape != (len(self.classes), *self.resolution):
            raise CompkitError(
                path, f"store file has shape {data.shape}, index says {(len(self.classes), *self.resolution)}"
            )
        return data

    def read(self, image_id: str, resolution: tuple[int, int] | None = None) -> np.ndarray:
        """Probabilities at the store's resolution, or resampled (bilinear) to ``resolution``."""
        data = self.read_raw(image_id)
        probs = data.astype(np.float32) / 255.0 if data.dtype == np.uint8 else data.astype(np.float32)
        if not np.isfinite(probs).all():
            raise CompkitError(self.folder / self.entries[image_id]["file"], "probabilities contain NaN or infinity")
        return resample(probs, resolution) if resolution is not None else probs


def resample(probs: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    """(C, h, w) float32 -> (C, *resolution), bilinear, one image at a time (members of an ensemble predicted at
    different sizes meet at one resolution)."""
    height, width = int(resolution[0]), int(resolution[1])
    if probs.shape[1:] == (height, width):
        return probs
    out = np.empty((probs.shape[0], height, width), np.float32)
    for start in range(0, probs.shape[0], 512):  # OpenCV resizes at most 512 channels at once
        chunk = np.ascontiguousarray(probs[start : start + 512].transpose(1, 2, 0))
        resized = cv2.resize(chunk, (width, height), interpolation=cv2.INTER_LINEAR)
        out[start : start + 512] = resized.reshape(height, width, -1).transpose(2, 0, 1)
    return out


def carry_store(source: Path, target: Path) -> None:
    """A whole store at ``target`` (a fold's ``oof/`` beside its predictions written elsewhere, or in an exported
    run): linked file by file where the file system allows, else copied; whole or not at all. Nothing happens
    where ``source`` is not a whole store or ``target`` already is one."""
    if not (source / STORE_INDEX).is_file() or (target / STORE_INDEX).is_file():
        return
    with AtomicFolder(target) as staging:
        for path in source.rglob("*"):
            if path.is_file():
                link_or_copy(path, staging / path.relative_to(source))
