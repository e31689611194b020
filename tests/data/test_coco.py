from __future__ import annotations

import json

import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.util.errors import CompkitError
from compkit.util.fileio import write_image


def make_coco(root, segmentation=None):
    write_image(root / "train" / "a.png", np.zeros((8, 8, 3), np.uint8))
    write_image(root / "train" / "b.png", np.zeros((8, 8, 3), np.uint8))
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "patient_id": "p1"},
            {"id": 2, "file_name": "b.png", "patient_id": "p1"},
        ],
        "categories": [{"id": 7, "name": "cell"}, {"id": 3, "name": "nucleus"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "segmentation": segmentation or [[1, 1, 4, 1, 4, 4, 1, 4]]},
            {"id": 2, "image_id": 1, "category_id": 3, "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]},
        ],
    }
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))


def test_coco_polygons(tmp_path):
    make_coco(tmp_path)
    dataset = open_dataset(tmp_path)
    assert dataset.format_name == "coco" and dataset.classes == ("nucleus", "cell"), "categories in id order"
    assert [s.patient for s in dataset.samples] == ["p1", "p1"]
    mask = dataset.read_mask(dataset.samples[0])
    assert mask[1].sum() == 16 and mask[0].sum() == 25 and (mask[0] & mask[1]).sum() == 9
    assert not dataset.read_mask(dataset.samples[1]).any()


def test_coco_rle_segmentation_is_refused(tmp_path):
    make_coco(tmp_path, segmentation={"counts": "abc", "size": [8, 8]})
    with pytest.raises(CompkitError, match="only polygon segmentations"):
        open_dataset(tmp_path)
