from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compkit.data import HANDBONE_CLASSES, open_dataset
from compkit.stages.synth import synth
from compkit.util.errors import CompkitError
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


def test_refuses_to_overwrite_without_exist_ok(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(CompkitError, match="use --exist-ok to replace it"):
        synth(target, patients=1, test_patients=0, size=64, console=quiet())
    assert (target / "keep.txt").read_text() == "mine"
    synth(target, patients=1, test_patients=0, size=64, exist_ok=True, console=quiet())
    assert not (target / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"


# sha256 of the PNG/JPG/JSON/CSV files (paths and bytes, sorted) of 2 training + 1 test patient(s), by kind, written
# by compkit 85d5d5e, before the generators had variant parameters: their defaults must keep giving exactly this data.
STANDARD_DIGESTS = {
    "handbone": (
        96,
        "eb5fa638adbe64eacfc0d8ddc0f01e49fe79aab7fd3a4845514b3418e57344d7",
        "b03bdb7966d379fc0ec1b19d091de6c82ba850985a56fd1fd3f10ae7415aafb0",
    ),
    "fundus": (
        128,
        "f99cc57691e6cde81b1757b0c3c23fd4d1416cf9096d6f3d1a8be642b8002edc",
        "922d61535b11f08a7779559f00702ca6381e83e5d02d35d5603571500fdc123d",
    ),
    "isic": (
        96,
        "4e11249c5bea9fa2353d9f44a0a39f3e547ec8b70aa60f9998dd18cf01cdbd25",
        "271347ca14c4b2d63115b1ebf30f7c0e021bb6222ea291677e60d21acd9d5933",
    ),
}


def tree_digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".png", ".jpg", ".json", ".csv"):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("kind", sorted(STANDARD_DIGESTS))
def test_default_parameters_give_the_standard_data(kind, tmp_path):
    size, data_digest, gt_digest = STANDARD_DIGESTS[kind]
    root = synth(tmp_path / kind, patients=2, test_patients=1, size=size, kind=kind, console=quiet())
    assert (tree_digest(root), tree_digest(root.with_name(kind + "_gt"))) == (data_digest, gt_digest)


def test_handbone_variants_change_contrast_noise_widths_and_shape(tmp_path):
    from compkit.data import open_dataset

    standard = open_dataset(synth(tmp_path / "a", patients=1, test_patients=0, size=128, console=quiet()), "train")
    options = {"contrast": 0.5, "noise": 2.0, "bone_width": 0.7, "aspect": 0.75}
    variant = open_dataset(
        synth(tmp_path / "b", patients=1, test_patients=0, size=128, console=quiet(), options=options), "train"
    )
    a, b = standard.samples[0], variant.samples[0]
    image_a, image_b = standard.read_image(a), variant.read_image(b)
    assert image_a.shape == (128, 128, 3) and image_b.shape == (128, 96, 3)  # portrait: 96 x 128
    mask_a, mask_b = standard.read_mask(a, image_a.shape[:2]), variant.read_mask(b, image_b.shape[:2])
    finger = standard.classes.index("finger-11")  # a middle-finger metacarpal: inside the crop, thinner
    assert 0 < mask_b[finger].sum() < 0.85 * mask_a[finger].sum()
    bone_gap = lambda image, mask: image[..., 0][mask.any(0)].mean() - image[..., 0][~mask.any(0)].mean()  # noqa: E731
    assert bone_gap(image_b, mask_b) < 0.8 * bone_gap(image_a, mask_a)  # lower contrast
    with pytest.raises(CompkitError, match="aspect"):
        synth(tmp_path / "c", patients=1, test_patients=0, size=128, console=quiet(), options={"aspect": 1.5})


def test_lesion_variants(tmp_path):
    from compkit.data import open_dataset

    def labelled(options):
        root = synth(
            tmp_path / f"f{len(list(tmp_path.iterdir()))}",
            patients=2,
            test_patients=0,
            size=128,
            kind="fundus",
            console=quiet(),
            options=options,
        )
        data = open_dataset(root, "train")
        return sum(int(data.read_mask(s, (128, 128)).any(0).sum()) for s in data.samples)

    assert labelled({"lesion_scale": 2.0}) > 1.5 * labelled({})
    skin = open_dataset(
        synth(
            tmp_path / "skin",
            patients=1,
            test_patients=0,
            size=96,
            kind="isic",
            console=quiet(),
            options={"contrast": 0.0},
        ),
        "train",
    )
    image = skin.read_image(skin.samples[0]).astype(float)
    mask = skin.read_mask(skin.samples[0], image.shape[:2])[0] > 0
    assert abs(image[mask].mean() - image[~mask].mean()) < 25  # no darker lesion: only the vignette and hairs differ


def test_handbone_forearms_can_run_out_of_the_frame(tmp_path):
    from compkit.data.raster import polygon_clips

    standard = open_dataset(synth(tmp_path / "a", patients=2, test_patients=0, size=96, console=quiet()), "train")
    variant = open_dataset(
        synth(tmp_path / "b", patients=2, test_patients=0, size=96, console=quiet(), options={"forearm_out": 0.15}),
        "train",
    )
    forearm = {standard.classes.index("Radius"), standard.classes.index("Ulna")}
    fractions = []
    for a, b in zip(standard.samples, variant.samples, strict=True):
        assert a.image_path.read_bytes() == b.image_path.read_bytes()  # the same X-ray, labelled past its frame
        for pa, pb in zip(a.polygons, b.polygons, strict=True):
            if pa.class_index not in forearm:
                np.testing.assert_array_equal(pa.points, pb.points)
            else:
                assert pa.points[:, 1].max() == 95 and pb.points[:, 1].max() > 95
        fractions += [
            c.fraction
            for c in polygon_clips(b.polygons, (96, 96), variant.classes, b.label_path)
            if c.class_index in forearm
        ]
    assert 0.1 < max(fractions) <= 0.15 and min(fractions) > 0
    with pytest.raises(CompkitError, match="forearm_out"):
        synth(tmp_path / "c", patients=1, test_patients=0, size=96, console=quiet(), options={"forearm_out": -0.1})
