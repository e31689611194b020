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
Label files are read with :func:`read_label_image`, which never rescales values.
"""
from __future__ import annotations

import contextlib
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from compkit.errors import CompkitError

INTENSITY_RULES = ("auto", "full", "percentile", "minmax", "window")
DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", *DICOM_SUFFIXES)
LOSSY_SUFFIXES = (".jpg", ".jpeg")
PERCENTILES = (0.5, 99.5)


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
            full_range = (0.0, float(np.iinfo(values.dtype).max)) if np.issubdtype(values.dtype, np.integer) else (0.0, 1.0)
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
        raise CompkitError(path, f"unreadable DICOM ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4) and ds.get("SamplesPerPixel", 1) > 1:
        return cv2.cvtColor(pixels[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
    if pixels.ndim != 2:
        raise CompkitError(path, f"DICOM with pixel array of shape {pixels.shape}: only single 2-D images are supported")
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


def read_label_image(path: str | Path) -> np.ndarray:
    """A label file's values as stored ((H, W) for grey and palette files, (H, W, 3) BGR for colour ones)."""
    path = Path(path)
    if is_dicom(path):
        raise CompkitError(path, "DICOM files are read as images, not labels")
    image = _decode(path, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        image = image[..., :3]
        if image.shape[2] == 1:
            image = image[..., 0]
        elif (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all():
            image = np.ascontiguousarray(image[..., 0])  # GIF and JPEG masks often decode as three equal channels
    return image


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
