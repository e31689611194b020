"""Run-length encoding of binary masks, as competition submissions want it.

Format: the mask is flattened (row-major "C" for the hand-bone competition, column-major "F" for most Kaggle
competitions), then written as space-separated ``start length`` pairs, ``start`` 1-based and absolute.
An empty mask is the empty string.
"""

from __future__ import annotations

import numpy as np

ORDERS = ("C", "F")


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be 'C' (row-major) or 'F' (column-major), got {order!r}")


def runs(mask: np.ndarray, order: str = "C") -> np.ndarray:
    """(N, 2) int64 array of 1-based (start, length) runs of the mask's non-zero pixels."""
    _check_order(order)
    mask = np.asarray(mask)
    # Fortran flattening of a 2-D mask is the C flattening of its transpose; ravel copies only when needed.
    flat = (mask.T if order == "F" else mask).ravel()
    if flat.dtype != np.bool_:
        flat = flat != 0
    # Compare neighbours on bytes (no int64 upcast of the whole mask, unlike np.concatenate([[0], m, [0]])).
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if flat.size and flat[0]:
        edges = np.concatenate(([0], edges))
    if flat.size and flat[-1]:
        edges = np.concatenate((edges, [flat.size]))
    pairs = edges.reshape(-1, 2)
    pairs[:, 1] -= pairs[:, 0]
    pairs[:, 0] += 1
    return pairs


def encode(mask: np.ndarray, order: str = "C") -> str:
    """RLE string of a 2-D mask (non-zero = foreground)."""
    pairs = runs(mask, order)
    if not len(pairs):
        return ""
    return " ".join(map(str, pairs.ravel().tolist()))


def parse(rle: str) -> np.ndarray:
    """(N, 2) int64 (start, length) pairs of an RLE string; ValueError when it is not pairs of integers."""
    tokens = rle.split()
    if len(tokens) % 2:
        raise ValueError(f"odd number of values ({len(tokens)}): RLE must be start/length pairs")
    try:
        values = np.array(tokens, dtype=np.int64)
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise ValueError(f"not an integer: {bad!r}") from None
    except OverflowError:
        bad = max(tokens, key=len)
        raise ValueError(f"value too large for a pixel index: {bad[:24]}{'...' if len(bad) > 24 else ''}") from None
    return values.reshape(-1, 2)


def validate(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Raise ValueError naming the first problem of an RLE string for a mask of ``shape``; returns the pairs."""
    pairs = parse(rle)
    if not len(pairs):
        return pairs
    starts, lengths = pairs[:, 0], pairs[:, 1]
    size = int(shape[0]) * int(shape[1])
    for check, what in (
        (starts < 1, "start {s} is not positive (starts are 1-based)"),
        (lengths < 1, "run at {s} has non-positive length {l}"),
        ((starts > size) | (lengths > size), "run {s}+{l} ends past the image ({size} pixels)"),
        (starts + lengths - 1 > size, "run {s}+{l} ends past the image ({size} pixels)"),
    ):
        bad = np.flatnonzero(check)
        if bad.size:
            i = bad[0]
            raise ValueError(what.format(s=starts[i], l=lengths[i], size=size))
    ends = starts + lengths  # one past the run's last pixel
    bad = np.flatnonzero(starts[1:] < ends[:-1])
    if bad.size:
        i = bad[0] + 1
        kind = "unsorted" if starts[i] < starts[i - 1] else "overlapping"
        raise ValueError(f"{kind} runs: start {starts[i]} comes after a run ending at {ends[i - 1] - 1}")
    return pairs


def decode(rle: str, shape: tuple[int, int], order: str = "C") -> np.ndarray:
    """(H, W) uint8 0/1 mask of an RLE string. Malformed strings raise ValueError (see :func:`validate`)."""
    _check_order(order)
    pairs = validate(rle, shape)
    height, width = int(shape[0]), int(shape[1])
    flat = np.zeros(height * width, dtype=np.uint8)
    if len(pairs):
        starts, lengths = pairs[:, 0] - 1, pairs[:, 1]
        # Index of every foreground pixel without a Python loop: a ramp per run, offset by the run's start.
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        flat[np.arange(int(lengths.sum()), dtype=np.int64) + offsets] = 1
    if order == "F":
        return flat.reshape(width, height).T.copy()
    return flat.reshape(height, width)
