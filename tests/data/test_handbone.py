from __future__ import annotations

import json

import numpy as np
import pytest

from compkit.data import HANDBONE_CLASSES, open_dataset
from compkit.util.errors import CompkitError


def test_reads_layout(synth_data):
    train = open_dataset(synth_data, "train")
    assert train.format_name == "handbone"
    assert train.classes == HANDBONE_CLASSES
    assert len(train) == 12
    ids = [s.image_id for s in train.samples]
    assert ids == sorted(ids)
    for sample in train.samples:
        assert sample.image_id.count("/") == 1
        assert sample.patient == sample.image_id.split("/")[0]
        assert sample.image_path.is_file() and sample.label_path.is_file()
        assert len(sample.polygons) == 29
        assert sample.meta["id"] == int(sample.patient[2:])
        assert sample.meta["sex"] in {"male", "female"}


def test_test_split_unlabelled_unless_gt_given(synth_data):
    test = open_dataset(synth_data, "test")
    assert len(test) == 4 and not test.has_labels
    labelled = open_dataset(synth_data, "test", labels=synth_data.with_name("data_gt"))
    assert labelled.has_labels
    assert [s.image_id for s in labelled.samples] == [s.image_id for s in test.samples]


def test_mask_is_multi_hot_at_original_size(synth_data):
    train = open_dataset(synth_data, "train")
    sample = train.samples[0]
    mask = train.read_mask(sample)
    assert mask.shape == (29, 96, 96)
    assert set(np.unique(mask)) <= {0, 1}
    assert (mask.reshape(29, -1).sum(axis=1) > 0).all()
    assert (mask.sum(axis=0) > 1).any(), "synthetic carpal bones overlap"


def break_label(root, edit):
    path = sorted((root / "train" / "outputs_json").rglob("*.json"))[0]
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d.pop("annotations"), "no 'annotations' list"),
        (lambda d: d["annotations"][0].update(label="finger-99"), "unknown label 'finger-99'"),
        (lambda d: d["annotations"][3].update(points=[[1, 2], [3, 4]]), "has 2 points, needs at least 3"),
        (lambda d: d["annotations"][3].update(points=[1, 2, 3]), "points are not"),
    ],
)
def test_bad_label_names_file_and_problem(data_copy, edit, problem):
    path = break_label(data_copy, edit)
    with pytest.raises(CompkitError, match=problem) as info:
        open_dataset(data_copy, "train")
    assert info.value.path == str(path)


def test_image_without_json(data_copy):
    path = sorted((data_copy / "train" / "outputs_json").rglob("*.json"))[-1]
    path.unlink()
    with pytest.raises(CompkitError, match="no label JSON"):
        open_dataset(data_copy, "train")


def test_invalid_json(data_copy):
    path = sorted((data_copy / "train" / "outputs_json").rglob("*.json"))[0]
    path.write_text("{not json")
    with pytest.raises(CompkitError, match="not valid JSON"):
        open_dataset(data_copy, "train")


def test_missing_and_unknown_folders(tmp_path):
    with pytest.raises(CompkitError, match="dataset folder not found"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(CompkitError, match="not a dataset layout"):
        open_dataset(tmp_path)


def test_meta_without_id_column(data_copy):
    (data_copy / "meta_data.xlsx").unlink()
    (data_copy / "meta_data.csv").write_text("age,sex\n3,M\n")
    with pytest.raises(CompkitError, match="no ID column"):
        open_dataset(data_copy, "train")
