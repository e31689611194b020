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


# compkit export run: an inference-only copy to upload


def test_an_exported_run_predicts_and_tunes_as_the_run_does_without_its_training_state(tmp_path, trained_tiny_run):
    import torch

    from compkit.inference.loaded_run import load_run
    from compkit.stages.export import export_run
    from compkit.stages.predict import predict
    from compkit.stores.probabilities import Store
    from compkit.training.runs import read_run_record
    from compkit.util.fileio import read_json

    run, data = trained_tiny_run.run, trained_tiny_run.data
    out = export_run(run, tmp_path / "upload" / "tiny", console=quiet())
    assert sorted(p.name for p in out.iterdir()) == ["fold0", "fold1"]
    for fold in ("fold0", "fold1"):
        checkpoint = torch.load(out / fold / "best.pt", weights_only=True)
        assert (
            "optimizer" not in checkpoint and "schedule" not in checkpoint and checkpoint["exported"] == {"half": False}
        )
        assert not (out / fold / "last.pt").exists() and (out / fold / "oof" / "index.json").is_file()
        assert (out / fold / "best.pt").stat().st_size < (run / fold / "best.pt").stat().st_size / 2
        assert read_run_record(out / fold)["exported"]["from"] == str((run / fold).resolve())
    predict([out], data=data, console=quiet())  # in place: the export is an ordinary run folder
    for fold in ("fold0", "fold1"):
        ours, theirs = Store(out / fold / "test"), Store(run / fold / "test")
        for image_id in theirs.image_ids:
            assert np.array_equal(ours.read_raw(image_id), theirs.read_raw(image_id))
    here = ensemble([out], name="exported", data=data, out=tmp_path / "ens", console=quiet())
    there = ensemble([run], name="local", data=data, out=tmp_path / "ens", console=quiet())
    assert read_json(here / "thresholds.json") == read_json(there / "thresholds.json")
    assert read_json(here / "postprocess.json") == read_json(there / "postprocess.json")
    image = cv2.imread(str(next((data / "test").rglob("*.png"))))
    assert np.array_equal(load_run(out).predict(image), load_run(run).predict(image))


def test_half_weights_predict_within_a_quantisation_step_and_outputs_are_guarded(tmp_path, trained_tiny_run):
    import torch

    from compkit.stages.export import export_run
    from compkit.stages.predict import predict
    from compkit.stores.probabilities import Store

    run, data = trained_tiny_run.run, trained_tiny_run.data
    out = export_run(run / "fold0", tmp_path / "half", half=True, console=quiet())
    weights = torch.load(out / "fold0" / "best.pt", weights_only=True)["model"]
    assert {t.dtype for t in weights.values() if torch.is_floating_point(t)} == {torch.float16}
    predict([out], data=data, console=quiet())
    ours, theirs = Store(out / "fold0" / "test"), Store(run / "fold0" / "test")
    worst = max(np.abs(ours.read_raw(i).astype(int) - theirs.read_raw(i).astype(int)).max() for i in theirs.image_ids)
    assert worst <= 2  # uint8 stores: at most two steps of 1/255 from float16 weights
    with pytest.raises(CompkitError, match="already exists"):
        export_run(run / "fold0", out, console=quiet())
    with pytest.raises(CompkitError, match="is the run being exported"):
        export_run(run, run, console=quiet())
    export_run(run / "fold0", out, exist_ok=True, console=quiet())
    assert not (out / "fold0" / "test").exists()  # replaced whole
