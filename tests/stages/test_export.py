"""``compkit export nnunet``: nnU-Net v2's raw 2D layout; and nnU-Net ``--save_probabilities`` folders as members."""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.stages.ensemble import ensemble
from compkit.stages.export import case_id, export
from compkit.stages.score import score
from compkit.stages.split import split
from compkit.stages.submit import submit
from compkit.stages.synth import synth
from compkit.stores.members import open_member
from compkit.util.errors import CompkitError
from tests.conftest import quiet
from tests.data.test_described import DRIVE_YAML
from tests.layouts import drive


@pytest.fixture(scope="module")
def vessels(tmp_path_factory):
    root = drive(tmp_path_factory.mktemp("drive") / "DRIVE")
    (root / "dataset.yaml").write_text(DRIVE_YAML)
    split(root, folds=2, seed=0, console=quiet())
    return root


def test_labels_with_field_of_view_as_ignore(vessels, tmp_path):
    [folder] = export("nnunet", vessels, tmp_path / "raw", dataset_id=7, console=quiet())
    assert folder.name == "Dataset007_Drive"
    info = json.loads((folder / "dataset.json").read_text())
    assert info["name"] == "Dataset007_Drive", "the dataset's own name, not its staging folder's"
    assert info["channel_names"] == {"0": "R", "1": "G", "2": "B"} and info["file_ending"] == ".png"
    assert info["labels"] == {"background": 0, "vessel": 1, "ignore": 2} and info["numTraining"] == 4
    assert "regions_class_order" not in info
    assert (
        info["compkit"]["cases"]["21_training"] == "21_training.tif"
        and info["compkit"]["cases"]["01_test"] == "01_test.tif"
    )
    assert sorted(p.name for p in (folder / "imagesTr").iterdir())[0] == "21_training_0000.png"
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["01_test_0000.png", "02_test_0000.png"]
    train = open_dataset(vessels)
    label = cv2.imread(str(folder / "labelsTr" / "21_training.png"), cv2.IMREAD_UNCHANGED)
    truth = train.read_mask(train.samples[0])[0]
    ignored = train.read_ignore(train.samples[0], truth.shape)[0].astype(bool)
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1, 2}
    assert np.array_equal(label == 2, ignored) and np.array_equal(label == 1, truth.astype(bool) & ~ignored)
    image = cv2.imread(str(folder / "imagesTr" / "21_training_0000.png"))
    assert np.array_equal(image, train.read_image(train.samples[0])), "the image as compkit reads it (RGB PNG)"
    folds = json.loads((folder / "splits_final.json").read_text())
    assert len(folds) == 2 and sorted(folds[0]["val"] + folds[1]["val"]) == [
        "21_training",
        "22_training",
        "23_training",
        "24_training",
    ]


def test_overlapping_classes_become_regions_or_per_class_tasks(tmp_path):
    data = tmp_path / "bones"
    synth(data, patients=1, test_patients=0, size=64, console=quiet())
    (data / "dataset.yaml").write_text("format: handbone\n")
    with pytest.raises(CompkitError, match="classes overlap"):
        export("nnunet", data, tmp_path / "raw", mode="labels", console=quiet())
    [folder] = export("nnunet", data, tmp_path / "raw", console=quiet())
    info = json.loads((folder / "dataset.json").read_text())
    labels = info["labels"]
    assert info["channel_names"] == {"0": "grey"}, "grey X-rays as one channel"
    assert len(info["regions_class_order"]) == 29 and info["compkit"]["mode"] == "regions"
    train = open_dataset(data)
    sample = train.samples[0]
    mask = train.read_mask(sample)
    label = cv2.imread(str(folder / "labelsTr" / f"{case_id(sample.image_id)}.png"), cv2.IMREAD_UNCHANGED)
    for c, name in enumerate(train.classes):  # each class is exactly the region of its values
        assert np.array_equal(np.isin(label, labels[name]), mask[c].astype(bool)), name
    assert any(len(v) > 1 for k, v in labels.items() if k != "background")
    folders = export("nnunet", data, tmp_path / "per", mode="per-class", dataset_id=600, console=quiet())
    assert (
        len(folders) == 29
        and folders[0].name == "Dataset600_Bones_finger1"
        and folders[-1].name == "Dataset628_Bones_Ulna"
    )
    assert json.loads((folders[-1] / "dataset.json").read_text())["labels"] == {"background": 0, "Ulna": 1}


class Exploit:
    """Unpickling this writes a file: proof that a .pkl was never loaded."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def fake_nnunet_predictions(vessels, raw, out):
    """What nnUNetv2_predict --save_probabilities writes: <case>.npz (softmax over label values, (C, 1, H, W)),
    <case>.pkl, <case>.png, and the model's dataset.json."""
    info = json.loads((raw / "dataset.json").read_text())
    out.mkdir(parents=True)
    (out / "dataset.json").write_text(json.dumps(info))
    test = open_dataset(vessels, "test")
    for case, image_id in info["compkit"]["cases"].items():
        if not case.endswith("_test"):
            continue
        truth = test.read_mask(test.sample(image_id))[0].astype(np.float32)
        vessel = 0.05 + 0.9 * truth
        np.savez_compressed(
            out / f"{case}.npz", probabilities=np.stack([1 - vessel, vessel])[:, None].astype(np.float32)
        )
        with open(out / f"{case}.pkl", "wb") as f:
            pickle.dump(Exploit(str(out / "PWNED")), f)
        cv2.imwrite(str(out / f"{case}.png"), truth.astype(np.uint8))


def test_nnunet_probabilities_as_a_member(vessels, tmp_path):
    [raw] = export("nnunet", vessels, tmp_path / "raw", console=quiet())
    predictions = tmp_path / "nnunet_predictions"
    fake_nnunet_predictions(vessels, raw, predictions)
    member = open_member(predictions)
    assert member.families == ["nnunet"] and member.classes == ["vessel"] and member.resolution == (72, 64)
    assert sorted(member.image_ids) == ["01_test.tif", "02_test.tif"]
    assert member.data_root == str(vessels.absolute())
    ens = ensemble([predictions], name="nn", out=tmp_path / "ens", console=quiet())
    out = submit(ens, out=tmp_path / "nn.csv", console=quiet())
    assert score(out, vessels, console=quiet()) == pytest.approx(1.0)
    assert not (predictions / "PWNED").exists(), "the .pkl files are never unpickled"
    info = json.loads((predictions / "dataset.json").read_text())
    del info["compkit"]
    (predictions / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(CompkitError, match="no compkit entry"):
        open_member(predictions)


def test_label_values_of_classes_their_combinations_and_ignore():
    from compkit.stages.export import LabelValues

    plain = LabelValues.of([2, 5], [], ignored=True)
    assert plain.values == {(2,): 1, (5,): 2} and not plain.regions and plain.ignore_value == 3
    assert plain.local() == {(0,): 1, (1,): 2}
    assert plain.labels(["a", "b"]) == {"background": 0, "a": 1, "b": 2, "ignore": 3}
    regions = LabelValues.of([0, 1, 2], [(0, 1), (1, 2)], ignored=False)
    assert regions.regions and regions.ignore_value is None and regions.values[(1, 2)] == 5
    assert regions.labels(["a", "b", "c"]) == {"background": 0, "a": [1, 4], "b": [2, 4, 5], "c": [3, 5]}
