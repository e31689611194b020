"""Reading the image kinds real medical data comes in: 8/16-bit PNG and TIFF, JPEG, BMP (1 and 24 bit), GIF, DICOM.

Images are returned as OpenCV returns 8-bit images (BGR, uint8), so every format and model sees the same thing.
Images with more than 8 bits are brought to 8 bits by one of :data:`INTENSITY_RULES` (``data.intensity`` in a
recipe, ``intensity:`` in a ``dataset.yaml``):

- ``auto`` (default): 8-bit images as they are; 16-bit PNG/TIFF through the ``percentile`` window; DICOM through
  its own window (WindowCenter/WindowWidth) where it has one, else ``percentile``.
- ``full``: the type's full range (16-bit: value / 257; DICOM: the stored bits, e.g. 0..4095 for 12 bits).
- ``percentile``: per image, the 0.5th..99.5th percentile window (robust to a few hot pixels and the black border).
- ``minmax``: per image, min..max.
- ``window``: DICOM's window (``percentile`` for other files).

DICOM (read with pydicom, uncompressed or natively supported transfer syntaxes): rescale slope and intercept are
applied first, and ``MONOCHROME1`` images are inverted after windowing, so bone is bright in every X-ray.

Label files are read with :func:`read_label` by what they mean, never rescaled: grey and 16-bit values as stored;
colour-palette files (PNG colour type 3 as VOC-style and CVAT exports write them, index 1 = RGB (128, 0, 0)) by
palette *index* (read with Pillow: OpenCV would expand them to colour), while a palette of greys only is a grey
image stored compactly and reads as its grey values; RGBA files by their alpha where it varies (see
:func:`read_label`).

EXIF orientation: the stored pixels are what was labelled (most annotation tools and every mask writer work on
them, and a mask PNG has no tag to follow), so every decode here ignores the tag, for images, masks and ignore
files alike; :func:`image_size` agrees. The one exception is decided per sample by the dataset
(:meth:`compkit.data.formats.SegmentationDataset.orientation`): where a tagged image's label files fit only the
turned image (height and width swapped, not square), the image is turned as its tag says (:func:`apply_orientation`)
and a one-line note says so. ``compkit check-data`` lists the tagged images and what was decided.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from compkit.util.errors import CompkitError

INTENSITY_RULES = ("auto", "full", "percentile", "minmax", "window")
DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", *DICOM_SUFFIXES)
LOSSY_SUFFIXES = (".jpg", ".jpeg")
PERCENTILES = (0.5, 99.5)
EXIF_ORIENTATION = 0x0112
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees (height and width swap)


def is_dicom(path: str | Path) -> bool:
    return Path(path).suffix.lower() in DICOM_SUFFIXES


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence what C libraries write straight to file descriptor 2 (OpenCV's codecs) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decode(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise CompkitError(path, "image not found")
    # np.fromfile + imdecode copes with non-ASCII paths, which cv2.imread does not on every platform.
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise CompkitError(path, f"cannot read: {e.strerror or e}") from None
    if flags != cv2.IMREAD_UNCHANGED:  # UNCHANGED never turns; the others would follow an EXIF tag (see above)
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    with quiet_stderr():  # libpng/libjpeg print "corrupt data" warnings of their own; compkit's one line says it
        image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise CompkitError(path, "unreadable image (not a valid image file)")
    return image


def window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values -> uint8, ``low`` to 0 and ``high`` to 255, clipped."""
    if high <= low:
        high = low + 1.0
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_uint8(values: np.ndarray, rule: str = "auto", full_range: tuple[float, float] | None = None) -> np.ndarray:
    """An image of more than 8 bits (or floats) as uint8 by ``rule`` (see the module docstring)."""
    if values.dtype == np.uint8:
        return values
    if rule == "full":
        if full_range is None:
            full_range = (
                (0.0, float(np.iinfo(values.dtype).max)) if np.issubdtype(values.dtype, np.integer) else (0.0, 1.0)
            )
        return window(values, *full_range)
    if rule == "minmax":
        return window(values, float(values.min()), float(values.max()))
    low, high = np.percentile(values, PERCENTILES)
    return window(values, float(low), float(high))


def read_dicom(path: str | Path, rule: str = "auto") -> np.ndarray:
    """A DICOM image as (H, W) uint8: rescale slope/intercept, window, MONOCHROME1 inverted."""
    path = Path(path)
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:  # pragma: no cover - a declared dependency
        raise CompkitError(path, "reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except FileNotFoundError:
        raise CompkitError(path, "image not found") from None
    except (InvalidDicomError, AttributeError, ValueError, RuntimeError, NotImplementedError) as e:
        raise CompkitError(
            path, f"unreadable DICOM ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4) and ds.get("SamplesPerPixel", 1) > 1:
        return cv2.cvtColor(pixels[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
    if pixels.ndim != 2:
        raise CompkitError(
            path, f"DICOM with pixel array of shape {pixels.shape}: only single 2-D images are supported"
        )
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    values = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if rule in ("auto", "window") and centre is not None and width is not None:
        centre = float(centre[0] if isinstance(centre, pydicom.multival.MultiValue) else centre)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        grey = window(values, centre - width / 2, centre + width / 2)
    elif rule == "full":
        bits = int(ds.get("BitsStored", 16) or 16)
        low = intercept if not ds.get("PixelRepresentation", 0) else intercept - slope * 2 ** (bits - 1)
        grey = window(values, low, low + slope * (2**bits - 1))
    else:
        grey = to_uint8(values, "minmax" if rule == "minmax" else "percentile")
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        grey = 255 - grey
    return grey


def read_image(path: str | Path, flags: int = cv2.IMREAD_COLOR, intensity: str | None = None) -> np.ndarray:
    """Read an image with OpenCV (as the competition does); BGR uint8 for colour, (H, W) uint8 for grey.

    Images of more than 8 bits, and DICOM, are brought to 8 bits by ``intensity`` (default ``auto``).
    Bad files raise CompkitError.
    """
    path = Path(path)
    rule = intensity or "auto"
    grey = flags == cv2.IMREAD_GRAYSCALE
    if is_dicom(path):
        image = read_dicom(path, rule)
        return image if grey else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if flags not in (cv2.IMREAD_COLOR, cv2.IMREAD_GRAYSCALE):
        return _decode(path, flags)
    image = _decode(path, flags | cv2.IMREAD_ANYDEPTH)
    if image.dtype != np.uint8:
        image = to_uint8(image, rule)
    return image


@dataclass(frozen=True)
class LabelImage:
    """A label file's values: ``values`` is (H, W) grey (8 or 16 bit) or palette indices, or (H, W, 3) BGR colour;
    ``palette`` the (N, 3) RGB colours of the indices where ``values`` are palette indices, else None."""

    path: Path
    values: np.ndarray
    palette: np.ndarray | None = None

    @property
    def lossy(self) -> bool:
        return self.path.suffix.lower() in LOSSY_SUFFIXES

    def colours(self) -> np.ndarray:
        """(H, W, 3) BGR colour of every pixel (palette files: their palette's colours)."""
        if self.palette is not None:
            return self.palette[self.values][..., ::-1]
        return self.values if self.values.ndim == 3 else cv2.cvtColor(self.values, cv2.COLOR_GRAY2BGR)


def _read_palette(path: Path) -> LabelImage | None:
    """A palette file's indices and palette (Pillow), or None where the file has no palette (or Pillow cannot
    read it: OpenCV then decodes it as it can)."""
    try:
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's decompression-bomb warning: masks are large on purpose
            with Image.open(path) as image:
                if image.mode != "P":
                    return None
                indices = np.asarray(image)
                flat = image.getpalette() or []
    except Exception:  # Pillow raises many types for files it does not know; OpenCV has the last word
        return None
    palette = np.zeros((256, 3), np.uint8)
    entries = np.asarray(flat, np.uint8).reshape(-1, 3)[:256]
    palette[: len(entries)] = entries
    used = palette[np.unique(indices)]
    if (used[:, 0] == used[:, 1]).all() and (used[:, 1] == used[:, 2]).all():
        return LabelImage(path, np.ascontiguousarray(palette[indices][..., 0]))  # greys only: a grey image
    return LabelImage(path, np.ascontiguousarray(indices), palette)


def _flatten_alpha(image: np.ndarray) -> np.ndarray:
    """An RGBA (or grey + alpha) label as colour: where alpha is the same everywhere it carries nothing (the
    colour is read); otherwise transparent pixels are background, and a mask drawn in one colour on a transparent
    background is its alpha (anti-aliased edges then threshold like grey ones); several colours drawn on
    transparency keep their colours, with the transparent pixels black."""
    colour, alpha = image[..., :3], image[..., 3]
    if (alpha == alpha.flat[0]).all():
        return colour
    visible = alpha > 0
    shown = colour[visible]
    if (shown == shown[0]).all():
        return np.ascontiguousarray(alpha)
    flattened = colour.copy()
    flattened[~visible] = 0
    return flattened


def read_label(path: str | Path) -> LabelImage:
    """A label file read by what it means (see the module docstring), never rescaled: 8/16-bit grey values as
    stored; colour-palette files as palette indices with their palette; grey palettes, GIFs and 1-bit files as grey
    values (1-bit: 0/255); colour files as BGR, reduced to grey where the three channels are equal (GIF and JPEG
    masks often decode so); RGBA files by :func:`_flatten_alpha`."""
    path = Path(path)
    if is_dicom(path):
        raise CompkitError(path, "DICOM files are read as images, not labels")
    image = _decode(path, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:  # OpenCV expands a palette to colour: read its indices instead
        palette = _read_palette(path)
        if palette is not None:
            return palette
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = _flatten_alpha(image)
        if image.ndim == 3:
            image = image[..., :3]
            if image.shape[2] == 1:
                image = image[..., 0]
            elif (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all():
                image = np.ascontiguousarray(image[..., 0])  # GIF and JPEG masks often decode as three equal channels
    return LabelImage(path, image)


def read_label_image(path: str | Path) -> np.ndarray:
    """A label file's values (:func:`read_label`): (H, W) grey or palette indices, or (H, W, 3) BGR colour."""
    return read_label(path).values


def exif_orientation(path: str | Path) -> int:
    """An image's EXIF orientation tag (1..8; 1 where it has none), from the header (Pillow, no decode)."""
    path = Path(path)
    if is_dicom(path):
        return 1
    try:
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                tag = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # no header Pillow knows (OpenCV may still read the file): no tag to follow
        return 1
    return int(tag) if isinstance(tag, int) and 1 <= tag <= 8 else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` (H, W[, C]) as an EXIF ``orientation`` says to show it (1: as it is; 6: turned 90 degrees
    clockwise ...), as OpenCV's own decode would turn it."""
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transpose = orientation 5
        image = {5: image, 6: image[:, ::-1], 7: image[::-1, ::-1], 8: image[::-1]}[orientation]
    elif orientation in (2, 3, 4):
        image = {2: image[:, ::-1], 3: image[::-1, ::-1], 4: image[::-1]}[orientation]
    return np.ascontiguousarray(image)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image, from the PNG or DICOM header when possible (no full decode)."""
    path = Path(path)
    if is_dicom(path):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        except FileNotFoundError:
            raise CompkitError(path, "image not found") from None
        except Exception as e:  # pydicom raises many types for corrupt headers
            raise CompkitError(path, f"unreadable DICOM header ({type(e).__name__})") from None
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise CompkitError(path, f"cannot read: {e.strerror or e}") from None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(height), int(width)
    image = _decode(path, cv2.IMREAD_UNCHANGED)
    return int(image.shape[0]), int(image.shape[1])


def describe_image(path: str | Path) -> str:
    """What a file holds, for people: ``8-bit RGB``, ``16-bit grey``, ``DICOM 12-bit MONOCHROME1``, ``1-bit BMP``."""
    path = Path(path)
    if is_dicom(path):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            return "unreadable DICOM"
        return f"DICOM {int(ds.get('BitsStored', 16))}-bit {ds.get('PhotometricInterpretation', '')}".strip()
    image = _decode(path, cv2.IMREAD_UNCHANGED)
    bits = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(image.dtype, image.dtype.itemsize * 8)
    if path.suffix.lower() == ".bmp":
        with open(path, "rb") as f:
            header = f.read(30)
        if len(header) >= 30 and header[:2] == b"BM":
            bits = struct.unpack("<H", header[28:30])[0]
            return f"{bits}-bit BMP"
    if image.ndim == 2 or image.shape[2] == 1:
        return f"{bits}-bit grey"
    if image.shape[2] == 4:
        return f"{bits}-bit RGBA"
    channels_equal = (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    return f"{bits}-bit {'grey (3 equal channels)' if channels_equal else 'RGB'}"
