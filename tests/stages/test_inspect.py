"""compkit inspect on a trained run: per-class dice, worst images drawn by error, confused classes."""

from __future__ import annotations

import json

import numpy as np

from compkit.stages.inspect import Confusions, error_overlay, inspect
from tests.conftest import quiet, screenshot


def test_error_colours_per_class_missed_and_extra_both_show():
    image = np.zeros((8, 8, 3), np.uint8)
    truth = np.zeros((8, 8), bool)
    truth[1:7, 1:4] = True
    pred = np.zeros((8, 8), bool)
    pred[1:7, 3:7] = True
    out = error_overlay(image, pred, truth)
    assert tuple(out[3, 2]) == (165, 143, 0)  # missed, inside the truth: yellow
    assert tuple(out[3, 5]) == (149, 0, 130)  # extra: magenta
    assert tuple(out[1, 3]) == (0, 230, 255)  # the truth's outline where it was found: cyan
    assert tuple(out[3, 1]) == (165, 143, 0)  # missed on the outline stays yellow
    assert tuple(out[0, 0]) == (0, 0, 0)


def test_confusions_count_missed_pixels_where_another_class_was_predicted():
    classes = ["bone", "joint", "soft"]
    truth = np.zeros((3, 20, 20), bool)
    pred = np.zeros((3, 20, 20), bool)
    truth[0, 0:10, 0:10] = True  # bone: 100 px, of which the right 40 are predicted as joint
    pred[0, 0:10, 0:6] = True
    pred[1, 0:10, 6:10] = True
    truth[0, 10:12, 10:15] = True  # 10 bone px missed with nothing predicted there: not a confusion
    truth[2, 12:20, 0:20] = True  # soft: 160 px, 4 of them predicted as bone (2.5 %, under the 5 % shown)
    pred[2, 12:20, 0:20] = True
    pred[2, 12, 0:4] = False
    pred[0, 12, 0:4] = True
    confusions = Confusions(classes)
    confusions.update(pred, truth)
    assert confusions.pairs() == [(40 / 110, 40, "bone", "joint")]
    # A second image with bone found everywhere: the same 40 px are now a share of 220 px of bone.
    second = np.zeros((3, 20, 20), bool)
    second[0, 0:11, 0:10] = True
    confusions.update(second, second)
    assert confusions.pairs() == [(40 / 220, 40, "bone", "joint")]
    assert confusions.pixels[2, 0] == 4 and confusions.areas.tolist() == [220, 0, 160]


def test_inspect_a_run(trained_tiny_run, tmp_path):
    run = trained_tiny_run.run  # read-only: the reports go to tmp_path
    page = inspect(run, out=tmp_path / "report", console=quiet())
    report = json.loads((tmp_path / "report" / "inspect.json").read_text())
    assert report["images"] == 12 and len(report["per_class"]) == 29
    assert len(report["worst_images"]) == 12
    assert report["worst_images"][0]["dice"] <= report["worst_images"][-1]["dice"]
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 12 and len(report["worst_classes"]) == 12
    worst = report["worst_classes"]
    assert [w["dice"] for w in worst] == sorted(w["dice"] for w in worst)
    assert f"{worst[0]['class']} in {worst[0]['image']}: dice {worst[0]['dice']:.3f}" in html
    # The bar chart lists every class, worst first.
    order = sorted(report["per_class"], key=report["per_class"].get)
    positions = [html.index(f'<span class="label">{c}</span>') for c in order]
    assert positions == sorted(positions)
    assert all(set(c) == {"missed", "predicted_instead", "pixels", "share_of_class"} for c in report["confusions"])
    test_page = inspect(run, split="test", out=tmp_path / "test-report", console=quiet())
    test_report = json.loads((tmp_path / "test-report" / "inspect.json").read_text())
    assert (
        test_report["images"] == 4
        and "compkit score measures the submission at full image size" in test_report["measured"]
    )
    assert test_page.is_file()


def test_inspect_page_shows_missed_and_extra_of_the_worst_classes_in_headless_chromium(trained_tiny_run, tmp_path):
    """As a person sees it: the legend's four colours and tiles where both missed (yellow) and extra (magenta) show."""
    page = inspect(trained_tiny_run.run, out=tmp_path / "report", console=quiet())
    bgr = screenshot(page, tmp_path, 1280, 1400)
    rgb = bgr[..., ::-1].astype(int)

    # Blended over the dark X-ray, missed and extra keep their hue: yellow (R and G high, B low) and magenta (R and B
    # high, G low); on a one-overlay page the extra pixels hid the missed ones.
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    yellowish = int(((r > 120) & (g > 100) & (b < 60) & (np.abs(r - g) < 70)).sum())
    magentaish = int(((r > 100) & (b > 90) & (g < 60)).sum())
    assert yellowish > 400, "missed pixels visible"  # more than the legend's swatch
    assert magentaish > 400, "extra pixels visible"
