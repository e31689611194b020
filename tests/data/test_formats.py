"""The dataset-format registry: every format registered, detected from its layout, and written by a writer that
the registry resolves (a format's own, else the one of the layout it is written as)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compkit.data import DATASET_FORMATS, SegmentationDataset, open_dataset, register_format
from compkit.data.coco import CocoDataset
from compkit.data.formats import detected_formats, ignore_file_name
from compkit.data.handbone import HandBoneDataset, HandBoneWriter
from compkit.data.masks import IsicDataset, MaskFolderDataset, MaskFolderWriter
from compkit.data.sample import Sample
from compkit.util.errors import CompkitError
from compkit.util.fileio import write_image
from tests.data.test_coco import make_coco

BUILT_IN = {"handbone": HandBoneDataset, "masks": MaskFolderDataset, "isic": IsicDataset, "coco": CocoDataset}


@pytest.fixture
def coco_data(tmp_path):
    make_coco(tmp_path / "coco")
    return tmp_path / "coco"


@pytest.fixture
def registry():
    """Restores the registry after a test registers a format of its own."""
    saved = DATASET_FORMATS.names()
    yield DATASET_FORMATS
    for name in DATASET_FORMATS.names(where=lambda cls: cls.format_name not in saved):
        DATASET_FORMATS.unregister(name)


def test_built_in_formats_are_registered():
    for name, cls in BUILT_IN.items():
        assert DATASET_FORMATS[name] is cls and cls.format_name == name


@pytest.mark.parametrize(
    ("fixture", "name"),
    [("synth_data", "handbone"), ("fundus_data", "masks"), ("isic_data", "isic"), ("coco_data", "coco")],
)
def test_each_layout_is_detected(request, fixture, name):
    root = request.getfixturevalue(fixture)
    assert detected_formats(root)[0] == name, (
        "the specific format is detected first (generic layouts such as 'pairs' after it)"
    )
    dataset = open_dataset(root)
    assert dataset.format_name == name and type(dataset) is BUILT_IN[name] and dataset.split == "train"
    assert open_dataset(root, format=name).format_name == name


def test_a_handbone_test_folder_alone_is_detected(tmp_path):
    write_image(tmp_path / "test" / "DCM" / "ID001" / "a.png", np.zeros((8, 8, 3), np.uint8))
    assert HandBoneDataset.detect(tmp_path)
    test = open_dataset(tmp_path, "test")
    assert (
        test.format_name == "handbone"
        and not test.has_labels
        and test.has_split("test")
        and not test.has_split("train")
    )


def test_unknown_format_and_unknown_layout(tmp_path, synth_data):
    with pytest.raises(
        CompkitError, match=rf"unknown dataset format 'nifti' \(known: {', '.join(DATASET_FORMATS)}\)"
    ) as info:
        open_dataset(synth_data, format="nifti")
    assert info.value.path == str(synth_data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        CompkitError, match=rf"not a dataset layout compkit knows \(formats: {', '.join(DATASET_FORMATS)}\)"
    ):
        open_dataset(tmp_path / "empty")
    with pytest.raises(CompkitError, match="dataset folder not found"):
        open_dataset(tmp_path / "missing")


class Toy(SegmentationDataset):
    """A format of one fixed 4x4 image per ``*.toy`` file, written in the hand-bone layout."""

    format_name = "toy"
    written_as = "handbone"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return next(root.glob("*.toy"), None) is not None

    @classmethod
    def open(cls, root, split="train", labels=None, classes=None):
        samples = [Sample(p.name, p.stem, p, p) for p in sorted(root.glob("*.toy"))]
        return cls(root, split, classes or ("thing",), samples)

    def read_mask(self, sample, shape=None):
        return np.ones((1, *(shape or (4, 4))), np.uint8)


def test_a_registered_format_is_detected_and_written_as_its_layout(registry, tmp_path):
    assert register_format(Toy) is Toy
    assert DATASET_FORMATS["toy"] is Toy
    (tmp_path / "a.toy").write_text("")
    dataset = open_dataset(tmp_path)
    assert type(dataset) is Toy and dataset.classes == ("thing",)
    writer = dataset.writer(tmp_path / "out")
    assert type(writer) is HandBoneWriter, "written_as resolves through the registry"
    assert writer.dataset is dataset and writer.out == tmp_path / "out"


@pytest.mark.parametrize(
    ("cls", "own", "writer"),
    [
        (HandBoneDataset, HandBoneWriter, HandBoneWriter),
        (MaskFolderDataset, MaskFolderWriter, MaskFolderWriter),
        (IsicDataset, None, MaskFolderWriter),
        (CocoDataset, None, MaskFolderWriter),
    ],
)
def test_writer_class_resolution(cls, own, writer, tmp_path):
    assert cls.writer_class is own
    dataset = cls.__new__(cls)  # no files needed to ask for a writer
    SegmentationDataset.__init__(dataset, tmp_path, "train", ("x",), [])
    assert type(dataset.writer(tmp_path / "out")) is writer


def test_meta_files(synth_data, fundus_data, isic_data, coco_data):
    assert open_dataset(synth_data).meta_files() == [synth_data / "meta_data.xlsx"]
    assert [p.suffix for p in open_dataset(fundus_data).meta_files()] == [".csv"]
    for root in (isic_data, coco_data):
        assert open_dataset(root).meta_files() == []


def test_source_files_are_the_files_read(synth_data, fundus_data, isic_data, coco_data):
    """Every format lists its samples' files (image first, then label files; never a folder) and the dataset's own,
    so that the preprocessing cache sees a change to any of them."""
    for root in (synth_data, fundus_data, isic_data, coco_data):
        dataset = open_dataset(root)
        for sample in dataset.samples:
            files = dataset.source_files(sample)
            assert files[0] == sample.image_path and len(files) >= 2, (root, files)
            assert all(p.is_file() for p in files), (root, files)
        assert all(p.is_file() for p in dataset.dataset_files())
    assert [p.name for p in open_dataset(isic_data).dataset_files()] == [
        p.name for p in sorted(isic_data.glob("*.csv"))
    ]
    masks = open_dataset(fundus_data)
    assert len(masks.source_files(masks.sample("0001_1.png"))) == 1 + len(masks.mask_files["0001_1.png"])


def test_shared_surface(synth_data):
    dataset = open_dataset(synth_data)
    first = dataset.samples[0]
    assert dataset.sample(first.image_id) is first
    with pytest.raises(KeyError):
        dataset.sample("ID999/none.png")
    assert dataset.image_shape(first) == (96, 96) and dataset.read_image(first).shape == (96, 96, 3)
    assert dataset.submission_name(first) == first.image_name
    assert dataset.read_ignore(first, (96, 96)) is None
    assert ignore_file_name("ID001/a.png") == "ID001__a.png.npy"
