"""The bad-input catalogue: hostile or broken inputs for every subcommand, each built here, each answered with
exactly one line ``error: <file or option>: <problem>`` on stderr, exit code 2, no traceback, and nothing new or
changed where the next stage would read it. Security payloads must not run; a few inputs that still have one
right reading are warnings instead (listed at the end).

Categories: command line (options out of range, wrong types, unknown commands), datasets (images, label JSONs,
polygons, meta), splits (shape, stale, leakage), recipes, checkpoints, probability stores and ensemble artifacts,
submissions (CSV, RLE), combinations (augment, pseudo, inspect), security (pickles, model yamls) and full disks.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from compkit.cli import app
from compkit.stages.ensemble import ensemble
from compkit.stages.submit import submit
from tests.conftest import FAST, quiet

runner = CliRunner()
SKIP_IN_SNAPSHOT = (".compkit-cache",)


@dataclass
class World:
    data: Path  # a split, trained-on synthetic dataset (shared: never modified)
    run: Path  # runs/tiny (2 folds, oof/ and test/ stores)
    ensemble: Path  # a soft ensemble of the run (thresholds and postprocessing tuned)
    submission: Path  # its submission CSV
    fundus: Path  # a fundus dataset (6 classes)
    tmp: Path  # this case's own folder (the working directory)

    def link_copy(self, source: Path, name: str, with_ground_truth: bool = True) -> Path:
        """A private copy made of hard links: cheap; replace a file (unlink, then write) to change it."""
        target = self.tmp / name
        shutil.copytree(source, target, copy_function=os.link)
        gt = source.with_name(source.name + "_gt")
        if with_ground_truth and gt.is_dir() and not target.with_name(target.name + "_gt").exists():
            shutil.copytree(gt, target.with_name(target.name + "_gt"), copy_function=os.link)
        return target

    def dataset(self) -> Path:
        return self.link_copy(self.data, "data")

    def run_copy(self) -> Path:
        return self.link_copy(self.run, "run")

    def ensemble_copy(self) -> Path:
        return self.link_copy(self.ensemble, "ens")


def replace(path: Path, content: bytes | str) -> None:
    """Write a file of a hard-linked copy without touching the shared original."""
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def edit_json(path: Path, change: Callable) -> None:
    """Change a JSON file in place (``change`` mutates the loaded data)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    replace(path, json.dumps(data))


def renamed(path: Path, name: str) -> Path:
    """``path``'s parent, after renaming ``path`` to ``name``."""
    path.rename(path.with_name(name))
    return path.parent


def first_label(data: Path) -> Path:
    return sorted((data / "train" / "outputs_json").rglob("*.json"))[0]


def set_points(data: Path, points) -> Path:
    label = first_label(data)
    edit_json(label, lambda d: d["annotations"][3].__setitem__("points", points))
    return label


def without(root: Path, pattern: str) -> Path:
    """``root`` with the files or folders matching ``pattern`` removed."""
    for path in root.glob(pattern):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return root


def first_store_file(store: Path) -> Path:
    return sorted(store.glob("*.npy"))[0]


class Payload:
    """Unpickling this creates ``marker``: the test fails if it ever appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickle_payload(path: Path, marker: Path) -> None:
    replace(path, pickle.dumps({"model": Payload(marker)}))


# ---------------------------------------------------------------------------------------------------------------
# The cases: (id, build(world) -> command-line arguments, fragments the one error line must contain).


def c(case_id: str, build: Callable[[World], list], *fragments: str):
    return pytest.param(build, fragments, id=case_id)


def yolo_recipe(w: World, extra: str = "") -> Path:
    recipe = w.tmp / "yolo.yaml"
    recipe.write_text(
        f"extends: yolov8-seg\ndata: {{image_size: 64}}\nmodel: {{encoder_weights: null}}\ntrain: {{epochs: 1, batch_size: 2, workers: 0}}\n{extra}"
    )
    return recipe


def stale_split(w: World) -> Path:
    data = w.dataset()
    extra = data / "train" / "DCM" / "ID999" / "image1.png"
    extra.parent.mkdir(parents=True)
    shutil.copyfile(next((data / "train" / "DCM").rglob("*.png")), extra)
    label = data / "train" / "outputs_json" / "ID999" / "image1.json"
    label.parent.mkdir(parents=True)
    shutil.copyfile(first_label(data), label)
    return data


def resplit(w: World) -> Path:
    """The dataset with a different split than the run was trained on (split --exist-ok --seed 5)."""
    data = w.dataset()
    (data / "splits.json").unlink()
    runner.invoke(app, ["split", str(data), "--folds", "2", "--seed", "5"])
    return data


def run_on(w: World, data: Path) -> Path:
    """A copy of the run whose recipes point at ``data``."""
    run = w.run_copy()
    for recipe in run.glob("fold*/recipe.yaml"):
        text = recipe.read_text().replace(str(w.data), str(data))
        replace(recipe, text)
    return run


def checkpoint_of(run: Path) -> Path:
    return run / "fold0" / "best.pt"


def other_model_checkpoint(w: World) -> Path:
    run = w.run_copy()
    state = {"model": {"conv.weight": torch.zeros(3, 3, 3, 3)}, "family": "smp"}
    path = checkpoint_of(run)
    path.unlink()
    torch.save(state, path)
    return run


def ensemble_member_with(w: World, file: str, content) -> Path:
    ens = w.ensemble_copy()
    replace(ens / file, json.dumps(content) if not isinstance(content, (str, bytes)) else content)
    return ens


SYNTH = [
    c("synth-size-too-small", lambda w: ["synth", w.tmp / "d", "--size", 10], "--size 10 is too small"),
    c("synth-no-patients", lambda w: ["synth", w.tmp / "d", "--patients", 0], "--patients must be at least 1"),
    c(
        "synth-negative-test-patients",
        lambda w: ["synth", w.tmp / "d", "--test-patients", -1],
        "--test-patients at least 0",
    ),
    c(
        "synth-unknown-kind",
        lambda w: ["synth", w.tmp / "d", "--kind", "mri"],
        "Invalid value for '--kind': 'mri' is not one of 'handbone', 'fundus', 'isic'",
    ),
    c("synth-existing-folder", lambda w: ["synth", w.dataset()], "already exists and is not empty"),
    c(
        "synth-under-a-file",
        lambda w: (w.tmp / "f").write_text("x") and ["synth", w.tmp / "f" / "d", "--size", 64],
        "cannot write",
    ),
    c("synth-size-not-a-number", lambda w: ["synth", w.tmp / "d", "--size", "big"], "--size"),
]

SPLIT = [
    c("split-one-fold", lambda w: ["split", w.dataset(), "--folds", 1, "--exist-ok"], "--folds", "at least 2"),
    c(
        "split-more-folds-than-patients",
        lambda w: ["split", w.dataset(), "--folds", 20, "--exist-ok"],
        "patients cannot fill 20 folds",
    ),
    c(
        "split-unknown-stratify-column",
        lambda w: ["split", w.dataset(), "--stratify", "shoe_size", "--exist-ok"],
        "no meta column 'shoe_size'",
    ),
    c("split-missing-folder", lambda w: ["split", w.tmp / "nowhere"], "nowhere", "dataset folder not found"),
    c("split-not-a-dataset", lambda w: (w.tmp / "empty").mkdir() or ["split", w.tmp / "empty"], "not a dataset layout"),
    c("split-other-settings", lambda w: ["split", w.dataset(), "--folds", 3], "splits.json", "pass --exist-ok"),
    c(
        "split-label-not-json",
        lambda w: replace(first_label(d := w.dataset()), "{not json") or ["split", d, "--exist-ok"],
        ".json",
        "not valid JSON",
    ),
    c(
        "split-label-not-an-object",
        lambda w: replace(first_label(d := w.dataset()), "[1, 2]") or ["split", d, "--exist-ok"],
        "no 'annotations' list",
    ),
    c(
        "split-unknown-label",
        lambda w: (
            edit_json(first_label(d := w.dataset()), lambda j: j["annotations"][0].__setitem__("label", "finger-99"))
            or ["split", d, "--exist-ok"]
        ),
        "unknown label 'finger-99'",
    ),
    c(
        "split-two-point-polygon",
        lambda w: set_points(d := w.dataset(), [[1, 1], [5, 5]]) and ["split", d, "--exist-ok"],
        "needs at least 3",
    ),
    c(
        "split-points-not-pairs",
        lambda w: set_points(d := w.dataset(), [[1, 1, 1], [5, 5, 5], [3, 3, 3]]) and ["split", d, "--exist-ok"],
        "not [x, y] pairs",
    ),
    c(
        "split-nan-point",
        lambda w: set_points(d := w.dataset(), [[float("nan"), 1], [5, 5], [3, 9]]) and ["split", d, "--exist-ok"],
        "annotation 3",
        "not finite",
    ),
    c(
        "split-huge-point",
        lambda w: set_points(d := w.dataset(), [[1e30, 1], [5, 5], [3, 9]]) and ["split", d, "--exist-ok"],
        "annotation 3",
        "pixels out",
    ),
    c(
        "split-image-without-label",
        lambda w: first_label(d := w.dataset()).unlink() or ["split", d, "--exist-ok"],
        "image has no label JSON",
    ),
    c(
        "split-no-images",
        lambda w: ["split", without(w.dataset(), "train/DCM/*/*.png"), "--exist-ok"],
        "no images found",
    ),
    # splits.json read by the stages is consistent: no fold trains on its own validation images, each validates once.
    c(
        "splits-image-in-two-val-folds",
        lambda w: train_args(w, data=in_two_val_folds(w.dataset())),
        "splits.json",
        "1 images are in the validation lists of several folds",
        "in folds 0 and 1",
    ),
    c(
        "splits-image-in-train-and-val",
        lambda w: (
            edit_json(
                (d := w.dataset()) / "splits.json", lambda s: s["folds"][0]["train"].append(s["folds"][0]["val"][0])
            )
            or train_args(w, data=d)
        ),
        "splits.json",
        "in both train and val of one fold",
        "in fold 0",
    ),
    c(
        "splits-image-in-no-val-fold",
        lambda w: (
            edit_json(
                (d := w.dataset()) / "splits.json", lambda s: s["folds"][1]["train"].append(s["folds"][0]["val"].pop(0))
            )
            or train_args(w, data=d)
        ),
        "splits.json",
        "in no fold's validation list",
    ),
]


def in_two_val_folds(data: Path) -> Path:
    """Fold 0's first validation image moved from fold 1's train list to its val list: it validates twice."""

    def move(splits):
        image = splits["folds"][0]["val"][0]
        splits["folds"][1]["train"].remove(image)
        splits["folds"][1]["val"].append(image)

    edit_json(data / "splits.json", move)
    return data


EDA = [
    c(
        "eda-negative-gallery",
        lambda w: ["eda", w.data, "--out", w.tmp / "r", "--gallery", -5],
        "--gallery",
        "0 or more",
    ),
    # Polygons partly outside are clipped; one with no part inside, or reaching further out than the image's own size
    # (a coordinate-system error), is refused.
    c(
        "eda-polygon-outside-image",
        lambda w: set_points(d := w.dataset(), [[100, 10], [150, 10], [150, 50]]) and ["eda", d, "--out", w.tmp / "r"],
        "annotation 3",
        "has no part inside the 96x96 image",
    ),
    c(
        "eda-polygon-around-everything",
        lambda w: (
            set_points(d := w.dataset(), [[-5000, -5000], [5000, -5000], [5000, 5000]])
            and ["eda", d, "--out", w.tmp / "r"]
        ),
        "annotation 3",
        "further out than the 96x96 image's own size",
    ),
    c(
        "eda-polygon-beyond-image-size",
        lambda w: set_points(d := w.dataset(), [[10, 10], [40, 10], [40, 200]]) and ["eda", d, "--out", w.tmp / "r"],
        "point (40, 200)",
        "further out than the 96x96 image's own size",
    ),
    c(
        "eda-corrupt-png",
        lambda w: (
            replace(next((d := w.dataset()).glob("train/DCM/*/*.png")), b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
            or ["eda", d, "--out", w.tmp / "r"]
        ),
        ".png",
        "unreadable image",
    ),
    c(
        "eda-empty-png",
        lambda w: replace(next((d := w.dataset()).glob("train/DCM/*/*.png")), b"") or ["eda", d, "--out", w.tmp / "r"],
        ".png",
        "unreadable image",
    ),
    c(
        "eda-out-under-a-file",
        lambda w: (w.tmp / "f").write_text("x") and ["eda", w.data, "--out", w.tmp / "f" / "r"],
        "cannot write",
    ),
]


def recipe_file(w: World, text: str | bytes) -> Path:
    path = w.tmp / "mine.yaml"
    replace(path, text)
    return path


def train_args(w: World, *extra, data: Path | None = None, recipe: str | Path = "tiny") -> list:
    fast = FAST if str(recipe) == "tiny" else []  # the yolo recipe file sets its own small sizes
    return [
        "train",
        "--recipe",
        recipe,
        "--data",
        data or w.dataset(),
        "--runs-dir",
        w.tmp / "runs",
        *[a for o in fast for a in ("--set", o)],
        *extra,
    ]


TRAIN = [
    c("train-missing-recipe", lambda w: train_args(w, recipe="tinyy"), "no such recipe", "did you mean 'tiny'"),
    c(
        "train-recipe-not-utf8",
        lambda w: train_args(w, recipe=recipe_file(w, b"name: \xff\xfe\n")),
        "mine.yaml",
        "not a text file in UTF-8",
    ),
    c(
        "train-recipe-bad-yaml",
        lambda w: train_args(w, recipe=recipe_file(w, "data: [unclosed\n")),
        "mine.yaml",
        "not valid YAML",
    ),
    c("train-recipe-not-a-mapping", lambda w: train_args(w, recipe=recipe_file(w, "- a\n- b\n")), "must be a mapping"),
    c(
        "train-recipe-unknown-key",
        lambda w: train_args(w, recipe=recipe_file(w, "extends: tiny\ntrain: {epoch: 3}\n")),
        "train.epoch: unknown key",
        "did you mean 'epochs'",
    ),
    c(
        "train-recipe-extends-itself",
        lambda w: train_args(w, recipe=recipe_file(w, "extends: mine.yaml\n")),
        "extends itself",
    ),
    c("train-set-without-equals", lambda w: train_args(w, "--set", "train.epochs"), "--set", "not section.key=value"),
    c("train-set-negative-lr", lambda w: train_args(w, "--set", "optim.lr=-1"), "optim.lr"),
    c("train-set-unknown-optimizer", lambda w: train_args(w, "--set", "optim.name=adamm"), "unknown optimizer 'adamm'"),
    c("train-set-unknown-loss", lambda w: train_args(w, "--set", "loss={dicee: 1}"), "unknown loss term 'dicee'"),
    c("train-fold-out-of-range", lambda w: train_args(w, "--fold", 7), "splits.json", "fold 7 out of range"),
    c("train-fold-not-a-number", lambda w: train_args(w, "--fold", "two"), "--fold", "not a fold number"),
    c("train-devices-zero", lambda w: train_args(w, "--devices", 0), "--devices", "at least 1"),
    c(
        "train-no-splits",
        lambda w: (d := w.dataset()).joinpath("splits.json").unlink() or train_args(w, data=d),
        "splits.json",
        "compkit split",
    ),
    c(
        "train-splits-wrong-shape",
        lambda w: replace((d := w.dataset()) / "splits.json", '{"folds": {"0": []}}') or train_args(w, data=d),
        "splits.json",
        "no 'folds' list",
    ),
    c(
        "train-splits-fold-without-val",
        lambda w: (
            edit_json((d := w.dataset()) / "splits.json", lambda s: s["folds"][0].pop("val")) or train_args(w, data=d)
        ),
        "fold 0 is not",
    ),
    c(
        "train-splits-not-json",
        lambda w: replace((d := w.dataset()) / "splits.json", "folds") or train_args(w, data=d),
        "splits.json",
        "not valid JSON",
    ),
    c(
        "train-stale-splits",
        lambda w: train_args(w, data=stale_split(w)),
        "splits.json",
        "in no fold",
        "split --exist-ok",
    ),
    c(
        "train-splits-name-missing-images",
        lambda w: train_args(w, data=without(w.dataset(), "train/*/ID001/*")),
        "splits.json",
        "lacks",
    ),
    c(
        "train-unknown-encoder",
        lambda w: train_args(w, "--set", "model.encoder=tu-resnet9999"),
        "model.encoder",
        "unknown timm encoder",
    ),
    c(
        "train-unknown-arch",
        lambda w: train_args(w, "--set", "model.arch=Unett"),
        "model.arch",
        "unknown architecture 'Unett'",
    ),
    c(
        "train-unknown-family",
        lambda w: train_args(w, "--set", "model.family=keras"),
        "model.family",
        "unknown family 'keras'",
    ),
    c(
        "train-unknown-transform",
        lambda w: train_args(w, "--set", "aug=[{name: Rotat}]"),
        "aug",
        "unknown albumentations transform",
    ),
    c("train-transform-bad-params", lambda w: train_args(w, "--set", "aug=[{name: Rotate, limt: 5}]"), "aug", "Rotate"),
    c(
        "train-missing-encoder-weights",
        lambda w: train_args(w, "--set", "model.encoder_weights=/no/such.pth"),
        "/no/such.pth",
        "not found",
    ),
    c(
        "train-empty-encoder-weights",
        lambda w: (
            (w.tmp / "e.pth").write_bytes(b"")
            or train_args(w, "--set", "model.encoder=resnet18", "--set", f"model.encoder_weights={w.tmp / 'e.pth'}")
        ),
        "e.pth",
        "cannot load encoder weights",
    ),
    c(
        "train-runs-dir-under-a-file",
        lambda w: (
            (w.tmp / "f").write_text("x")
            and [
                "train",
                "--recipe",
                "tiny",
                "--data",
                w.dataset(),
                "--runs-dir",
                w.tmp / "f" / "runs",
                *[a for o in FAST for a in ("--set", o)],
            ]
        ),
        "cannot write",
    ),
    c(
        "train-pseudo-folder-missing",
        lambda w: train_args(w, "--set", f"data.pseudo={w.tmp / 'nope'}"),
        "nope",
        "dataset folder not found",
    ),
    c("train-no-dataset", lambda w: ["train", "--recipe", "tiny"], "no dataset", "--data"),
    c(
        "train-yolo-lion",
        lambda w: train_args(w, "--set", "optim.name=lion", recipe=yolo_recipe(w)),
        "optim.name",
        "cannot honour",
    ),
    c(
        "train-yolo-window",
        lambda w: train_args(w, "--set", "infer.window=64", recipe=yolo_recipe(w)),
        "infer.window",
        "whole images",
    ),
    c("train-yolo-loss", lambda w: train_args(w, "--set", "loss={focal: 1}", recipe=yolo_recipe(w)), "loss", "own box"),
]

PREDICT = [
    c("predict-missing-run", lambda w: ["predict", w.tmp / "runs" / "nope"], "not a run or fold folder"),
    c("predict-not-a-run", lambda w: ["predict", w.dataset()], "not a run or fold folder"),
    c(
        "predict-fold-folder-misnamed",
        lambda w: ["predict", renamed(w.run_copy() / "fold0", "fold_a")],
        "fold_a",
        "named fold<k>",
    ),
    c(
        "predict-empty-checkpoint",
        lambda w: replace(checkpoint_of(r := w.run_copy()), b"") or ["predict", r / "fold0", "--exist-ok"],
        "best.pt",
        "unreadable checkpoint",
    ),
    c(
        "predict-truncated-checkpoint",
        lambda w: (
            replace(checkpoint_of(r := w.run_copy()), checkpoint_of(w.run).read_bytes()[:5000])
            or ["predict", r / "fold0", "--exist-ok"]
        ),
        "best.pt",
        "unreadable checkpoint",
    ),
    c(
        "predict-checkpoint-not-a-dict",
        lambda w: (
            (checkpoint_of(r := w.run_copy()).unlink(), torch.save([1, 2], checkpoint_of(r)))
            and ["predict", r / "fold0", "--exist-ok"]
        ),
        "best.pt",
        "no 'model'",
    ),
    c(
        "predict-checkpoint-without-model",
        lambda w: (
            (checkpoint_of(r := w.run_copy()).unlink(), torch.save({"epoch": 1}, checkpoint_of(r)))
            and ["predict", r / "fold0", "--exist-ok"]
        ),
        "best.pt",
        "no 'model'",
    ),
    c(
        "predict-checkpoint-of-another-model",
        lambda w: ["predict", other_model_checkpoint(w) / "fold0", "--exist-ok"],
        "model",
        "does not fit",
    ),
    c(
        "predict-checkpoint-of-another-family",
        lambda w: (
            (
                checkpoint_of(r := w.run_copy()).unlink(),
                torch.save({"model": {}, "family": "ultralytics"}, checkpoint_of(r)),
            )
            and ["predict", r / "fold0", "--exist-ok"]
        ),
        "best.pt",
        "'ultralytics' family",
    ),
    c(
        "predict-dataset-with-other-classes",
        lambda w: ["predict", w.run_copy() / "fold0", "--data", w.fundus, "--exist-ok"],
        "29 classes in the checkpoint, 6 in the dataset",
    ),
    c("predict-batch-zero", lambda w: ["predict", w.run_copy(), "--batch", 0], "--batch", "at least 1"),
    c("predict-batch-negative", lambda w: ["predict", w.run_copy(), "--batch", -1], "--batch", "at least 1"),
    c("predict-batch-not-a-number", lambda w: ["predict", w.run_copy(), "--batch", "many"], "--batch"),
    c(
        "predict-overlap-too-large",
        lambda w: ["predict", w.run_copy(), "--window", 32, "--overlap", 1.5],
        "--overlap",
        "below 1",
    ),
    c("predict-overlap-negative", lambda w: ["predict", w.run_copy(), "--overlap", -0.1], "--overlap"),
    c("predict-window-too-small", lambda w: ["predict", w.run_copy(), "--window", 8], "--window", "at least 32"),
    c(
        "predict-unknown-tta",
        lambda w: ["predict", w.run_copy(), "--tta", "d8"],
        "--tta",
        "'d8' is not one of 'none', 'hflip', 'vflip', 'd4', 'scales'",
    ),
    c(
        "predict-unknown-split",
        lambda w: ["predict", w.run_copy(), "--split", "train"],
        "--split",
        "'train' is not one of 'test', 'val'",
    ),
    c("predict-unknown-device", lambda w: ["predict", w.run_copy(), "--device", "tpu"], "--device", "unknown device"),
    c("predict-cuda-without-gpu", lambda w: ["predict", w.run_copy(), "--device", "cuda"], "--device", "not available")
    if not torch.cuda.is_available()
    else c("predict-cuda-without-gpu", lambda w: ["predict", "--tta", "x"], "--tta"),
    c(
        "predict-val-after-resplit",
        lambda w: ["predict", run_on(w, resplit(w)), "--split", "val"],
        "fold0",
        "another split",
        "not out-of-fold",
    ),
    c(
        "predict-val-stale-splits",
        lambda w: ["predict", run_on(w, stale_split(w)), "--split", "val"],
        "splits.json",
        "in no fold",
    ),
    c(
        "predict-fold-beyond-splits",
        lambda w: ["predict", renamed(w.run_copy() / "fold1", "fold7") / "fold7", "--split", "val"],
        "fold7",
        "not in",
    ),
    c(
        "predict-recipe-broken",
        lambda w: replace((r := w.run_copy()) / "fold0" / "recipe.yaml", "model: [") or ["predict", r / "fold0"],
        "recipe.yaml",
        "not valid YAML",
    ),
]


def store_index(store: Path, change) -> None:
    edit_json(store / "index.json", change)


ENSEMBLE = [
    c(
        "ensemble-member-missing",
        lambda w: ["ensemble", w.tmp / "nope", "--out-dir", w.tmp / "ens"],
        "nope",
        "not found",
    ),
    c(
        "ensemble-weights-count",
        lambda w: ["ensemble", w.run, "--weights", "1,2", "--out-dir", w.tmp / "ens"],
        "--weights",
        "2 weights for 1 members",
    ),
    c(
        "ensemble-weights-not-numbers",
        lambda w: ["ensemble", w.run, "--weights", "a", "--out-dir", w.tmp / "ens"],
        "--weights",
    ),
    c(
        "ensemble-weights-negative",
        lambda w: ["ensemble", w.run, w.ensemble, "--weights", "1,-1", "--out-dir", w.tmp / "ens"],
        "--weights",
        "positive",
    ),
    c(
        "ensemble-hard-fractional-weights",
        lambda w: ["ensemble", w.run, w.ensemble, "--method", "hard", "--weights", "1.5,1", "--out-dir", w.tmp / "ens"],
        "--weights",
        "whole numbers",
    ),
    c(
        "ensemble-too-many-votes",
        lambda w: ["ensemble", w.run, w.ensemble, "--method", "hard", "--votes", 5, "--out-dir", w.tmp / "ens"],
        "--votes",
        "between 1 and 2",
    ),
    c(
        "ensemble-unknown-method",
        lambda w: ["ensemble", w.run, "--method", "median", "--out-dir", w.tmp / "ens"],
        "--method",
    ),
    c(
        "ensemble-csv-with-stores",
        lambda w: ["ensemble", w.run, w.submission, "--out-dir", w.tmp / "ens"],
        ".csv",
        "CSV members are hard-voted with other CSVs only",
    ),
    c(
        "ensemble-resolution-too-small",
        lambda w: ["ensemble", w.run, "--resolution", 4, "--out-dir", w.tmp / "ens"],
        "--resolution",
        "at least 8",
    ),
    c(
        "ensemble-store-index-not-json",
        lambda w: (
            replace((r := w.run_copy()) / "fold0" / "test" / "index.json", "{")
            or ["ensemble", r, "--out-dir", w.tmp / "ens"]
        ),
        "index.json",
        "not valid JSON",
    ),
    c(
        "ensemble-store-index-malformed",
        lambda w: (
            store_index((r := w.run_copy()) / "fold0" / "test", lambda i: i.pop("classes"))
            or ["ensemble", r, "--out-dir", w.tmp / "ens"]
        ),
        "index.json",
        "malformed store index",
    ),
    c(
        "ensemble-store-file-truncated",
        lambda w: (
            replace(first_store_file((r := w.run_copy()) / "fold0" / "test"), b"\x93NUMPY")
            or ["ensemble", r, "--out-dir", w.tmp / "ens"]
        ),
        ".npy",
        "truncated",
    ),
    c(
        "ensemble-store-file-wrong-shape",
        lambda w: (
            (
                replace(f := first_store_file((r := w.run_copy()) / "fold0" / "test"), b""),
                np.save(f, np.zeros((2, 3), np.uint8)),
            )
            and ["ensemble", r, "--out-dir", w.tmp / "ens"]
        ),
        ".npy",
        "shape",
    ),
    c(
        "ensemble-store-file-nan",
        lambda w: (
            (
                replace(f := first_store_file((r := w.run_copy()) / "fold0" / "test"), b""),
                np.save(f, np.full((29, 64, 64), np.nan, np.float16)),
                store_index(r / "fold0" / "test", lambda i: i.__setitem__("dtype", "float16")),
            )
            and ["ensemble", r, "--out-dir", w.tmp / "ens"]
        ),
        "NaN",
    ),
    c(
        "ensemble-store-file-pickled",
        lambda w: (
            (
                replace(f := first_store_file((r := w.run_copy()) / "fold0" / "test"), b""),
                np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True),
            )
            and ["ensemble", r, "--out-dir", w.tmp / "ens"]
        ),
        ".npy",
    ),
    c(
        "ensemble-folds-disagree",
        lambda w: (
            store_index((r := w.run_copy()) / "fold1" / "test", lambda i: i.__setitem__("classes", ["a"] * 29))
            or ["ensemble", r, "--out-dir", w.tmp / "ens"]
        ),
        "classes differ",
    ),
    c(
        "ensemble-members-classes-differ",
        lambda w: (
            store_index(s := w.link_copy(w.ensemble / "test", "store"), lambda i: i.__setitem__("classes", ["a"] * 29))
            or ["ensemble", w.run, s, "--out-dir", w.tmp / "ens"]
        ),
        "classes differ",
    ),
    c(
        "ensemble-members-file-not-json",
        lambda w: ["ensemble", ensemble_member_with(w, "members.json", "{"), "--out-dir", w.tmp / "ens"],
        "members.json",
        "not valid JSON",
    ),
    c(
        "ensemble-members-file-bad-kind",
        lambda w: ["ensemble", ensemble_member_with(w, "members.json", {"kind": "magic"}), "--out-dir", w.tmp / "ens"],
        "members.json",
        "not a compkit members file",
    ),
    c(
        "ensemble-members-file-bad-root",
        lambda w: [
            "ensemble",
            ensemble_member_with(w, "members.json", {"kind": "stores", "data_root": 3}),
            "--out-dir",
            w.tmp / "ens",
        ],
        "members.json",
        "'data_root' must be a str",
    ),
    c(
        "ensemble-thresholds-out-of-range",
        lambda w: ["ensemble", ensemble_member_with(w, "thresholds.json", {"Radius": 1.5}), "--out-dir", w.tmp / "ens"],
        "thresholds.json",
        "Radius",
        "between 0 and 1",
    ),
    c(
        "ensemble-oof-after-resplit",
        lambda w: ["ensemble", run_on(w, d := resplit(w)), "--data", d, "--out-dir", w.tmp / "ens"],
        "another split",
        "not out-of-fold",
    ),
    c("ensemble-no-members", lambda w: ["ensemble", "--out-dir", w.tmp / "ens"], "Missing argument"),
]

SUBMIT = [
    c("submit-no-ensemble", lambda w: ["submit", "--ensembles-dir", w.tmp / "none"], "no ensemble found"),
    c("submit-source-missing", lambda w: ["submit", w.tmp / "nope"], "nope", "not found"),
    c(
        "submit-threshold-above-one",
        lambda w: ["submit", ensemble_member_with(w, "thresholds.json", {"Radius": 2.0}), "--out", w.tmp / "s.csv"],
        "thresholds.json",
        "between 0 and 1",
    ),
    c(
        "submit-threshold-negative",
        lambda w: ["submit", ensemble_member_with(w, "thresholds.json", {"Radius": -0.1}), "--out", w.tmp / "s.csv"],
        "thresholds.json",
        "between 0 and 1",
    ),
    c(
        "submit-threshold-not-a-number",
        lambda w: ["submit", ensemble_member_with(w, "thresholds.json", {"Radius": "high"}), "--out", w.tmp / "s.csv"],
        "thresholds.json",
        "'high'",
    ),
    c(
        "submit-thresholds-not-json",
        lambda w: ["submit", ensemble_member_with(w, "thresholds.json", "{"), "--out", w.tmp / "s.csv"],
        "thresholds.json",
        "not valid JSON",
    ),
    c(
        "submit-thresholds-not-an-object",
        lambda w: ["submit", ensemble_member_with(w, "thresholds.json", [0.5]), "--out", w.tmp / "s.csv"],
        "thresholds.json",
        "must be an object",
    ),
    c(
        "submit-thresholds-unknown-class",
        lambda w: ["submit", ensemble_member_with(w, "thresholds.json", {"Radiuss": 0.5}), "--out", w.tmp / "s.csv"],
        "thresholds.json",
        "unknown class 'Radiuss'",
    ),
    c(
        "submit-postprocess-unknown-rule",
        lambda w: [
            "submit",
            ensemble_member_with(w, "postprocess.json", {"Radius": {"rule": "smooth"}}),
            "--out",
            w.tmp / "s.csv",
        ],
        "postprocess.json",
        "rule must be one of",
    ),
    c(
        "submit-postprocess-bad-area",
        lambda w: [
            "submit",
            ensemble_member_with(w, "postprocess.json", {"Radius": {"rule": "min_size", "min_area": 5}}),
            "--out",
            w.tmp / "s.csv",
        ],
        "postprocess.json",
        "min_area 5",
    ),
    c(
        "submit-postprocess-not-json",
        lambda w: ["submit", ensemble_member_with(w, "postprocess.json", "]"), "--out", w.tmp / "s.csv"],
        "postprocess.json",
        "not valid JSON",
    ),
    c(
        "submit-threshold-option-range",
        lambda w: ["submit", w.ensemble, "--threshold", 1.5, "--out", w.tmp / "s.csv"],
        "--threshold",
        "between 0 and 1",
    ),
    c(
        "submit-threshold-option-word",
        lambda w: ["submit", w.ensemble, "--threshold", "best", "--out", w.tmp / "s.csv"],
        "--threshold",
        "must be a number",
    ),
    c(
        "submit-store-lacks-images",
        lambda w: (
            store_index((e := w.ensemble_copy()) / "test", lambda i: i.__setitem__("images", i["images"][:1]))
            or ["submit", e, "--out", w.tmp / "s.csv"]
        ),
        "no probabilities for 3 test images",
    ),
    c(
        "submit-sample-other-rows",
        lambda w: (
            replace(w.tmp / "sample.csv", "image_name,class,rle\nx.png,Radius,\n")
            or ["submit", w.ensemble, "--sample", w.tmp / "sample.csv", "--out", w.tmp / "s.csv"]
        ),
        "sample.csv",
        "cannot match",
    ),
    c(
        "submit-out-under-a-file",
        lambda w: (w.tmp / "f").write_text("x") and ["submit", w.ensemble, "--out", w.tmp / "f" / "s.csv"],
        "cannot write",
    ),
    c(
        "submit-data-missing",
        lambda w: ["submit", w.ensemble, "--data", w.tmp / "nope", "--out", w.tmp / "s.csv"],
        "nope",
        "dataset folder not found",
    ),
]


def broken_submission(w: World, row: int, rle: str) -> Path:
    lines = w.submission.read_text().splitlines()
    name, cls, _ = lines[row].split(",")
    lines[row] = f"{name},{cls},{rle}"
    path = w.tmp / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


SCORE = [
    c("score-csv-missing", lambda w: ["score", w.tmp / "nope.csv", "--data", w.data], "nope.csv"),
    c(
        "score-wrong-header",
        lambda w: replace(w.tmp / "bad.csv", "id,cls,rle\n") or ["score", w.tmp / "bad.csv", "--data", w.data],
        "bad.csv",
        "header",
    ),
    c(
        "score-too-few-rows",
        lambda w: (
            replace(w.tmp / "bad.csv", "\n".join(w.submission.read_text().splitlines()[:10]) + "\n")
            or ["score", w.tmp / "bad.csv", "--data", w.data]
        ),
        "bad.csv",
    ),
    c(
        "score-odd-rle",
        lambda w: ["score", broken_submission(w, 3, "1 2 3"), "--data", w.data],
        "bad.csv",
        "odd number of values",
    ),
    c(
        "score-rle-not-integers",
        lambda w: ["score", broken_submission(w, 3, "1 x"), "--data", w.data],
        "bad.csv",
        "not an integer",
    ),
    c(
        "score-rle-too-large",
        lambda w: ["score", broken_submission(w, 3, "99999999999999999999999 5"), "--data", w.data],
        "bad.csv",
        "too large",
    ),
    c(
        "score-rle-past-the-end",
        lambda w: ["score", broken_submission(w, 3, "9200 100"), "--data", w.data],
        "bad.csv",
        "past the image",
    ),
    c(
        "score-rle-unsorted",
        lambda w: ["score", broken_submission(w, 3, "50 2 10 2"), "--data", w.data],
        "bad.csv",
        "unsorted",
    ),
    c(
        "score-rle-zero-start",
        lambda w: ["score", broken_submission(w, 3, "0 2"), "--data", w.data],
        "bad.csv",
        "not positive",
    ),
    c(
        "score-no-ground-truth",
        lambda w: ["score", w.submission, "--data", w.link_copy(w.data, "nogt", with_ground_truth=False)],
        "no ground truth",
        "--gt",
    ),
    c("score-unknown-split", lambda w: ["score", w.submission, "--data", w.data, "--split", "dev"], "dev"),
    c(
        "encode-labels-no-ground-truth",
        lambda w: ["encode-labels", w.link_copy(w.data, "nogt", with_ground_truth=False), "--out", w.tmp / "l.csv"],
        "no ground truth",
    ),
]

PSEUDO = [
    c(
        "pseudo-max-images-zero",
        lambda w: ["pseudo", w.ensemble, "--out", w.tmp / "p", "--max-images", 0],
        "--max-images",
        "at least 1",
    ),
    c(
        "pseudo-max-images-negative",
        lambda w: ["pseudo", w.ensemble, "--out", w.tmp / "p", "--max-images", -1],
        "--max-images",
        "at least 1",
    ),
    c(
        "pseudo-confidence-above-one",
        lambda w: ["pseudo", w.ensemble, "--out", w.tmp / "p", "--min-confidence", 2],
        "--min-confidence",
        "between 0 and 1",
    ),
    c("pseudo-from-a-csv", lambda w: ["pseudo", w.submission, "--out", w.tmp / "p"], ".csv", "needs probabilities"),
    c(
        "pseudo-store-lacks-images",
        lambda w: (
            store_index((e := w.ensemble_copy()) / "test", lambda i: i.__setitem__("images", i["images"][:1]))
            or ["pseudo", e, "--out", w.tmp / "p"]
        ),
        "no probabilities for 3 test images",
    ),
    c(
        "pseudo-out-exists",
        lambda w: (w.tmp / "p" / "x").mkdir(parents=True) or ["pseudo", w.ensemble, "--out", w.tmp / "p"],
        "already exists",
        "--exist-ok",
    ),
    c(
        "pseudo-nothing-confident",
        lambda w: ["pseudo", w.ensemble, "--out", w.tmp / "p", "--min-confidence", 1.0],
        "no test image reaches --min-confidence 1.0",
    ),
]


def augmented_copy(w: World) -> Path:
    result = runner.invoke(app, ["augment", str(w.data), "--out", str(w.tmp / "a1"), "--rotate", "5"])
    assert result.exit_code == 0, result.output
    return w.tmp / "a1"


AUGMENT = [
    c(
        "augment-negative-mosaics",
        lambda w: ["augment", w.data, "--out", w.tmp / "a", "--mosaic", -2],
        "--mosaic",
        "0 or more",
    ),
    c("augment-nothing-to-do", lambda w: ["augment", w.data, "--out", w.tmp / "a"], "nothing to do"),
    c(
        "augment-out-exists",
        lambda w: (w.tmp / "a" / "x").mkdir(parents=True) or ["augment", w.data, "--out", w.tmp / "a", "--flip"],
        "already exists",
    ),
    c(
        "augment-stale-splits",
        lambda w: ["augment", stale_split(w), "--out", w.tmp / "a", "--flip"],
        "splits.json",
        "in no fold",
    ),
    c(
        "augment-an-augmented-dataset",
        lambda w: ["augment", augmented_copy(w), "--out", w.tmp / "a2", "--flip"],
        "is itself augmented",
    ),
]

INSPECT = [
    c(
        "inspect-unknown-split",
        lambda w: ["inspect", w.run, "--split", "dev", "--out", w.tmp / "r"],
        "--split",
        "'dev' is not one of 'val', 'test'",
    ),
    c(
        "inspect-no-oof",
        lambda w: ["inspect", without(w.run_copy(), "fold*/oof"), "--out", w.tmp / "r"],
        "no out-of-fold stores",
    ),
    c(
        "inspect-oof-after-resplit",
        lambda w: ["inspect", run_on(w, d := resplit(w)), "--data", d, "--out", w.tmp / "r"],
        "another split",
    ),
    c(
        "inspect-test-without-ground-truth",
        lambda w: [
            "inspect",
            w.ensemble,
            "--split",
            "test",
            "--data",
            w.link_copy(w.data, "nogt", with_ground_truth=False),
            "--out",
            w.tmp / "r",
        ],
        "no ground truth",
    ),
    c("inspect-csv", lambda w: ["inspect", w.submission, "--out", w.tmp / "r"], "needs probabilities"),
]

COMMAND_LINE = [
    c("cli-unknown-command", lambda w: ["trian"], "No such command 'trian'"),
    c("cli-unknown-option", lambda w: ["split", w.data, "--fold", 3], "--fold"),
    c("cli-missing-argument", lambda w: ["predict"], "Missing argument"),
]


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    files = {}
    for root in roots:
        for path in root.rglob("*"):
            if any(part in SKIP_IN_SNAPSHOT for part in path.parts) or not path.is_file():
                continue
            stat = path.stat()
            files[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def shared(trained_tiny_run, fundus_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    ens = ensemble([trained_tiny_run.run], name="e", out=root / "ensembles", console=quiet())
    csv = submit(ens, out=root / "e.csv", console=quiet())
    return trained_tiny_run, ens, csv, fundus_data


@pytest.fixture
def world(shared, tmp_path, monkeypatch) -> World:
    trained, ens, csv, fundus = shared
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMPKIT_CONFIG_DIR", str(tmp_path.parent / "config"))
    return World(trained.data, trained.run, ens, csv, fundus, tmp_path)


def assert_one_line_error(result, fragments) -> None:
    assert result.exit_code == 2, f"exit code {result.exit_code}\n{result.output}\n{result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert str(fragment) in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert "Traceback" not in result.output


ALL = SYNTH + SPLIT + EDA + TRAIN + PREDICT + ENSEMBLE + SUBMIT + SCORE + PSEUDO + AUGMENT + INSPECT + COMMAND_LINE


@pytest.mark.parametrize("build, fragments", ALL)
def test_bad_input(build, fragments, world, shared):
    args = [str(a) for a in build(world)]
    watched = (world.tmp, world.data.parent, world.ensemble.parent)
    before = snapshot(*watched)
    result = runner.invoke(app, args)
    assert_one_line_error(result, fragments)
    after = snapshot(*watched)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))[:5]}"


def test_the_catalogue_is_large():
    assert len(ALL) >= 100


# --- security: nothing read from a user's file runs code -------------------------------------------------------


def test_a_pickled_checkpoint_does_not_run(world):
    run = world.run_copy()
    marker = world.tmp / "ran"
    pickle_payload(checkpoint_of(run), marker)
    result = runner.invoke(app, ["predict", str(run / "fold0"), "--exist-ok"])
    assert_one_line_error(result, ["best.pt", "unreadable checkpoint"])
    assert not marker.exists()


def test_pickled_encoder_weights_do_not_run(world):
    marker = world.tmp / "ran"
    weights = world.tmp / "evil.pth"
    pickle_payload(weights, marker)
    result = runner.invoke(
        app,
        [
            str(a)
            for a in train_args(world, "--set", "model.encoder=resnet18", "--set", f"model.encoder_weights={weights}")
        ],
    )
    assert_one_line_error(result, ["evil.pth", "cannot load encoder weights"])
    assert not marker.exists()


def test_pickled_yolo_weights_do_not_run(world):
    marker = world.tmp / "ran"
    weights = world.tmp / "evil.pt"
    pickle_payload(weights, marker)
    result = runner.invoke(
        app, [str(a) for a in train_args(world, "--set", f"model.encoder_weights={weights}", recipe=yolo_recipe(world))]
    )
    assert_one_line_error(result, ["evil.pt", "cannot load weights"])
    assert not marker.exists()


# --- full disks: one clear error, the previous artifact intact -----------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (root only, as in CI); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_while_writing_an_ensemble(world, small_disk):
    previous = small_disk / "ens" / "e"
    previous.mkdir(parents=True)
    (previous / "members.json").write_text("{}")
    (small_disk / "filler").write_bytes(b"\0" * 1_500_000)
    result = runner.invoke(
        app, ["ensemble", str(world.run), "--name", "e", "--exist-ok", "--out-dir", str(small_disk / "ens")]
    )
    assert_one_line_error(result, ["cannot write", "No space left"])
    assert sorted(p.name for p in previous.iterdir()) == ["members.json"], "the previous ensemble is intact"
    assert [p.name for p in (small_disk / "ens").iterdir()] == ["e"], "no staging folder left behind"


@pytest.mark.slow
def test_a_full_disk_while_saving_a_checkpoint(small_disk):
    from compkit.training.checkpoint import save_checkpoint
    from compkit.util.errors import CompkitError

    path = small_disk / "best.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(10)}})
    previous = path.read_bytes()
    with pytest.raises(CompkitError, match="cannot write"):
        save_checkpoint(path, {"model": {"w": torch.zeros(1_000_000)}})
    assert path.read_bytes() == previous
    assert [p.name for p in small_disk.iterdir()] == ["best.pt"]


@pytest.mark.slow
def test_a_full_disk_while_building_the_cache_is_an_error_not_sigbus(world, small_disk):
    """Writing a memory map onto a full disk kills the process (SIGBUS); the space is reserved first instead."""
    result = subprocess.run(
        [
            "python", "-m", "compkit", "train", "--recipe", "tiny", "--data", str(world.data), "--runs-dir", str(world.tmp / "runs"),
            "--set", "data.image_size=512", "--set", f"data.cache_dir={small_disk / 'cache'}",
        ],
        capture_output=True, text=True, env={**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error: ") and "preprocessing cache" in result.stderr
    assert not any((small_disk / "cache").glob("*/index.json"))


# --- inputs with one right reading: a warning, and the command goes on -----------------------------------------------


def test_label_files_without_images_are_a_warning(world):
    data = world.dataset()
    orphan = data / "train" / "outputs_json" / "ID001" / "lost.json"
    orphan.write_text(first_label(world.data).read_text())
    result = runner.invoke(app, ["split", str(data), "--folds", "2", "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert (
        "warning:" in result.stderr and "1 label JSONs have no image" in result.stderr and "lost.json" in result.stderr
    )


@pytest.mark.slow
def test_resume_with_nothing_to_resume_says_so(world):
    result = runner.invoke(app, [str(a) for a in train_args(world, "--set", "train.epochs=1", "--resume")])
    assert result.exit_code == 0, result.output
    assert "nothing to resume" in result.stdout
