"""Auto-detection of the obvious layouts (pairs, nested cases, Kaggle RLE CSV), and readings proposed where unsure."""

from __future__ import annotations

import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.data.layouts import class_name, infer_readings, survey
from compkit.util.errors import CompkitError
from tests.layouts import blob, drive, kaggle_long, kvasir, ph2, photo, seeded, write, write_gif


def test_drive_is_read_but_not_without_asking(tmp_path):
    root = drive(tmp_path / "DRIVE")
    [reading] = infer_readings(root)
    assert not reading.confident
    assert reading.spec == {
        "splits": {"train": "training/images/*.tif", "test": "test/images/*.tif"},
        "id": r"^(\d+)",
        "labels": {"1st_manual": "../1st_manual/{id}_manual1.gif"},
        "ignore": {"outside": "../mask/{stem}_mask.gif"},
    }
    assert any("field-of-view" in d for d in reading.doubts) and any("leading number" in d for d in reading.doubts)
    with pytest.raises(
        CompkitError, match=r"not sure how to read this folder: training/images/\*.tif .*check-data .* --write"
    ):
        open_dataset(root)


def test_nested_cases_with_lossy_copies(tmp_path):
    root = ph2(tmp_path / "PH2")
    found = survey(root)
    assert found.format == "pairs" and found.sure
    assert found.proposal.spec == {
        "splits": {
            "train": "PH2 Dataset images/*/*_Dermoscopic_Image/*.bmp",
            "test": "test/*/*_Dermoscopic_Image/*.bmp",
        },
        "labels": {"lesion": "../{stem}_lesion/{stem}_lesion.bmp"},
    }
    train = open_dataset(root)
    assert (
        train.format_name == "pairs"
        and [s.image_id for s in train.samples][0] == "IMD002/IMD002_Dermoscopic_Image/IMD002.bmp"
    )
    assert [train.image_shape(s) for s in train.samples[:2]] == [(64, 76), (66, 76)], "sizes vary a little"
    masks = [train.read_mask(s) for s in train.samples]
    assert all(m.shape[0] == 1 and 0.01 < m.mean() < 0.5 for m in masks), "1-bit and 24-bit BMP masks"
    assert len(open_dataset(root, "test")) == 2


def test_images_and_masks_folders_with_jpeg_masks(tmp_path):
    root = kvasir(tmp_path / "Kvasir-SEG")
    train = open_dataset(root)
    assert train.format_name == "pairs" and train.classes == ("foreground",) and len(train) == 5
    mask = train.read_mask(train.samples[0])
    assert set(np.unique(mask)) == {0, 1}
    assert not open_dataset(root, "test").has_labels


@pytest.mark.parametrize("suffix", ["_mask", "_seg", "_segmentation", "_label"])
@pytest.mark.parametrize("parallel", [False, True])
def test_mask_suffixes_beside_or_parallel(tmp_path, suffix, parallel):
    root = tmp_path / "d"
    for k in range(4):
        rng = seeded(7, k)
        mask = blob(rng, 40, 48)
        write(root / "data" / f"img{k}.png", photo(rng, mask))
        write(root / ("labels" if parallel else "data") / f"img{k}{suffix}.png", mask * 255)
    train = open_dataset(root)
    assert train.format_name == "pairs" and len(train) == 4
    template = train.describe()["labels"]["foreground"]
    assert template == (f"../labels/{{stem}}{suffix}.png" if parallel else f"{{stem}}{suffix}.png")
    assert train.read_mask(train.samples[0]).sum() > 0


def test_two_readings_ask_for_a_description(tmp_path):
    root = tmp_path / "d"
    for folder in ("a", "b"):
        for k in range(3):
            rng = seeded(6, k)
            mask = blob(rng, 32, 32)
            write(root / folder / "images" / f"x{k}.png", photo(rng, mask))
            write(root / folder / "masks" / f"x{k}.png", mask * 255)
    readings = infer_readings(root)
    assert len(readings) == 2 and not any(r.confident for r in readings)
    assert "2 image folders have masks" in readings[0].doubts[-1]
    with pytest.raises(CompkitError, match="not sure how to read this folder"):
        open_dataset(root)


def test_label_index_masks_are_proposed_with_values(tmp_path):
    root = tmp_path / "d"
    for k in range(3):
        labels = np.zeros((24, 24), np.uint8)
        labels[2:10, 2:10], labels[12:20, 12:20] = 1, 2
        write(root / "images" / f"s{k}.png", photo(seeded(1, k), labels > 0))
        write(root / "masks" / f"s{k}.png", labels)
    [reading] = infer_readings(root)
    assert reading.spec["label"] == "../masks/{stem}.png" and reading.spec["values"] == {
        0: "background",
        1: "class_1",
        2: "class_2",
    }
    assert not reading.confident


def test_kaggle_csv_with_patient_prefix(tmp_path):
    root = kaggle_long(tmp_path / "comp")
    found = survey(root)
    assert found.format == "rlecsv" and found.sure
    assert found.proposal.spec == {
        "splits": {"train": "train/*.png", "test": "test/*.png"},
        "rle": {"file": "train.csv"},
        "patient": r"^([^_\-. ]+)",
    }
    train = open_dataset(root)
    assert train.rle_order == "F" and train.notes[-1].startswith("RLE order F: decoded column-major")
    assert {s.patient for s in train.samples} == {"case11", "case12", "case13"}
    assert open_dataset(root, "test").rle_order == "F", "the test split takes the order the training labels decided"


def test_class_names_from_templates():
    assert class_name("../1st_manual/{id}_manual1.gif") == "1st_manual"
    assert class_name("../{stem}_lesion/{stem}_lesion.bmp") == "lesion"
    assert class_name("../Hemohedge_Masks/{stem}.png") == "Hemohedge"
    assert class_name("../masks/{stem}.jpg") == "foreground"
    assert class_name("{stem}_segmentation.png") == "foreground"


def test_unreadable_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(CompkitError, match="check-data"):
        open_dataset(tmp_path)
    write_gif(tmp_path / "only_masks" / "a.gif", np.eye(8, dtype=np.uint8))
    assert infer_readings(tmp_path) == []
