"""compkit eda: fingerprint values on a hand-made dataset, and an HTML report with embedded plots."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from compkit.stages.eda import eda, hand_angle
from compkit.util.fileio import write_image
from tests.conftest import quiet, screenshot


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


@pytest.fixture
def handmade(tmp_path):
    """Two 20x20 images: finger-1 a 4x4 square (16 px) in both; Trapezium 3x3 (9 px) overlapping Pisiform 3x3 by 4 px
    in the first; the second image brighter."""
    root = tmp_path / "data"
    images = {"ID001/a.png": 40, "ID002/b.png": 80}
    labels = {
        "ID001/a.png": [
            ("finger-1", square(1, 1, 4, 4)),
            ("Trapezium", square(10, 10, 12, 12)),
            ("Pisiform", square(11, 11, 13, 13)),
        ],
        "ID002/b.png": [("finger-1", square(5, 5, 8, 8)), ("finger-1", square(14, 14, 17, 17))],
    }
    for image_id, value in images.items():
        write_image(root / "train" / "DCM" / image_id, np.full((20, 20, 3), value, np.uint8))
        annotations = [
            {"id": str(i), "type": "poly_seg", "attributes": {}, "points": p, "label": label}
            for i, (label, p) in enumerate(labels[image_id])
        ]
        path = root / "train" / "outputs_json" / image_id.replace(".png", ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"annotations": annotations}))
    (root / "meta_data.csv").write_text("ID,age,sex\n1,30,M\n2,50,F\n")
    return root


def test_fingerprint_values(handmade, tmp_path):
    page = eda(handmade, tmp_path / "report", console=quiet())
    fp = json.loads((tmp_path / "report" / "fingerprint.json").read_text())
    assert fp["images"] == 2 and fp["image_sizes"] == {"20x20": 2}
    finger = fp["per_class"]["finger-1"]
    assert finger["frequency"] == 1.0 and finger["area_mean"] == 24.0  # 16 px, then 16 + 16 = 32 px
    assert finger["components_mean"] == 1.5
    assert fp["per_class"]["Trapezium"] == {"frequency": 0.5, "area_mean": 9.0, "area_std": 0.0, "area_min": 9, "area_max": 9, "components_mean": 1.0,
        "width_median": 3.0, "width_p10": 3.0,
        "centroid_x_mean": 0.575, "centroid_x_std": 0.0, "centroid_y_mean": 0.575, "centroid_y_std": 0.0,
    }  # fmt: skip
    # finger-1's centre: pixel 2.5 of 20 in the first image, 11 (two squares) in the second; positions are pixel centres
    assert finger["centroid_x_mean"] == pytest.approx((3 / 20 + 11.5 / 20) / 2) and finger[
        "centroid_x_std"
    ] == pytest.approx((11.5 - 3) / 40)
    assert fp["grey_fraction"] == 1.0
    assert fp["per_class"]["Ulna"]["frequency"] == 0.0
    names = fp["classes"]
    overlap = np.array(fp["overlap_matrix"])
    i, j = names.index("Trapezium"), names.index("Pisiform")
    assert overlap[i, j] == overlap[j, i] == 4
    assert fp["top_overlaps"][0] == {"classes": ["Trapezium", "Pisiform"], "pixels": 4}
    labelled = 16 + (9 + 9 - 4) + 32
    assert fp["multilabel_pixel_fraction"] == pytest.approx(4 / labelled)
    assert fp["labelled_pixel_fraction"] == pytest.approx(labelled / 800)
    assert fp["intensity"]["image_mean_range"] == [40.0, 80.0]
    assert fp["meta"]["age"]["mean"] == 40.0 and fp["meta"]["sex"]["counts"] == {"male": 1, "female": 1}
    assert fp["recommendation"]["smallest_class"] in ("Trapezium", "Pisiform")
    html = page.read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) >= 6, "plots and gallery are embedded"
    assert "http://" not in html and "https://" not in html, "self-contained"


def test_hand_angle():
    mask = np.zeros((1, 40, 40), np.uint8)
    mask[0, 5:35, 18:22] = 1  # upright bar
    assert abs(hand_angle(mask)) < 1
    rotated = np.ascontiguousarray(np.rot90(mask, axes=(1, 2)))
    assert abs(abs(hand_angle(rotated)) - 90) < 1


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    """The report as a person sees it: headless Chromium's screenshot shows the plots (many colours, not a blank page)."""
    from compkit.stages.synth import synth

    synth(tmp_path / "data", patients=4, test_patients=0, size=128, console=quiet())
    page = eda(tmp_path / "data", tmp_path / "report", console=quiet())
    image = screenshot(page, tmp_path, 1280, 2400)
    colours = np.unique(image.reshape(-1, 3) // 16, axis=0)
    assert len(colours) > 40, "plots rendered"
    assert (image < 250).any(axis=2).mean() > 0.1, "not a blank page"


def test_a_field_of_view_dataset_reports_intensities_inside_it_and_draws_no_overlaps_for_one_class(tmp_path):
    from compkit.data import open_dataset
    from compkit.stages.check_data import check_data
    from tests.layouts import drive

    root = drive(tmp_path / "DRIVE")
    check_data(root, write=True, console=quiet())
    page = eda(root, tmp_path / "report", console=quiet())
    fp = json.loads((tmp_path / "report" / "fingerprint.json").read_text())
    dataset = open_dataset(root)
    inside = 0
    for sample in dataset.samples:
        shape = dataset.image_shape(sample)
        inside += int((~dataset.read_ignore(sample, shape).astype(bool).any(axis=0)).sum())
    assert sum(fp["intensity"]["histogram"]) == inside, "the black outside the field of view is left out"
    assert 0 < fp["intensity"]["field_of_view_fraction"] < 1
    html = page.read_text()
    assert len(fp["classes"]) == 1 and "class overlap" not in html and "largest overlaps" not in html
    assert "<th>size (w x h)</th><th>images</th></tr><tr><td>64x72</td><td>4</td>" in html
    assert f"</i>{fp['classes'][0]}</span>" in html, "the gallery's colours have a legend"
    assert "inside the field of view" in html
