"""Small file helpers shared by every stage: atomic writes, image reading, JSON."""
from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from compkit.errors import CompkitError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside ``path`` and rename it into place only when the block succeeds.

    Readers never see a half-written file, and a failure leaves the old file (or nothing) behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CompkitError(path, f"cannot write: {e.strerror or e}") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs should read like any other file
    try:
        # Opened by name so that ``handle.name`` is the temp path (callers may validate it before the rename).
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CompkitError(path, f"cannot write: {e.strerror or e}") from None
        raise


def write_json(path: str | Path, data: Any) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CompkitError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CompkitError(path, f"not valid JSON ({e})") from None
    except OSError as e:
        raise CompkitError(path, f"cannot read: {e.strerror or e}") from None


def write_image(path: str | Path, image: np.ndarray) -> None:
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise CompkitError(path, "could not encode image")
    with atomic_write(path, "wb") as f:
        f.write(buf.tobytes())


def read_image(path: str | Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image with OpenCV (as the competition does); BGR for colour. Bad files raise CompkitError."""
    path = Path(path)
    if not path.is_file():
        raise CompkitError(path, "image not found")
    # np.fromfile + imdecode copes with non-ASCII paths, which cv2.imread does not on every platform.
    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), flags)
    if image is None:
        raise CompkitError(path, "unreadable image (not a valid image file)")
    return image


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image, from the PNG header when possible (no full decode of a 2048 px image)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise CompkitError(path, f"cannot read: {e.strerror or e}") from None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(height), int(width)
    image = read_image(path, cv2.IMREAD_UNCHANGED)
    return int(image.shape[0]), int(image.shape[1])
