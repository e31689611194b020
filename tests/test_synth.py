from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from compkit.data import HANDBONE_CLASSES, open_dataset
from compkit.errors import CompkitError
from compkit.synth import synth
from tests.conftest import quiet


def tree_bytes(root):
    """Every file's bytes; the spreadsheet by content (xlsx embeds its save time)."""
    return {
        p.relative_to(root).as_posix(): pd.read_excel(p).to_csv() if p.suffix == ".xlsx" else p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout(synth_data):
    assert len(list((synth_data / "train" / "DCM").glob("ID*/*.png"))) == 12
    assert len(list((synth_data / "train" / "outputs_json").glob("ID*/*.json"))) == 12
    assert len(list((synth_data / "test" / "DCM").glob("ID*/*.png"))) == 4
    assert not (synth_data / "test" / "outputs_json").exists(), "test labels stay outside the dataset"
    assert len(list(synth_data.with_name("data_gt").glob("outputs_json/ID*/*.json"))) == 4
    for folder in (synth_data / "train" / "DCM").iterdir():
        assert len(list(folder.iterdir())) == 2, "two hands per patient"
    label = json.loads(next((synth_data / "train" / "outputs_json").rglob("*.json")).read_text())
    assert {"filename", "metadata", "attributes", "last_workers", "annotations"} <= set(label)
    assert {a["label"] for a in label["annotations"]} == set(HANDBONE_CLASSES)
    assert all(a["type"] == "poly_seg" and len(a["points"]) >= 3 for a in label["annotations"])


def test_meta_has_real_columns_and_quirks(synth_data):
    frame = pd.read_excel(synth_data / "meta_data.xlsx")
    assert list(frame.columns) == ["ID", "나이", "성별", "체중(몸무게)", "키(신장)", "Unnamed: 5"]
    assert frame["성별"].str.startswith("_x0008_").all()
    assert sorted(frame["ID"]) == list(range(1, 9))


def test_images_are_grey_three_channel_and_learnable(synth_data):
    train = open_dataset(synth_data, "train")
    for sample in train.samples[:4]:
        image = train.read_image(sample)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        bone = train.read_mask(sample).any(axis=0)
        assert image[..., 0][bone].mean() > image[..., 0][~bone].mean() + 60


def test_hands_are_mirrored(synth_data):
    train = open_dataset(synth_data, "train")
    radius = HANDBONE_CLASSES.index("Radius")
    ulna = HANDBONE_CLASSES.index("Ulna")
    by_patient = {}
    for s in train.samples:
        by_patient.setdefault(s.patient, []).append(s)
    sides = []
    for hands in by_patient.values():
        for s in hands:
            points = {p.class_index: p.points for p in s.polygons}
            sides.append(np.sign(points[ulna][:, 0].mean() - points[radius][:, 0].mean()))
        assert sides[-1] != sides[-2], "one right and one (mirrored) left hand per patient"


def test_carpal_overlaps(synth_data):
    train = open_dataset(synth_data, "train")
    pisiform, triquetrum = HANDBONE_CLASSES.index("Pisiform"), HANDBONE_CLASSES.index("Triquetrum")
    for s in train.samples:
        mask = train.read_mask(s)
        assert (mask[pisiform] & mask[triquetrum]).any()


def test_deterministic_by_seed(tmp_path, synth_data):
    synth(tmp_path / "data", patients=6, test_patients=2, size=96, seed=0, console=quiet())
    assert tree_bytes(tmp_path / "data") == tree_bytes(synth_data)
    assert tree_bytes(tmp_path / "data_gt") == tree_bytes(synth_data.with_name("data_gt"))
    synth(tmp_path / "other", patients=6, test_patients=2, size=96, seed=1, console=quiet())
    assert tree_bytes(tmp_path / "other") != tree_bytes(synth_data)


def test_refuses_to_overwrite_without_force(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(CompkitError, match="--force"):
        synth(target, patients=1, test_patients=0, size=64, console=quiet())
    assert (target / "keep.txt").read_text() == "mine"
    synth(target, patients=1, test_patients=0, size=64, force=True, console=quiet())
    assert not (target / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"
