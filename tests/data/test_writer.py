"""Dataset writers (``compkit augment``, ``compkit pseudo``): each format's samples written as a new dataset that
opens again with the same labels."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.data.handbone import HandBoneWriter
from compkit.data.masks import MaskFolderWriter
from compkit.data.writer import trace_polygons
from compkit.evaluation.metrics import dice_per_class
from compkit.util.fileio import link_or_copy
from tests.data.test_coco import make_coco


def by_id(dataset):
    return {s.image_id: s for s in dataset.samples}


def ignore_mask(classes: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random((classes, *shape)) < 0.3).astype(np.uint8)


# Helpers


def test_trace_polygons_outlines_each_blob():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 3:9] = 1
    mask[12:18, 12:15] = 1
    mask[0, 19] = 1  # one pixel: fewer than 3 contour points
    polygons = trace_polygons(mask)
    assert len(polygons) == 2
    assert sorted(sorted(map(tuple, p)) for p in polygons) == [
        [(3, 2), (3, 5), (8, 2), (8, 5)],
        [(12, 12), (12, 17), (14, 12), (14, 17)],
    ]
    assert trace_polygons(np.zeros((5, 5), np.uint8)) == []


def test_link_or_copy_links_and_falls_back_to_copying(tmp_path, monkeypatch):
    source = tmp_path / "a.txt"
    source.write_text("a")
    link_or_copy(source, tmp_path / "deep" / "b.txt")
    assert os.path.samefile(source, tmp_path / "deep" / "b.txt")

    def no_links(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    link_or_copy(source, tmp_path / "c.txt")
    assert (tmp_path / "c.txt").read_text() == "a" and not os.path.samefile(source, tmp_path / "c.txt")


# Hand bones: polygon JSONs


def test_handbone_writer_round_trip(synth_data, tmp_path):
    source = open_dataset(synth_data)
    out = tmp_path / "out"
    writer = source.writer(out)
    assert type(writer) is HandBoneWriter and writer.out == out and writer.dataset is source
    first, second, third = source.samples[:3]

    writer.original(first)
    image, mask = source.read_image(second), source.read_mask(second)
    writer.new(
        "ID100/rotated.png", image, mask, {"augmented": True, "source_patients": [first.patient, second.patient]}
    )
    pseudo_mask = source.read_mask(third)
    pseudo_mask[5] = 0  # the new labels lack one class
    writer.labelled(third, pseudo_mask, {"pseudo": True})
    ignored = ignore_mask(len(source.classes), source.image_shape(third))
    writer.ignore(third.image_id, ignored)
    writer.finish()

    # Originals are linked, not rewritten: image and label JSON alike.
    assert os.path.samefile(out / "train" / "DCM" / first.image_id, first.image_path)
    assert os.path.samefile(out / "train" / "outputs_json" / first.image_id.replace(".png", ".json"), first.label_path)
    assert os.path.samefile(out / "train" / "DCM" / third.image_id, third.image_path), "pseudo-labels keep the image"
    # The meta table travels along.
    assert (out / "meta_data.xlsx").read_bytes() == (synth_data / "meta_data.xlsx").read_bytes()

    written = open_dataset(out)
    assert written.format_name == "handbone" and written.classes == source.classes and len(written) == 3
    samples = by_id(written)
    assert np.array_equal(written.read_mask(samples[first.image_id]), source.read_mask(first))
    new = samples["ID100/rotated.png"]
    assert np.array_equal(written.read_image(new), image)
    assert dice_per_class(written.read_mask(new), mask).mean() > 0.95, "traced polygons rasterise back to the mask"
    assert new.meta["source_patients"] == [first.patient, second.patient]
    relabelled = samples[third.image_id]
    assert dice_per_class(written.read_mask(relabelled), pseudo_mask).mean() > 0.95
    assert not written.read_mask(relabelled)[5].any()
    label = json.loads(relabelled.label_path.read_text())
    assert label["metadata"] == {"pseudo": True} and label["filename"] == third.image_id.split("/")[-1]
    assert {a["type"] for a in label["annotations"]} == {"poly_seg"}
    assert relabelled.meta["sex"] == third.meta["sex"], "meta read from the copied table"
    # Ignore masks read back through the dataset, beside the layout.
    assert np.array_equal(written.read_ignore(relabelled, source.image_shape(third)), ignored)
    assert written.read_ignore(new, source.image_shape(second)) is None


# Mask folders


def test_masks_writer_round_trip(fundus_data, tmp_path):
    source = open_dataset(fundus_data)
    out = tmp_path / "out"
    writer = source.writer(out)
    assert type(writer) is MaskFolderWriter
    first, second = source.samples[:2]
    writer.original(first)
    image, mask = source.read_image(second), source.read_mask(second)
    mask[2] = 0
    mask[2, 10:30, 40:60] = 1
    writer.new("0099_1.jpg", image, mask, {"source_patients": ["P0001", "P0002"]})
    writer.new("0098_1.png", image, mask)  # no source patients: no augmented.csv row
    ignored = ignore_mask(len(source.classes), mask.shape[1:])
    writer.ignore("0099_1.png", ignored)
    writer.finish()

    train = out / "train"
    assert sorted(p.name for p in train.iterdir()) == sorted(
        ["Original_Images", *(f"{c}_Masks" for c in source.classes)]
    )
    assert sorted(p.name for p in (train / "Original_Images").iterdir()) == [
        "0001_1.png",
        "0098_1.png",
        "0099_1.png",
    ], "written as PNG"
    for c in source.classes:
        assert (train / f"{c}_Masks" / "0099_1.png").is_file(), "every class gets a mask file, empty or not"
    with open(out / "augmented.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert {r["image"]: r["source_patients"] for r in table} == {"0001_1.png": "P0001", "0099_1.png": "P0001|P0002"}

    written = open_dataset(out)
    assert written.format_name == "masks" and written.classes == source.classes
    samples = by_id(written)
    assert np.array_equal(written.read_mask(samples["0001_1.png"]), source.read_mask(first))
    assert np.array_equal(written.read_image(samples["0001_1.png"]), source.read_image(first))
    assert np.array_equal(written.read_mask(samples["0099_1.png"]), mask)
    assert samples["0099_1.png"].meta["source_patients"] == "P0001|P0002"
    assert np.array_equal(written.read_ignore(samples["0099_1.png"], mask.shape[1:]), ignored)
    assert written.read_ignore(samples["0098_1.png"], mask.shape[1:]) is None


@pytest.mark.parametrize("kind", ["isic", "coco"])
def test_formats_without_a_layout_of_their_own_are_written_as_masks(kind, isic_data, tmp_path):
    if kind == "isic":
        root = isic_data
    else:
        root = tmp_path / "coco"
        make_coco(root)
    source = open_dataset(root)
    assert source.format_name == kind and type(source).writer_class is None
    out = tmp_path / "out"
    writer = source.writer(out)
    assert type(writer) is MaskFolderWriter and writer.dataset is source
    for sample in source.samples[:2]:
        writer.original(sample)
    writer.finish()
    written = open_dataset(out)
    # The class order survives (COCO's is by category id: nucleus, cell; folder names alone would sort it).
    assert written.format_name == "masks" and written.classes == source.classes
    order = list(range(len(source.classes)))
    assert len(written) == 2
    for original, copy in zip(source.samples[:2], written.samples, strict=True):
        assert copy.image_id.endswith(".png") and copy.image_path.stem == original.image_path.stem
        assert np.array_equal(written.read_mask(copy)[order], source.read_mask(original))
        assert np.array_equal(written.read_image(copy), source.read_image(original))
        assert copy.meta["source_patients"] == original.patient, "patients still group the folds"


def test_a_written_masks_dataset_keeps_its_image_level_values(fundus_data, tmp_path):
    """The source's CSVs (the DR grade) travel along, so an auxiliary head still has its targets."""
    source = open_dataset(fundus_data)
    writer = source.writer(tmp_path / "out")
    for sample in source.samples:
        writer.original(sample)
    writer.finish()
    written = {s.image_path.stem: s for s in open_dataset(tmp_path / "out").samples}
    for sample in source.samples:
        copy = written[sample.image_path.stem]
        assert copy.meta["grade"] == sample.meta["grade"], "the grade came along"
        assert copy.meta["source_patients"] == sample.patient, "and the patient, for the folds"
