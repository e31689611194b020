from __future__ import annotations

import csv

import numpy as np
import pytest

from compkit.errors import CompkitError
from compkit.data.labelled import open_labelled
from compkit.submission import HEADER, expected_keys, validate, write_submission
from tests.conftest import quiet


@pytest.fixture(scope="module")
def labelled(synth_data):
    return open_labelled(synth_data, "test")


@pytest.fixture(scope="module")
def perfect(labelled, tmp_path_factory):
    path = tmp_path_factory.mktemp("sub") / "perfect.csv"
    write_submission(path, labelled, labelled.read_mask, quiet())
    with open(path, newline="") as f:
        return list(csv.reader(f))


def write(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_rows_in_competition_order(labelled, perfect):
    assert tuple(perfect[0]) == HEADER
    assert [tuple(r[:2]) for r in perfect[1:]] == expected_keys(labelled)
    image_names = [r[0] for r in perfect[1::29]]
    assert image_names == [s.image_name for s in labelled.samples]
    assert [r[1] for r in perfect[1:30]] == list(labelled.classes)


def test_valid_file_passes(tmp_path, labelled, perfect):
    rows = validate(write(tmp_path / "s.csv", perfect), labelled)
    assert len(rows) == len(perfect) - 1 and rows[0].line == 2


def swap(rows, i, j):
    rows = list(rows)
    rows[i], rows[j] = rows[j], rows[i]
    return rows


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda r: [["image", "class", "mask"]] + r[1:], "line 1: header"),
        (lambda r: r[:5] + r[6:], r"1 missing rows .* first missing"),
        (lambda r: r + [r[3]], "duplicate row .*first on line 4"),
        (lambda r: r + [["other.png", "finger-1", ""]], "image 'other.png' is not in the test set"),
        (lambda r: r[:3] + [[r[3][0], "finger-42", ""]] + r[4:], "line 4: unknown class 'finger-42'"),
        (lambda r: swap(r, 2, 3), "line 3: wrong row order"),
        (lambda r: r[:2] + [[r[2][0], r[2][1], "1 2 3"]] + r[3:], r"line 3 \(.*\): bad RLE: odd number"),
        (lambda r: r[:2] + [[r[2][0], r[2][1], "9 3 1 2"]] + r[3:], "line 3 .* unsorted"),
        (lambda r: r[:2] + [[r[2][0], r[2][1], "1 3 2 2"]] + r[3:], "line 3 .* overlapping"),
        (lambda r: r[:2] + [[r[2][0], r[2][1], "1 0"]] + r[3:], "line 3 .* non-positive length"),
        (lambda r: r[:2] + [[r[2][0], r[2][1], "9216 2"]] + r[3:], "line 3 .* past the image"),
        (lambda r: r[:2] + [[r[2][0], r[2][1]]] + r[3:], "line 3: expected 3 fields"),
    ],
)
def test_validator_names_the_row(tmp_path, labelled, perfect, mutate, problem):
    path = write(tmp_path / "bad.csv", mutate(perfect))
    with pytest.raises(CompkitError, match=problem) as info:
        validate(path, labelled)
    assert info.value.path == str(path)


def test_write_failure_leaves_nothing(tmp_path, labelled):
    def broken(sample):
        if sample is labelled.samples[-1]:
            raise RuntimeError("model crashed")
        return labelled.read_mask(sample)

    out = tmp_path / "sub.csv"
    with pytest.raises(RuntimeError):
        write_submission(out, labelled, broken, quiet())
    assert list(tmp_path.iterdir()) == []


def test_wrong_channel_count(tmp_path, labelled):
    with pytest.raises(ValueError, match="channels"):
        write_submission(tmp_path / "s.csv", labelled, lambda s: np.zeros((3, 96, 96), np.uint8), quiet())
