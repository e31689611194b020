"""Kaggle RLE CSV labels: long, wide and key forms, empty tokens, merged instance rows, relative runs, and the RLE
order decided from the labels themselves."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from compkit.data.rlecsv import RleSpec, boundary_ratio, decide_order, find_rle_csv, read_rle_table
from compkit.submission import rle
from compkit.util.errors import CompkitError
from tests.layouts import blob, seeded


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def square(h=20, w=30, box=(5, 12, 8, 20)):
    mask = np.zeros((h, w), np.uint8)
    mask[box[0] : box[1], box[2] : box[3]] = 1
    return mask


def test_long_format_with_empties_and_instances(tmp_path):
    a, b = square(), square(box=(2, 4, 2, 6))
    path = write_csv(
        tmp_path / "train.csv",
        [
            ("ImageId", "ClassId", "EncodedPixels"),
            ("img1.jpg", "1", rle.encode(a, "F")),
            ("img1.jpg", "1", rle.encode(b, "F")),  # a second instance of the same class: merged
            ("img1.jpg", "3", ""),
            ("img2.jpg", "1", "nan"),
            ("img2.jpg", "3", " -1"),
            ("img2.jpg", "10", "1 3"),
        ],
    )
    table = read_rle_table(path)
    assert table.layout == "long" and table.classes == ("1", "3", "10"), "classes in natural order"
    assert table.keys == ["img1.jpg", "img2.jpg"]
    assert np.array_equal(table.decode("img1.jpg", "1", (20, 30), "F"), a | b)
    assert not table.decode("img1.jpg", "3", (20, 30), "F").any()
    assert (
        not table.decode("img2.jpg", "1", (20, 30), "F").any()
        and not table.decode("img2.jpg", "3", (20, 30), "F").any()
    )
    assert any("merged" in n for n in table.notes)
    with pytest.raises(
        CompkitError, match=r"ImageId 'img2.jpg', class '10': bad RLE for a 1x2 image: run 1\+3 ends past the image"
    ):
        table.decode("img2.jpg", "10", (2, 1), "F")


def test_wide_and_key_forms(tmp_path):
    m = square()
    wide = read_rle_table(
        write_csv(tmp_path / "w.csv", [("id", "liver", "tumour"), ("a", rle.encode(m, "C"), "-1"), ("b", "", "")])
    )
    assert wide.layout == "wide" and wide.classes == ("liver", "tumour")
    assert np.array_equal(wide.decode("a", "liver", (20, 30), "C"), m)
    keyed = read_rle_table(
        write_csv(
            tmp_path / "k.csv",
            [
                ("Image_Label", "EncodedPixels"),
                ("x.jpg_Fish", rle.encode(m, "F")),
                ("x.jpg_Flower", ""),
                ("y.jpg_Fish", ""),
                ("y.jpg_Flower", ""),
            ],
        )
    )
    assert keyed.layout == "key" and keyed.classes == ("Fish", "Flower") and keyed.keys == ["x.jpg", "y.jpg"]
    single = read_rle_table(
        write_csv(tmp_path / "s.csv", [("id", "rle_mask", "height", "width"), ("p1", rle.encode(m, "F"), "20", "30")])
    )
    assert single.classes == ("foreground",) and single.sizes == {"p1": (20, 30)}
    named = read_rle_table(tmp_path / "w.csv", RleSpec(file="w.csv", columns={"liver": "organ"}))
    assert named.classes == ("organ",)
    with pytest.raises(CompkitError, match=r"no id column 'idx' \(did you mean 'id'\?\)"):
        read_rle_table(tmp_path / "w.csv", RleSpec(file="w.csv", id_column="idx"))
    write_csv(tmp_path / "bad.csv", [("id", "class", "segmentation"), ("a", "c", "1 2"), ("b", "c", "1 x")])
    with pytest.raises(CompkitError, match=r"line 3: '1 x' is not a run-length encoding"):
        read_rle_table(tmp_path / "bad.csv", RleSpec(file="bad.csv", rle_column="segmentation"))


def test_relative_runs_are_detected(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[2, 1:4] = mask[5, 6:9] = mask[7, 0:2] = 1
    pairs = rle.runs(mask, "F")
    starts0 = pairs[:, 0] - 1
    relative = [starts0[0], *(starts0[1:] - (starts0[:-1] + pairs[:-1, 1]))]
    text = " ".join(f"{s} {n}" for s, n in zip(relative, pairs[:, 1], strict=True))
    table = read_rle_table(write_csv(tmp_path / "r.csv", [("ImageId", "EncodedPixels"), ("a", text), ("b", text)]))
    assert table.relative and any("relative" in n for n in table.notes)
    assert np.array_equal(table.decode("a", "foreground", (10, 10), "F"), mask)


def test_order_from_stripes_on_non_square_images(tmp_path):
    rows = [("id", "class", "segmentation")]
    truth = {}
    for k in range(4):
        mask = blob(seeded(9, k), 48, 64)
        truth[f"s{k}"] = mask
        rows.append((f"s{k}", "organ", rle.encode(mask, "F")))
    table = read_rle_table(write_csv(tmp_path / "t.csv", rows))
    items = [(k, (48, 64), lambda: np.zeros((48, 64, 3), np.uint8)) for k in truth]
    order, why = decide_order(table, items)
    assert (
        order == "F"
        and "column-major (F) the 4 masks checked are compact" in why
        and "row-major (C) gives stripes" in why
    )
    assert boundary_ratio(table.decode("s0", "organ", (48, 64), "C")) > 3 * boundary_ratio(truth["s0"])


def test_order_from_image_contrast_on_square_images(tmp_path):
    rows = [("id", "class", "segmentation")]
    images = {}
    for k in range(3):
        mask = blob(seeded(8, k), 40, 40)
        mask[:, :8] = 0
        mask[30:, :] = 0  # not symmetric: the transpose lies elsewhere
        image = np.full((40, 40, 3), 40, np.uint8)
        image[mask > 0] = 200
        images[f"q{k}"] = image
        rows.append((f"q{k}", "organ", rle.encode(mask, "C")))
    table = read_rle_table(write_csv(tmp_path / "t.csv", rows))
    order, why = decide_order(table, [(k, (40, 40), lambda k=k: images[k]) for k in images])
    assert order == "C" and "square images" in why and "sit on image structure" in why
    flat = [(k, (40, 40), lambda: np.full((40, 40, 3), 90, np.uint8)) for k in images]
    order, why = decide_order(table, flat)
    assert order == "F" and "state rle.order" in why, "undecidable: F, saying so"


def test_find_rle_csv_skips_sample_submissions(tmp_path):
    write_csv(tmp_path / "sample_submission.csv", [("id", "rle"), ("a", "1 2")])
    write_csv(tmp_path / "meta.csv", [("id", "age"), ("a", "3")])
    assert find_rle_csv(tmp_path) is None
    write_csv(tmp_path / "train.csv", [("id", "rle"), ("a", "1 2"), ("b", "")])
    assert find_rle_csv(tmp_path) == tmp_path / "train.csv"
