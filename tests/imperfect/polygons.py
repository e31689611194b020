"""Polygons running out of the frame (forearms in a hand X-ray, CVAT exports): clipped to the image as the
competition's fillPoly draws them (their visible part), and reported by ``check-data`` and ``eda``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from compkit.data import open_dataset
from compkit.data.cache import build_cache, resize_mask
from compkit.stages.check_data import check_data
from compkit.util.fileio import read_json
from tests.conftest import copy_dataset, quiet
from tests.imperfect import Case, Env

SIZE = 96  # the session's synthetic hand bones


def reference_fill(points, shape: tuple[int, int]) -> np.ndarray:
    """The competition's ground truth: cv2.fillPoly straight into the image, which clips to the canvas (its
    leaderboard masks are made so; a polygon running out is never refused)."""
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [np.asarray(points, np.int32)], 1)
    return canvas


def hand_bones(env: Env) -> Path:
    return copy_dataset(env.fixture("synth_data"), env.tmp / "data")


def set_polygon(data: Path, label: str, points, image: int = 0) -> tuple[str, int]:
    """Replace the points of the ``label`` polygon in the ``image``-th training label JSON; returns (image id, class)."""
    path = sorted((data / "train" / "outputs_json").rglob("*.json"))[image]
    content = json.loads(path.read_text(encoding="utf-8"))
    [annotation] = [a for a in content["annotations"] if a["label"] == label]
    annotation["points"] = [list(map(int, p)) for p in points]
    path.write_text(json.dumps(content), encoding="utf-8")
    dataset = open_dataset(data, "train")
    image_id = path.relative_to(data / "train" / "outputs_json").with_suffix(".png").as_posix()
    return image_id, dataset.classes.index(label)


def read_channel(data: Path, image_id: str, channel: int) -> np.ndarray:
    dataset = open_dataset(data, "train")
    return dataset.read_mask(dataset.sample(image_id))[channel]


def visible_part_is_read(label: str, points):
    """The mask read (and the one cached for training) is the polygon's visible part, pixel for pixel as
    the competition's fillPoly draws it."""

    def check(env: Env) -> None:
        data = hand_bones(env)
        image_id, channel = set_polygon(data, label, points)
        expected = reference_fill(points, (SIZE, SIZE))
        assert expected.any() and not expected.all()
        np.testing.assert_array_equal(read_channel(data, image_id, channel), expected)
        cache = build_cache(open_dataset(data, "train"), 64, cache_dir=env.tmp / "cache", console=quiet())
        np.testing.assert_array_equal(cache.mask(cache.position[image_id])[channel], resize_mask(expected[None], 64)[0])

    return check


def on_the_border(env: Env) -> None:
    data = hand_bones(env)
    image_id, channel = set_polygon(data, "Trapezium", [[0, 0], [SIZE - 1, 0], [SIZE - 1, SIZE - 1], [0, SIZE - 1]])
    assert read_channel(data, image_id, channel).all()
    assert (
        "Trapezium" not in check_data(data, console=quiet())["splits"]["train"]["clipped_polygons"]
    )  # inside: not clipped


def edited_out_of_frame(env: Env) -> Path:
    """Hand bones whose first image's Radius runs 13 px (13.5 %) and second image's Ulna 5 px out of the bottom."""
    data = hand_bones(env)
    set_polygon(data, "Radius", [[30, 70], [45, 70], [47, SIZE - 1 + 13], [28, SIZE - 1 + 11]], image=0)
    set_polygon(data, "Ulna", [[60, 80], [70, 80], [70, SIZE - 1 + 5], [60, SIZE - 1 + 5]], image=1)
    return data


CLIPPED = {
    "Radius": {
        "clipped": 1,
        "polygons": 12,
        "max_pixels": 13,
        "median_pixels": 13.0,
        "max_fraction": 13 / SIZE,
        "median_fraction": 13 / SIZE,
    },
    "Ulna": {
        "clipped": 1,
        "polygons": 12,
        "max_pixels": 5,
        "median_pixels": 5.0,
        "max_fraction": 5 / SIZE,
        "median_fraction": 5 / SIZE,
    },
}


def check_data_reports_clipping(env: Env) -> None:
    data = edited_out_of_frame(env)
    output = " ".join(env.cli("check-data", data).output.split())
    assert re.search(
        r"polygons clipped to the image .*Radius 1 of 12 \(up to 13 px, 13\.5%; median 13 px, 13\.5%\)", output
    ), output
    assert "Ulna 1 of 12 (up to 5 px, 5.2%" in output
    assert check_data(data, console=quiet())["splits"]["train"]["clipped_polygons"] == CLIPPED


def eda_reports_clipping(env: Env) -> None:
    data = edited_out_of_frame(env)
    output = " ".join(env.cli("eda", data, "--out", env.tmp / "eda", "--gallery", 0).output.split())
    assert "polygons clipped to the image: Radius 1 of 12 (up to 13 px" in output
    assert read_json(env.tmp / "eda" / "fingerprint.json")["clipped_polygons"] == CLIPPED
    assert "Ulna 1 of 12 (up to 5 px, 5.2%" in (env.tmp / "eda" / "eda.html").read_text(encoding="utf-8")


def coco_polygon_out_of_frame(env: Env) -> None:
    root = env.tmp / "coco"
    (root / "train").mkdir(parents=True)
    cv2.imwrite(str(root / "train" / "a.png"), np.full((40, 50, 3), 90, np.uint8))
    points = [[30, 5], [70, 10], [60, 30], [35, 25]]  # 20 px past the right edge of a 50 px wide image
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}],
                "categories": [{"id": 1, "name": "lesion"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [sum(points, [])]}],
            }
        )
    )
    dataset = open_dataset(root, "train")
    assert dataset.format_name == "coco"
    np.testing.assert_array_equal(dataset.read_mask(dataset.samples[0])[0], reference_fill(points, (40, 50)))


CASES = [
    Case(
        "polygon-14pct-below-the-bottom",
        visible_part_is_read("Radius", [[30, 60], [45, 60], [47, SIZE - 1 + 13], [28, SIZE - 1 + 12]]),
    ),
    Case("polygon-left-of-the-left-edge", visible_part_is_read("Ulna", [[-20, 40], [10, 40], [10, 60], [-20, 60]])),
    Case("polygon-through-a-corner", visible_part_is_read("Pisiform", [[-30, -30], [40, -10], [-10, 40]])),
    Case("polygon-exactly-on-the-border", on_the_border),
    Case("check-data-reports-clipped-polygons", check_data_reports_clipping),
    Case("eda-reports-clipped-polygons", eda_reports_clipping),
    Case("coco-polygon-past-the-right-edge", coco_polygon_out_of_frame),
]
