"""Datasets described by a dataset.yaml: templates, field of view, index/palette masks, patients, meta, validation."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.data.splits import splits_path
from compkit.stages.split import split
from compkit.stages.synth import synth
from compkit.util.errors import CompkitError
from tests.conftest import quiet
from tests.layouts import drive, write, write_gif

DRIVE_YAML = """\
splits:
  train: training/images/*.tif
  test: test/images/*.tif
id: '^(\\d+)_'
labels:
  vessel: ../1st_manual/{id}_manual1.gif
ignore:
  outside: ../mask/{stem}_mask.gif
"""


@pytest.fixture(scope="module")
def vessels(tmp_path_factory):
    root = drive(tmp_path_factory.mktemp("drive") / "DRIVE")
    (root / "dataset.yaml").write_text(DRIVE_YAML)
    return root


def test_drive_through_a_description(vessels):
    train = open_dataset(vessels)
    assert train.format_name == "described" and train.classes == ("vessel",)
    assert [s.image_id for s in train.samples] == [
        "21_training.tif",
        "22_training.tif",
        "23_training.tif",
        "24_training.tif",
    ]
    assert [s.patient for s in train.samples] == ["21", "22", "23", "24"], "the id regex names the patient"
    sample = train.samples[0]
    mask = train.read_mask(sample)
    assert mask.shape == (1, 72, 64) and 0 < mask.mean() < 0.5
    ignore = train.read_ignore(sample, (72, 64))
    fov = (
        np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(vessels / "training/mask/21_training_mask.gif")) > 0
    )
    assert np.array_equal(ignore[0].astype(bool), ~fov), "outside the field of view is ignored"
    assert not (mask[0].astype(bool) & ~fov).any()
    test = open_dataset(vessels, "test")
    assert test.has_labels and len(test) == 2, "test/1st_manual is the test ground truth"
    assert train.rle_order == "F" and train.submission_name(sample) == "21_training.tif"
    assert set(train.describe()) == {"splits", "id", "labels", "ignore"}


def test_description_as_data_path_with_root(vessels, tmp_path):
    elsewhere = tmp_path / "descriptions" / "drive.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f"root: {vessels}\n" + DRIVE_YAML)
    train = open_dataset(elsewhere)
    assert train.root == vessels and len(train) == 4
    assert splits_path(elsewhere) == vessels / "splits.json", "splits live in the data folder"
    split(elsewhere, folds=2, seed=0, console=quiet())
    assert (vessels / "splits.json").is_file()
    (vessels / "splits.json").unlink()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (DRIVE_YAML + "lables: {}\n", r"lables: unknown key \(did you mean 'labels'\?\)"),
        (
            DRIVE_YAML.replace("{id}_manual1", "{ids}_manual1"),
            r"labels: unknown template field \{ids\}.*did you mean 'id'",
        ),
        (DRIVE_YAML.replace("'^(\\d+)_'", "'^(\\d+_'"), r"id: bad regex"),
        (DRIVE_YAML + "label: a/{stem}.png\n", "give exactly one of labels"),
        (DRIVE_YAML.replace("outside:", "outsde:"), r"ignore.outsde: unknown key \(did you mean 'outside'\?\)"),
        (DRIVE_YAML.replace("train:", "trian:"), r"splits needs a train entry"),
        (
            DRIVE_YAML + "intensity: percentil\n",
            r"intensity: unknown intensity rule 'percentil' \(did you mean 'percentile'\?\)",
        ),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_bad_descriptions_name_the_key(vessels, tmp_path, text, problem):
    path = tmp_path / "dataset.yaml"
    path.write_text(text if text.startswith("-") else f"root: {vessels}\n{text}")
    with pytest.raises(CompkitError, match=problem):
        open_dataset(path)


def test_templates_that_match_nothing(vessels, tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(f"root: {vessels}\n" + DRIVE_YAML.replace("manual1.gif", "manual1.png"))
    with pytest.raises(CompkitError, match=r"4 of 4 training images have no labels .*missing: empty"):
        open_dataset(path)
    path.write_text(f"root: {vessels}\nmissing: empty\n" + DRIVE_YAML.replace("manual1.gif", "manual1.png"))
    empty = open_dataset(path)
    assert not empty.read_mask(empty.samples[0]).any() and "empty masks" in empty.notes[0]
    path.write_text(f"root: {vessels}\n" + DRIVE_YAML.replace("id: '^(\\d+)_'", "id: '^x(\\d+)'"))
    with pytest.raises(CompkitError, match="does not match the file name '21_training'"):
        open_dataset(path)


def test_index_and_palette_masks_with_an_ignore_value(tmp_path):
    root = tmp_path / "organs"
    labels = np.zeros((20, 24), np.uint8)
    labels[2:8, 2:8] = 1
    labels[10:14, 10:20] = 2
    labels[0, :] = 255  # void
    for k in range(2):
        write(root / "img" / f"c{k}.png", np.full((20, 24, 3), 100 + k, np.uint8))
        write(root / "lab" / f"c{k}.png", labels)
    (root / "dataset.yaml").write_text(
        "splits: {train: img/*.png}\nlabel: ../lab/{stem}.png\nvalues: {0: background, 1: liver, 2: tumour, 255: ignore}\n"
    )
    train = open_dataset(root)
    assert train.classes == ("liver", "tumour")
    mask = train.read_mask(train.samples[0])
    assert mask[0].sum() == 36 and mask[1].sum() == 40
    assert (
        train.read_ignore(train.samples[0], (20, 24))[:, 0].all()
        and train.read_ignore(train.samples[0], (20, 24))[:, 1:].sum() == 0
    )
    colour = np.zeros((20, 24, 3), np.uint8)
    colour[labels == 1] = (0, 0, 255)  # BGR of R,G,B 255,0,0
    write(root / "lab" / "c0.png", colour)
    (root / "dataset.yaml").write_text(
        "splits: {train: img/*.png}\nlabel: ../lab/{stem}.png\nvalues: {'0,0,0': background, '255,0,0': liver}\n"
    )
    train = open_dataset(root)
    assert train.read_mask(train.samples[0])[0].sum() == 36
    (root / "dataset.yaml").write_text(
        "splits: {train: img/*.png}\nlabel: ../lab/{stem}.png\nvalues: {0: background, 1: liver}\n"
    )
    with pytest.raises(CompkitError, match=r"pixel values \[2, 255\] are not in values"):
        train = open_dataset(root)
        train.read_mask(train.samples[1])


def test_patients_meta_and_same_folder_labels(tmp_path):
    root = tmp_path / "slices"
    for case in (1, 2, 3):
        for s in (1, 2):
            write(root / "all" / f"case{case}_slice{s}.png", np.full((16, 16, 3), 50, np.uint8))
            write_gif(root / "all" / f"case{case}_slice{s}_label.gif", np.eye(16, dtype=np.uint8))
    with open(root / "info.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [
                ("image", "scanner", "age"),
                *((f"case{c}_slice{s}", f"S{c % 2}", 40 + c) for c in (1, 2, 3) for s in (1, 2)),
            ]
        )
    (root / "dataset.yaml").write_text(
        "splits: {train: all/*.*}\nlabels: {organ: '{stem}_label.gif'}\npatient: '^(case\\d+)_'\nmeta: {file: info.csv, key: image}\n"
    )
    train = open_dataset(root)
    assert len(train) == 6, "label files caught by the images' glob are not images"
    assert [s.patient for s in train.samples] == ["case1", "case1", "case2", "case2", "case3", "case3"]
    assert train.samples[0].meta == {"scanner": "S1", "age": 41}
    split(root, folds=3, seed=0, console=quiet())
    folds = __import__("json").loads((root / "splits.json").read_text())["folds"]
    assert all(len({i.split("_")[0] for i in f["val"]}) == 1 for f in folds), "a case's slices share a fold"
    (root / "dataset.yaml").write_text(
        "splits: {train: all/*.*}\nlabels: {organ: '{stem}_label.gif'}\npatient: {column: scanner}\nmeta: info.csv\n"
    )
    assert {s.patient for s in open_dataset(root).samples} == {"S0", "S1"}


def test_registered_layout_written_as_a_description(tmp_path):
    data = tmp_path / "bones"
    synth(data, patients=2, test_patients=1, size=64, console=quiet())
    reference = open_dataset(data)
    (data / "dataset.yaml").write_text("format: handbone\n")
    described = open_dataset(data)
    assert described.format_name == "handbone" and described.classes == reference.classes
    assert [s.image_id for s in described.samples] == [s.image_id for s in reference.samples]
    assert np.array_equal(described.read_mask(described.samples[0]), reference.read_mask(reference.samples[0]))
    assert reference.describe() == {"format": "handbone", "classes": list(reference.classes)}
    (data / "dataset.yaml").write_text("format: described\n")
    with pytest.raises(CompkitError, match="would read this file again"):
        open_dataset(data)
