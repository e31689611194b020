"""compkit predict: a trained run's folds predict their test images (or their validation images) into stores, as
training did; TTA, sliding windows and the split are chosen per call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compkit.data import open_dataset
from compkit.data.splits import load_splits
from compkit.families import load_fold
from compkit.inference.predictor import InferenceSettings, inference_settings, predict_cached
from compkit.stages.predict import predict
from compkit.stores.probabilities import Store
from compkit.training.preprocess import cache_for
from compkit.training.runs import fold_recipe
from compkit.util.errors import CompkitError
from tests.conftest import copy_run, quiet

ROUNDING = 1 / 255 + 1e-6  # stores keep uint8 probabilities


def max_difference(a: Store, b: Store) -> float:
    assert sorted(a.image_ids) == sorted(b.image_ids)
    assert a.classes == b.classes and a.resolution == b.resolution
    return max(float(np.abs(a.read(i) - b.read(i)).max()) for i in a.image_ids)


@pytest.fixture
def run_copy(trained_tiny_run, tmp_path):
    """A private copy of the session's trained run (predicting replaces its stores)."""
    return copy_run(trained_tiny_run.run, tmp_path / "runs" / "tiny")


def reference(fold_dir, settings: InferenceSettings) -> dict[str, np.ndarray]:
    """The fold's best checkpoint predicting the cached test images directly, bypassing compkit.predict."""
    recipe = fold_recipe(fold_dir)
    dataset = open_dataset(recipe.data.root, "test")
    fold = load_fold(fold_dir, dataset.classes, torch.device("cpu"))
    cache = cache_for(dataset, fold.recipe, quiet())
    return {
        dataset.samples[i].image_id: probs
        for i, probs in predict_cached(fold.predictor, cache, list(range(len(dataset))), settings)
    }


def test_predicting_a_run_rewrites_the_test_stores_training_wrote(trained_tiny_run, run_copy):
    written = predict([run_copy], device="cpu", exist_ok=True, console=quiet())
    assert written == [run_copy / "fold0" / "test", run_copy / "fold1" / "test"]
    for fold in ("fold0", "fold1"):
        assert max_difference(Store(run_copy / fold / "test"), Store(trained_tiny_run.run / fold / "test")) <= ROUNDING
        store = Store(run_copy / fold / "test")
        assert store.resolution == (64, 64) and len(store.image_ids) == 4
        assert all(store.original_size(i) == (96, 96) for i in store.image_ids)
    assert not any(p.name.startswith(".") for p in (run_copy / "fold0").iterdir()), "no staging folder left behind"


@pytest.mark.parametrize("tta", ["none", "hflip", "vflip", "d4"])
def test_tta_views_are_what_the_store_holds(run_copy, tta):
    fold = run_copy / "fold1"
    [store_dir] = predict([fold], tta=tta, device="cpu", exist_ok=True, console=quiet())
    assert store_dir == fold / "test"
    store = Store(store_dir)
    expected = reference(fold, InferenceSettings(tta=tta, batch_size=8))
    assert sorted(store.image_ids) == sorted(expected)
    for image_id, probs in expected.items():
        assert np.abs(store.read(image_id) - probs).max() <= ROUNDING


def test_tta_changes_the_probabilities(trained_tiny_run, run_copy):
    """The recipe's TTA (hflip, as training wrote it) is the default; --tta none is another prediction."""
    fold = run_copy / "fold0"
    predict([fold], tta="none", device="cpu", exist_ok=True, console=quiet())
    assert max_difference(Store(fold / "test"), Store(trained_tiny_run.run / "fold0" / "test")) > 2 / 255


def test_one_window_covering_the_image_equals_the_whole_image(trained_tiny_run, run_copy):
    fold = run_copy / "fold0"
    predict([fold], window=64, overlap=0.5, device="cpu", exist_ok=True, console=quiet())
    assert max_difference(Store(fold / "test"), Store(trained_tiny_run.run / "fold0" / "test")) <= ROUNDING
    predict([fold], window=32, overlap=0.5, batch=3, device="cpu", exist_ok=True, console=quiet())
    settings = inference_settings(fold_recipe(fold), window=32, overlap=0.5, batch_size=3)
    assert settings == InferenceSettings("hflip", 32, 0.5, 3), "the recipe's TTA, the call's window"
    for image_id, probs in reference(fold, settings).items():
        assert np.abs(Store(fold / "test").read(image_id) - probs).max() <= ROUNDING


def test_split_val_writes_the_folds_oof_store(trained_tiny_run, run_copy):
    data = trained_tiny_run.data
    (run_copy / "fold0" / "oof" / "index.json").unlink()  # as if training had not written it
    test_before = Store(run_copy / "fold0" / "test")
    [oof] = predict([run_copy / "fold0"], split="val", device="cpu", exist_ok=True, console=quiet())
    assert oof == run_copy / "fold0" / "oof"
    store = Store(oof)
    assert sorted(store.image_ids) == sorted(load_splits(data)["folds"][0]["val"])
    assert max_difference(store, Store(trained_tiny_run.run / "fold0" / "oof")) <= ROUNDING
    assert all(store.original_size(i) == (96, 96) for i in store.image_ids)
    assert max_difference(Store(run_copy / "fold0" / "test"), test_before) == 0, "the test store is left alone"


def test_explicit_data_folder(trained_tiny_run, run_copy):
    [store] = predict([run_copy / "fold1"], data=trained_tiny_run.data, device="cpu", exist_ok=True, console=quiet())
    assert max_difference(Store(store), Store(trained_tiny_run.run / "fold1" / "test")) <= ROUNDING


def test_an_existing_store_is_replaced_only_when_asked(trained_tiny_run, run_copy, tmp_path):
    before = sorted(p.name for p in (run_copy / "fold0" / "test").iterdir())
    with pytest.raises(CompkitError, match="already exists: pass --exist-ok to replace it, or --out DIR") as info:
        predict([run_copy], tta="none", device="cpu", console=quiet())
    assert info.value.path == str(run_copy / "fold0" / "test")
    assert sorted(p.name for p in (run_copy / "fold0" / "test").iterdir()) == before
    assert max_difference(Store(run_copy / "fold0" / "test"), Store(trained_tiny_run.run / "fold0" / "test")) == 0, (
        "left alone"
    )


def test_out_writes_beside_a_read_only_run(trained_tiny_run, tmp_path):
    """--out: the run folder is only read (e.g. attached read-only to a notebook); stores go to out/<run>/fold<k>/."""
    run = trained_tiny_run.run  # the shared run itself: predicting into --out must not touch it
    listing = {p.relative_to(run).as_posix(): p.stat().st_mtime_ns for p in run.rglob("*")}
    written = predict([run], out=tmp_path / "preds", device="cpu", console=quiet())
    assert written == [tmp_path / "preds" / "tiny" / "fold0" / "test", tmp_path / "preds" / "tiny" / "fold1" / "test"]
    assert {p.relative_to(run).as_posix(): p.stat().st_mtime_ns for p in run.rglob("*")} == listing
    for fold in ("fold0", "fold1"):
        assert (
            max_difference(Store(tmp_path / "preds" / "tiny" / fold / "test"), Store(run / fold / "test")) <= ROUNDING
        )
        assert (tmp_path / "preds" / "tiny" / fold / "recipe.yaml").is_file(), "read like a run by ensemble and submit"


def test_errors_name_the_option(run_copy, tmp_path):
    with pytest.raises(
        CompkitError, match=r"unknown TTA 'flip' \(did you mean 'vflip'\?\) \(known: none, hflip, vflip, d4, scales\)"
    ) as info:
        predict([run_copy], tta="flip", console=quiet())
    assert info.value.path == "--tta"
    with pytest.raises(CompkitError, match="must be one of test, val, got 'train'") as info:
        predict([run_copy], split="train", console=quiet())
    assert info.value.path == "--split"
    with pytest.raises(CompkitError, match="not a run or fold folder"):
        predict([tmp_path / "nothing"], device="cpu", console=quiet())


def quirky_image_folder(trained_tiny_run, folder):
    """Test images of the run's dataset as a user's folder holds them: nested, an odd name, a 16-bit PNG, a JPEG
    with an EXIF orientation tag, a DICOM, and a hidden file that is not an image."""
    import cv2

    from tests.layouts import write_dicom

    dataset = open_dataset(trained_tiny_run.data, "test")
    grey = [dataset.read_image(s)[..., 0] for s in dataset.samples[:4]]
    (folder / "nested").mkdir(parents=True)
    cv2.imwrite(str(folder / "plain.png"), grey[0])
    cv2.imwrite(str(folder / "nested" / "hand é 2.png"), grey[1])
    cv2.imwrite(str(folder / "sixteen.png"), grey[2].astype(np.uint16) * 257)
    ok, jpeg = cv2.imencode(".jpg", grey[3], [cv2.IMWRITE_JPEG_QUALITY, 95])
    (folder / "tagged.jpg").write_bytes(jpeg.tobytes())
    write_dicom(folder / "scan.dcm", grey[0].astype(np.uint16) * 16, photometric="MONOCHROME2")
    (folder / ".DS_Store").write_bytes(b"\x00\x01not an image")
    return grey


def test_predict_any_folder_of_images_writes_masks_overlays_and_a_table(trained_tiny_run, tmp_path):
    import cv2

    from compkit.inference.loaded_run import load_run
    from compkit.stages.ensemble import ensemble
    from compkit.stages.predict import predict_source
    from compkit.util.fileio import read_json
    from tests.conftest import csv_dicts

    source = tmp_path / "images"
    grey = quirky_image_folder(trained_tiny_run, source)
    out = predict_source(trained_tiny_run.run, source, out=tmp_path / "pred", console=quiet())
    classes = open_dataset(trained_tiny_run.data).classes
    ids = ["nested/hand é 2", "plain", "scan", "sixteen", "tagged"]
    rows = csv_dicts(out / "predictions.csv")
    assert sorted(r["id"] for r in rows) == ids
    for image_id in ids:
        masks = [cv2.imread(str(out / "masks" / image_id / f"{c}.png"), cv2.IMREAD_UNCHANGED) for c in classes]
        assert all(m is not None and m.shape == grey[0].shape and set(np.unique(m)) <= {0, 255} for m in masks)
        picture = cv2.imread(str(out / "overlays" / f"{image_id}.png"))
        assert picture.shape[1] == grey[0].shape[1] and picture.shape[0] > grey[0].shape[0], (
            "the image, then its legend"
        )
    record = read_json(out / "predict.json")
    assert record["thresholds"] == {c: 0.5 for c in classes} and record["images"] == 5, "a run alone: 0.5"
    # The masks are the run's probabilities (load_run, as a notebook would) cut at 0.5.
    expected = load_run(trained_tiny_run.run).predict(cv2.cvtColor(grey[0], cv2.COLOR_GRAY2BGR)) > 0.5
    for c, name in enumerate(classes):
        assert np.array_equal(cv2.imread(str(out / "masks" / "plain" / f"{name}.png"), 0) > 0, expected[c]), name
    row = next(r for r in rows if r["id"] == "plain")
    assert int(row[f"pixels_{classes[0]}"]) == int(expected[0].sum())

    # An ensemble's tuned thresholds and postprocessing, one index PNG per image.
    ens = ensemble([trained_tiny_run.run], name="e", data=trained_tiny_run.data, out=tmp_path / "ens", console=quiet())
    indexed = predict_source(ens, source / "plain.png", out=tmp_path / "idx", save="index", console=quiet())
    assert read_json(indexed / "predict.json")["thresholds"] == pytest.approx(read_json(ens / "thresholds.json"))
    from PIL import Image

    index = Image.open(indexed / "index" / "plain.png")
    assert index.mode == "P" and np.asarray(index).max() <= len(classes)


def test_predict_source_errors_are_one_line_and_leave_nothing(trained_tiny_run, tmp_path):
    from compkit.stages.predict import predict_source

    with pytest.raises(CompkitError, match="no images to predict"):
        predict_source(trained_tiny_run.run, tmp_path, out=tmp_path / "p", console=quiet())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(CompkitError, match="a.png"):
        predict_source(trained_tiny_run.run, broken, out=tmp_path / "p", console=quiet())
    assert not (tmp_path / "p").exists(), "nothing half-written"
    with pytest.raises(CompkitError, match="--save"):
        predict_source(trained_tiny_run.run, broken, save="jpeg", console=quiet())
