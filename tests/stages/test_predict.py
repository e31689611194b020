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
