"""The ultralytics (YOLO-seg) family: what it honours and refuses, and a real training inside the test suite with every
network connection refused, ensembled with an smp run stored at another resolution."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from compkit.data import open_dataset
from compkit.families.ultralytics import UltralyticsFamily
from compkit.inference.onnx_engine import read_metadata
from compkit.inference.predictor import InferenceSettings
from compkit.stages.ensemble import ensemble
from compkit.stages.export import export_onnx
from compkit.stages.predict import predict
from compkit.stages.score import score
from compkit.stages.split import split
from compkit.stages.submit import submit
from compkit.stages.train import train
from compkit.stores.probabilities import Store
from compkit.submission.layouts import validate
from compkit.training.checkpoint import load_checkpoint, save_checkpoint
from compkit.training.recipe import load_recipe
from compkit.util.errors import CompkitError
from compkit.util.fileio import read_json
from tests.conftest import csv_dicts, quiet
from tests.stages.test_train import FAST


@pytest.fixture
def no_network(cut_network):
    """Any connection attempt or DNS lookup fails the test."""
    yield cut_network
    assert not cut_network, f"network access attempted: {cut_network}"


@pytest.fixture
def yolo_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPKIT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("YOLO_CONFIG_DIR", raising=False)


def save_coco_style_checkpoint(path: Path) -> dict:
    """An untrained yolov8n-seg (80 classes, like the COCO release) saved the way ultralytics saves checkpoints (the
    pickled model in half precision); returns its state dict."""
    from compkit.families.ultralytics import prepare_offline

    prepare_offline()
    from ultralytics import YOLO

    path.parent.mkdir(parents=True, exist_ok=True)
    YOLO("yolov8n-seg.yaml").save(path)
    return YOLO("yolov8n-seg.yaml").load(str(path)).model.half().state_dict()


BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.mark.slow
def test_yolo_trains_offline_from_cached_coco_weights_and_ensembles_with_smp(
    data_copy, tmp_path, no_network, yolo_env, monkeypatch
):
    split(data_copy, folds=2, seed=0, console=quiet())
    runs = tmp_path / "runs"
    monkeypatch.setenv("COMPKIT_WEIGHTS", str(tmp_path / "weights"))
    planted = save_coco_style_checkpoint(tmp_path / "weights" / "ultralytics" / "yolov8n-seg.pt")
    yolo_overrides = [
        "data.image_size=128",
        "train.epochs=1",
        "train.batch_size=4",
        "train.workers=0",
        "infer.batch_size=4",
        "optim.lr=0",
    ]
    console = Console(record=True, width=250)
    [result] = train("yolov8-seg", data=data_copy, fold="0", overrides=yolo_overrides, out=runs, console=console)
    folder = runs / "yolov8-seg" / "fold0"
    # The recipe's coco weights came from compkit's cache (never fetched by ultralytics) and, at lr 0, every layer
    # but the 80-class outputs is still what was planted; the record names the file and its hash.
    record = read_json(folder / "pretrained.json")
    assert (record["name"], record["tag"], record["library"]) == ("yolov8n-seg", "coco", "ultralytics")
    assert record["path"] == str(tmp_path / "weights" / "ultralytics" / "yolov8n-seg.pt")
    assert "fold 0 starts from yolov8n-seg coco" in console.export_text()
    trained = load_checkpoint(folder / "best.pt")["model"]
    same_shape = [k for k, v in planted.items() if not k.endswith(BUFFERS) and trained[k].shape == v.shape]
    assert len(same_shape) > 200
    for key in same_shape:
        assert torch.equal(trained[key].half(), planted[key]), key
    assert all(k.startswith("model.22.") for k, v in planted.items() if trained[k].shape != v.shape), (
        "only the class outputs differ"
    )
    assert (folder / "ultralytics" / "weights").is_dir(), "ultralytics' own files in a subfolder"
    assert (folder / "yolo_data" / "dataset.yaml").is_file()
    label = next((folder / "yolo_data" / "labels" / "train").glob("*.txt")).read_text().splitlines()
    assert {int(line.split()[0]) for line in label} == set(range(29)), "every bone exported as a polygon"
    assert all(0 <= float(v) <= 1 for line in label for v in line.split()[1:]), "normalised coordinates"
    table = csv_dicts(folder / "results.csv")
    assert "val_dice_Pisiform" in table[-1]
    measured, tuned = float(table[-1]["val_dice_mean"]), float(table[-1]["val_dice_mean_tuned"])
    assert result["best_dice"] == pytest.approx(measured, abs=1e-6)
    assert tuned >= measured, "the best threshold per class is at least as good as the recipe's"
    checkpoint = load_checkpoint(folder / "best.pt")
    assert checkpoint["family"] == "ultralytics" and set(checkpoint) >= {"model", "epoch"}
    assert load_recipe(folder / "recipe.yaml").model.family == "ultralytics"
    test_store = Store(folder / "test")
    assert test_store.resolution == (128, 128) and len(test_store.image_ids) == 4

    # An smp run stored at 64 px, then both families in one ensemble (at 128 px) and one submission.
    train(
        "tiny",
        data=data_copy,
        fold="0",
        overrides=[*FAST, "data.image_size=64", "train.epochs=1"],
        out=runs,
        console=quiet(),
    )
    assert Store(runs / "tiny" / "fold0" / "test").resolution == (64, 64)
    for method in ("soft", "hard"):
        ens = ensemble(
            [runs / "tiny", runs / "yolov8-seg"], method=method, name=method, out=tmp_path / "ens", console=quiet()
        )
        info = read_json(ens / "members.json")
        assert (
            info["method"] == method and info["resolution"] == [128, 128] and info["families"] == ["smp", "ultralytics"]
        )
        assert Store(ens / "test").resolution == (128, 128)
        out = submit(ens, out=tmp_path / f"{method}.csv", console=quiet())
        validate(out, open_dataset(data_copy, "test"))
        assert np.isfinite(score(out, data_copy, console=quiet()))
    # The soft vote is the mean of the YOLO maps and the U-Net's maps resampled to 128 px, image by image.
    image_id = test_store.image_ids[0]
    tiny = Store(runs / "tiny" / "fold0" / "test").read(image_id, (128, 128))
    expected = (tiny + test_store.read(image_id)) / 2
    assert np.abs(Store(tmp_path / "ens" / "soft" / "test").read(image_id) - expected).max() <= 1 / 255 + 1e-6

    # ONNX: ultralytics' own exporter, its ONNX backend decoding the raw outputs, compkit's maps assembled from its
    # results as for the torch model. The class scores are raised first, so every image has many overlapping
    # instances (an untrained network finds none) and the maps compared are not empty.
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    confident = runs / "yolov8-seg" / "fold0" / "best.pt"
    checkpoint = load_checkpoint(confident)
    for key, value in checkpoint["model"].items():
        if key.startswith("model.22.cv3.") and key.endswith(".2.bias"):  # the class branch's last convolution
            value.fill_(2.0)
    save_checkpoint(confident, checkpoint)
    [model] = export_onnx(runs / "yolov8-seg", console=quiet())
    assert read_metadata(model)["family"] == "ultralytics"
    torch_store = predict([runs / "yolov8-seg"], device="cpu", out=tmp_path / "torch", console=quiet())[0]
    onnx_store = predict([runs / "yolov8-seg"], device="cpu", out=tmp_path / "onnx", engine="onnx", console=quiet())[0]
    maps = Store(torch_store).read(image_id)
    assert (maps > 0.5).mean() > 0.01, "confident instances on the image"
    for i in Store(torch_store).image_ids:
        assert np.abs(Store(onnx_store).read(i) - Store(torch_store).read(i)).max() <= 1 / 255 + 1e-6


def check(overrides: list[str], console=None):
    recipe = load_recipe("yolov8-seg", overrides)
    UltralyticsFamily().check(recipe, 29, console or quiet())


@pytest.mark.parametrize(
    "override, setting",
    [
        ("optim.name=lion", "optim.name"),
        ("loss={focal: 1.0}", "loss"),
        ("model.aux={classes: 29}", "model.aux"),
        ("model.params={decoder_channels: [8]}", "model.params"),
        ("infer.window=64", "infer.window"),
        ("sched.name=plateau", "sched.name"),
        ("data.pseudo=/somewhere", "data.pseudo"),
        ("model.in_channels=1", "model.in_channels"),
        ("train.compile=true", "train.compile"),
        ("aug=[{name: Rotat}]", "aug"),
    ],
)
def test_settings_ultralytics_cannot_honour_are_refused_by_name(override, setting, yolo_env):
    with pytest.raises(CompkitError) as info:
        check([override])
    assert info.value.path == setting


def test_close_substitutes_are_printed_naming_both(yolo_env):
    console = Console(record=True, width=200)
    check(["train.clip_grad=1.0", "train.accumulate=2"], console)
    text = console.export_text()
    assert "train.clip_grad=1.0: ultralytics uses gradient clipping at 10.0" in text
    assert "train.accumulate=2: ultralytics uses its nominal batch size nbs=16" in text
    quiet_console = Console(record=True)
    check([], quiet_console)
    assert "warning" not in quiet_console.export_text(), "the shipped recipe asks only for what ultralytics does"


def test_prediction_settings(yolo_env):
    family = UltralyticsFamily()
    with pytest.raises(CompkitError, match="whole images") as info:
        family.check_inference(InferenceSettings("hflip", 64, 0.5, 2), quiet())
    assert info.value.path == "--window"
    assert family.check_inference(InferenceSettings("d4", None, 0.5, 2), quiet()).tta == "d4"


def test_a_model_yaml_cannot_run_code(tmp_path, yolo_env):
    """ultralytics evals a model yaml's activation string unless safe loading is on; compkit always turns it on."""
    marker = tmp_path / "ran"
    source = Path(__file__).parent.parent.parent / ".venv"  # any yolov8n-seg.yaml will do: take ultralytics' own
    import ultralytics

    base = next(Path(ultralytics.__file__).parent.rglob("yolov8-seg.yaml")).read_text()
    evil = tmp_path / "evil-seg.yaml"
    evil.write_text(base + f"\nactivation: __import__('pathlib').Path({str(marker)!r}).touch() or torch.nn.SiLU()\n")
    with pytest.raises(CompkitError) as info:
        check([f"model.arch={evil}"])
    assert info.value.path == "model.arch"
    assert not marker.exists(), "the model yaml's activation string ran"
    del source


@pytest.mark.parametrize(
    ("weights", "arch", "expected"),
    [
        ("coco", "yolov8n-seg", ("yolov8n-seg", "coco", "yolov8n-seg.pt")),
        (True, "yolo11n-seg", ("yolo11n-seg", "coco", "yolo11n-seg.pt")),
        ("yolov8x-seg.pt", "yolov8n-seg", ("yolov8x-seg", "coco", "yolov8x-seg.pt")),
        ("yolov8x-seg", "yolov8n-seg", ("yolov8x-seg", "coco", "yolov8x-seg.pt")),
    ],
)
def test_coco_weights_name_a_release_file(weights, arch, expected, yolo_env):
    resolved = UltralyticsFamily().pretrained(
        load_recipe("yolov8-seg", [f"model.arch={arch}", f"model.encoder_weights={weights}"])
    )
    assert (resolved.name, resolved.tag, resolved.asset) == expected
    assert UltralyticsFamily.weights_named(expected[2]) == resolved, "compkit weights pull takes the same name"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.encoder_weights=yolov8n-segg.pt"],
            r"neither a local file nor an ultralytics release file \(did you mean 'yolov8n-seg.pt'\?\)",
        ),
        (["model.encoder_weights=imagenet"], r"neither a local file nor an ultralytics release file"),
        (["model.arch=custom/my-seg.yaml"], r"coco weights are named after model.arch"),
        (["model.encoder_weights=weights/mine.pt"], r"file not found"),
    ],
)
def test_weights_ultralytics_cannot_use_are_refused(overrides, message, yolo_env):
    with pytest.raises(CompkitError, match=message):
        UltralyticsFamily().pretrained(load_recipe("yolov8-seg", overrides))


class Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_in_a_cached_release_file_does_not_run(data_copy, tmp_path, no_network, yolo_env, monkeypatch):
    split(data_copy, folds=2, seed=0, console=quiet())
    marker = tmp_path / "ran"
    release = tmp_path / "weights" / "ultralytics" / "yolov8n-seg.pt"
    release.parent.mkdir(parents=True)
    torch.save({"model": Payload(marker), "train_args": {}}, release)
    monkeypatch.setenv("COMPKIT_WEIGHTS", str(tmp_path / "weights"))
    with pytest.raises(CompkitError, match="cannot load weights") as info:
        train(
            "yolov8-seg",
            fold="0",
            data=data_copy,
            overrides=["data.image_size=64", "train.workers=0"],
            out=tmp_path / "runs",
            console=quiet(),
        )
    assert info.value.path == str(release)
    assert not marker.exists(), "the weights file ran code"


def test_ultralytics_leaves_process_settings_as_it_found_them():
    """ultralytics sets torch's thread count and deterministic mode; the smp runs after it must not change."""
    import cv2
    import torch

    from compkit.families.ultralytics import process_settings_kept

    before = (torch.get_num_threads(), cv2.getNumThreads(), torch.are_deterministic_algorithms_enabled())
    with process_settings_kept():
        torch.set_num_threads(1)
        cv2.setNumThreads(0)
        torch.use_deterministic_algorithms(True, warn_only=True)
    assert (torch.get_num_threads(), cv2.getNumThreads(), torch.are_deterministic_algorithms_enabled()) == before


def test_yolo_labels_of_masks_reaching_the_edges_stay_normalised():
    import compkit.families.ultralytics as ultralytics_family

    mask = np.zeros((2, 64, 64), np.uint8)
    mask[0, 40:, :20] = 1  # a forearm clipped at the bottom-left corner
    mask[1] = 1  # the whole image
    lines = ultralytics_family._polygon_lines(mask)
    assert [c for c, _ in lines] == [0, 1]
    for _, coords in lines:
        values = np.array(coords.split(), float)
        assert values.min() == 0.0 and values.max() <= 1.0 and len(values) % 2 == 0


@pytest.mark.slow
def test_the_best_epoch_is_the_one_best_pt_holds(data_copy, tmp_path, no_network, yolo_env, monkeypatch):
    """Ultralytics writes best.pt at each epoch that reaches the best fitness; here its validation judges the first
    of two epochs the best (the second scores lower), so best.pt holds epoch 1 and the fold reports epoch 1."""
    from compkit.families.ultralytics import prepare_offline

    prepare_offline()  # before ultralytics is imported: it reads its settings folder (and font) once, on import
    from ultralytics.engine.trainer import BaseTrainer

    measured = BaseTrainer.validate

    def first_epoch_best(trainer):
        metrics, _ = measured(trainer)
        trainer.best_fitness = 1.0
        return metrics, 1.0 if trainer.epoch == 0 else 0.5

    monkeypatch.setattr(BaseTrainer, "validate", first_epoch_best)
    split(data_copy, folds=2, seed=0, console=quiet())
    overrides = [
        "data.image_size=64",
        "train.epochs=2",
        "train.batch_size=4",
        "train.workers=0",
        "infer.batch_size=4",
        "model.encoder_weights=null",
    ]
    runs = tmp_path / "runs"
    [result] = train("yolov8-seg", data=data_copy, fold="0", overrides=overrides, out=runs, console=quiet())
    assert (result["best_epoch"], result["epochs"]) == (1, 2)
    assert load_checkpoint(runs / "yolov8-seg" / "fold0" / "best.pt")["epoch"] == 1
