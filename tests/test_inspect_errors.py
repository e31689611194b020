"""compkit inspect on a trained run: per-class dice, worst images drawn by error, confused classes."""
from __future__ import annotations

import json

import numpy as np

from compkit.inspect_errors import error_overlay, inspect
from tests.conftest import quiet


def test_error_colours():
    image = np.zeros((2, 2, 3), np.uint8)
    truth = np.array([[[1, 1], [0, 0]]], bool)
    pred = np.array([[[1, 0], [1, 0]]], bool)
    out = error_overlay(image, pred, truth)
    assert tuple(out[0, 1]) == (178, 154, 0)  # missed: yellow
    assert tuple(out[1, 0]) == (0, 140, 49)  # extra: green
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[1, 1]) == (0, 0, 0)


def test_inspect_a_run(trained_tiny_run, tmp_path):
    run = trained_tiny_run.run  # read-only: the reports go to tmp_path
    page = inspect(run, out=tmp_path / "report", console=quiet())
    report = json.loads((tmp_path / "report" / "inspect.json").read_text())
    assert report["images"] == 12 and len(report["per_class"]) == 29
    assert len(report["worst_images"]) == 12
    assert report["worst_images"][0]["dice"] <= report["worst_images"][-1]["dice"]
    assert page.read_text().count("data:image/png;base64,") == 12
    test_page = inspect(run, split="test", out=tmp_path / "test-report", console=quiet())
    assert json.loads((tmp_path / "test-report" / "inspect.json").read_text())["images"] == 4
    assert test_page.is_file()
