"""Bring your own data, end to end: each real-world layout (TIFF + GIF + field of view with a proposed dataset.yaml,
nested BMP cases, JPEG masks, a Kaggle RLE CSV with 16-bit PNGs and a sample submission, a wide RLE CSV with DICOM)
through split -> train -> predict -> ensemble -> submit -> score, without a conversion script."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.evaluation.metrics import DiceMeter
from compkit.stages.check_data import check_data
from compkit.stages.encode_labels import encode_labels
from compkit.stages.ensemble import ensemble
from compkit.stages.export import export
from compkit.stages.predict import predict
from compkit.stages.score import score
from compkit.stages.split import split
from compkit.stages.submit import submit
from compkit.stages.train import train
from compkit.submission import rle
from tests.conftest import quiet
from tests.layouts import drive, kaggle_long, kaggle_wide_dicom, kvasir, ph2
from tests.stages.test_export import fake_nnunet_predictions
from tests.stages.test_train import FAST

pytestmark = pytest.mark.slow
ONE_EPOCH = [*FAST, "train.epochs=1", "train.batch_size=2", "infer.tta=none"]


def pipeline(data, tmp_path, gt=None):
    """split -> train (fold 0 of 2) -> predict -> ensemble -> submit -> score; returns (rows, score, ensemble)."""
    split(data, folds=2, seed=0, console=quiet())
    train("tiny", data=data, fold="0", overrides=ONE_EPOCH, out=tmp_path / "runs", console=quiet())
    [store] = predict([tmp_path / "runs" / "tiny"], split="test", tta="hflip", exist_ok=True, console=quiet())
    assert (store / "index.json").is_file()
    ens = ensemble([tmp_path / "runs" / "tiny"], name="e", out=tmp_path / "ens", console=quiet())
    out = submit(ens, out=tmp_path / "submission.csv", console=quiet())
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    return rows, score(out, data, gt=gt, console=quiet()), ens


def test_retinal_vessels_with_a_proposed_description(tmp_path):
    data = drive(tmp_path / "DRIVE")
    report = check_data(data, write=True, console=quiet())
    assert len((data / "dataset.yaml").read_text().splitlines()) <= 15 and report["written"]
    rows, dice, ens = pipeline(data, tmp_path)
    assert rows[0] == ["image_name", "class", "rle"] and [r[0] for r in rows[1:]] == ["01_test.tif", "02_test.tif"]
    test = open_dataset(data, "test")
    meter = DiceMeter(test.classes)
    for sample, row in zip(test.samples, rows[1:], strict=True):  # dice over the field of view, by hand
        truth = test.read_mask(sample)
        inside = ~test.read_ignore(sample, truth.shape[1:]).astype(bool)
        pred = rle.decode(row[2], truth.shape[1:], "F")[None].astype(bool)
        assert not (pred & ~inside).any(), "nothing is predicted outside the field of view"
        meter.update(pred & inside, truth.astype(bool) & inside)
    assert dice == pytest.approx(meter.mean())
    assert score(encode_labels(data, tmp_path / "labels.csv", console=quiet()), data, console=quiet()) == pytest.approx(
        1.0
    )
    # an nnU-Net model's probabilities join the ensemble (members at 64x64 and 64x72 meet at the larger)
    [raw] = export("nnunet", data, tmp_path / "nnUNet_raw", console=quiet())
    fake_nnunet_predictions(data, raw, tmp_path / "nnunet_pred")
    both = ensemble(
        [tmp_path / "runs" / "tiny", tmp_path / "nnunet_pred"],
        weights=[1, 3],
        name="both",
        out=tmp_path / "ens",
        console=quiet(),
    )
    assert score(submit(both, out=tmp_path / "both.csv", console=quiet()), data, console=quiet()) == pytest.approx(1.0)


def test_nested_dermoscopy_cases(tmp_path):
    data = ph2(tmp_path / "PH2")
    rows, dice, _ = pipeline(data, tmp_path)
    assert [r[0] for r in rows[1:]] == ["IMD007.bmp", "IMD008.bmp"] and {r[1] for r in rows[1:]} == {"lesion"}
    labels = encode_labels(data, tmp_path / "labels.csv", console=quiet())
    assert score(labels, data, console=quiet()) == pytest.approx(1.0)
    assert dice < 1.0


def test_polyps_with_jpeg_masks_and_held_out_labels(tmp_path):
    data = kvasir(tmp_path / "Kvasir-SEG")
    gt = tmp_path / "Kvasir-SEG_gt"
    rows, dice, _ = pipeline(data, tmp_path, gt=gt)
    assert len(rows) == 3 and all(r[0].endswith(".jpg") for r in rows[1:])
    assert score(
        encode_labels(data, tmp_path / "labels.csv", gt=gt, console=quiet()), data, gt=gt, console=quiet()
    ) == pytest.approx(1.0)


def test_kaggle_rle_csv_with_sample_submission(tmp_path):
    data = kaggle_long(tmp_path / "comp")
    gt = tmp_path / "comp_gt"
    rows, dice, _ = pipeline(data, tmp_path, gt=gt)
    with open(data / "sample_submission.csv", newline="") as f:
        sample = list(csv.reader(f))
    assert rows[0] == ["id", "class", "predicted"], "the sample's header"
    assert [r[:2] for r in rows[1:]] == [r[:2] for r in sample[1:]], "the sample's rows and order (class by class)"
    folds = __import__("json").loads((data / "splits.json").read_text())["folds"]
    for fold in folds:  # slices of one case never straddle folds (patient regex from the ids)
        assert not {i.split("_")[0] for i in fold["train"]} & {i.split("_")[0] for i in fold["val"]}
    labels = encode_labels(data, tmp_path / "labels.csv", gt=gt, console=quiet())
    assert score(labels, data, gt=gt, console=quiet()) == pytest.approx(1.0)
    assert dice < 1.0


def test_kaggle_wide_csv_with_dicom(tmp_path):
    data = kaggle_wide_dicom(tmp_path / "xray")
    gt = tmp_path / "xray_gt"
    rows, dice, _ = pipeline(data, tmp_path, gt=gt)
    assert rows[0] == ["ImageId", "opacity", "effusion"] and len(rows) == 3
    assert all(r[0].startswith("1.2.276.") and not r[0].endswith(".dcm") for r in rows[1:])
    assert open_dataset(data, "test").rle_order == "C"
    labels = encode_labels(data, tmp_path / "labels.csv", gt=gt, console=quiet())
    with open(labels, newline="") as f:
        written = list(csv.reader(f))
    assert "-1" in {c for r in written[1:] for c in r[1:]}, "empty masks as the sample's -1"
    assert score(labels, data, gt=gt, console=quiet()) == pytest.approx(1.0)
    train_set = open_dataset(data)
    first = train_set.read_mask(train_set.samples[0])
    assert first[0].sum() > 0 and np.unique(first).tolist() == [0, 1], "two instance rows merged"
