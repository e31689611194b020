from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from compkit.submission import rle


def baseline_encode(mask: np.ndarray) -> str:
    """The competition baseline's encoder (row-major), as reference."""
    pixels = np.concatenate([[0], mask.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


masks = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(
    lambda shape: arrays(np.uint8, shape, elements=st.integers(0, 1))
)


@settings(max_examples=300, deadline=None)
@given(masks, st.sampled_from(["C", "F"]))
def test_round_trip(mask, order):
    text = rle.encode(mask, order)
    rle.validate(text, mask.shape)
    np.testing.assert_array_equal(rle.decode(text, mask.shape, order), mask)


@settings(max_examples=200, deadline=None)
@given(masks)
def test_row_major_matches_competition_baseline(mask):
    assert rle.encode(mask, "C") == baseline_encode(mask)


@settings(max_examples=100, deadline=None)
@given(masks)
def test_column_major_is_row_major_of_transpose(mask):
    assert rle.encode(mask, "F") == rle.encode(mask.T, "C")


def test_known_values():
    mask = np.array([[1, 1, 0], [0, 1, 1]], dtype=np.uint8)
    assert rle.encode(mask) == "1 2 5 2"
    assert rle.encode(mask, "F") == "1 1 3 2 6 1"
    assert rle.encode(np.zeros((4, 4), np.uint8)) == ""
    assert rle.encode(np.ones((2, 2), bool)) == "1 4"
    # Non-binary masks count any non-zero pixel as foreground.
    assert rle.encode(np.array([[0, 255, 7]])) == "2 2"


def test_decode_empty_string_is_empty_mask():
    assert not rle.decode("", (3, 5)).any()
    assert rle.decode("   ", (3, 5)).shape == (3, 5)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1 2 3", "odd number"),
        ("1 0", "non-positive length"),
        ("1 -3", "non-positive length"),
        ("0 2", "not positive"),
        ("5 2 1 2", "unsorted"),
        ("1 4 3 2", "overlapping"),
        ("16 2", "past the image"),
        ("1 x", "not an integer"),
    ],
)
def test_validate_rejects(text, problem):
    with pytest.raises(ValueError, match=problem):
        rle.validate(text, (4, 4))
    with pytest.raises(ValueError, match=problem):
        rle.decode(text, (4, 4))


def test_validate_accepts_last_pixel_and_touching_runs():
    rle.validate("16 1", (4, 4))
    rle.validate("1 2 3 2", (4, 4))


def test_unknown_order():
    with pytest.raises(ValueError, match="order"):
        rle.encode(np.zeros((2, 2)), "X")
