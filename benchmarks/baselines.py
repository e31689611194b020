"""The competition baseline's RLE code, verbatim in behaviour: the reference the benchmarks compare against."""

from __future__ import annotations

import numpy as np


def baseline_encode(mask: np.ndarray) -> str:
    """The baseline's encoder (note the int64 upcast of the whole mask)."""
    pixels = mask.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def baseline_decode(text: str, height: int, width: int) -> np.ndarray:
    """The baseline's decoder (a Python loop over runs)."""
    s = text.split()
    starts, lengths = (np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2]))
    starts -= 1
    ends = starts + lengths
    img = np.zeros(height * width, dtype=np.uint8)
    for lo, hi in zip(starts, ends, strict=True):
        img[lo:hi] = 1
    return img.reshape(height, width)
