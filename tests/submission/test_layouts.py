from __future__ import annotations

import csv

import numpy as np
import pytest

from compkit.data.labelled import open_labelled
from compkit.submission.layouts import HEADER, expected_keys, validate, write_submission
from compkit.util.errors import CompkitError
from tests.conftest import csv_rows, quiet


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


@pytest.fixture
def competition(tmp_path):
    from tests.layouts import kaggle_long

    return kaggle_long(tmp_path / "comp")


def masks_of(dataset):
    def mask_for(sample):
        h, w = dataset.image_shape(sample)
        mask = np.zeros((len(dataset.classes), h, w), np.uint8)
        mask[:, 1:3, 2:5] = 1
        mask[1] = 0
        return mask

    return mask_for


def test_sample_submission_rows_header_and_id_form(competition, tmp_path):
    from compkit.data import open_dataset
    from compkit.submission.layouts import submission_layout

    test = open_dataset(competition, "test")
    out = write_submission(tmp_path / "s.csv", test, masks_of(test), quiet())
    rows = csv_rows(out)
    sample = csv_rows(competition / "sample_submission.csv")
    assert rows[0] == ["id", "class", "predicted"]
    assert [r[:2] for r in rows[1:]] == [r[:2] for r in sample[1:]], "the sample's rows, in its (class-major) order"
    assert rows[1][0] == "case14_day6_slice_0002", "ids without extension, as the sample has them"
    assert rows[1][2] == "162 2 242 2 322 2" and rows[3][2] == "", "column-major RLE, empty cell for an empty mask"
    assert len(validate(out, test)) == 6
    layout = submission_layout(test)
    assert layout.sample == competition / "sample_submission.csv" and layout.rle_order == "F"


@pytest.mark.parametrize(
    ("header", "rows", "first"),
    [
        (
            ("Image_Label", "EncodedPixels"),
            lambda ids, classes: [(f"{i}.png_{c}", "1 1") for i in ids for c in classes],
            ["case14_day6_slice_0001.png_large_bowel", "162 2 242 2 322 2"],
        ),
        (
            ("id", *["large_bowel", "small_bowel", "stomach"]),
            lambda ids, classes: [(i, "-1", "-1", "-1") for i in ids],
            ["case14_day6_slice_0001", "162 2 242 2 322 2", "-1", "162 2 242 2 322 2"],
        ),
        (
            ("ImageId", "EncodedPixels", "ClassId"),
            lambda ids, classes: [(i, "", c) for i in ids for c in classes],
            ["case14_day6_slice_0001", "162 2 242 2 322 2", "large_bowel"],
        ),
    ],
)
def test_sample_key_wide_and_reordered_columns(competition, tmp_path, header, rows, first):
    from compkit.data import open_dataset
    from compkit.submission.layouts import submission_layout

    test = open_dataset(competition, "test")
    ids = [s.image_path.stem for s in test.samples]
    sample = write(tmp_path / "sample.csv", [header, *rows(ids, test.classes)])
    layout = submission_layout(test, sample)
    out = write_submission(tmp_path / "s.csv", test, masks_of(test), quiet(), layout=layout)
    written = csv_rows(out)
    assert tuple(written[0]) == header and written[1] == first
    assert len(validate(out, test, layout=layout)) == 6


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        (
            lambda r: r + [["case99_day1_slice_0001", "stomach", ""]],
            r"line 8: sample lists image 'case99_day1_slice_0001', which is not in the test set",
        ),
        (lambda r: r[:-1], r"sample has no row for case14_day6_slice_0001 / stomach"),
        (
            lambda r: [["id", "organ", "predicted"]] + [[a, "liver", c] for a, _, c in r[1:]],
            r"no class column and no column per class \(large_bowel, small_bowel, stomach\)",
        ),
    ],
)
def test_sample_that_does_not_fit(competition, tmp_path, rows, problem):
    from compkit.data import open_dataset
    from compkit.submission.layouts import submission_layout

    test = open_dataset(competition, "test")
    original = csv_rows(competition / "sample_submission.csv")
    sample = write(tmp_path / "bad.csv", rows(original))
    with pytest.raises(CompkitError, match=problem):
        submission_layout(test, sample)
