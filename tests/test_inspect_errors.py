"""compkit inspect on a trained run: per-class dice, worst images drawn by error, confused classes."""
from __future__ import annotations

import json

import numpy as np

from compkit.inspect_errors import error_overlay, inspect
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
    assert f'{worst[0]["class"]} in {worst[0]["image"]}: dice {worst[0]["dice"]:.3f}' in html
    # The bar chart lists every class, worst first.
    order = sorted(report["per_class"], key=report["per_class"].get)
    positions = [html.index(f'<span class="label">{c}</span>') for c in order]
    assert positions == sorted(positions)
    assert all(c["share_of_class"] >= 0.05 for c in report["confusions"])
    test_page = inspect(run, split="test", out=tmp_path / "test-report", console=quiet())
    test_report = json.loads((tmp_path / "test-report" / "inspect.json").read_text())
    assert test_report["images"] == 4 and "compkit score measures the submission at full image size" in test_report["measured"]
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
