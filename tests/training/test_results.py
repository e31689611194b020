"""results.csv/results.png: the one writer every family uses."""

from __future__ import annotations

import pytest

from compkit.training.results import best_epoch, plot_results, read_results, write_results


def test_best_epoch_is_the_highest_validated_dice_and_the_first_of_ties():
    rows = [
        {"epoch": 1, "val_dice_mean": 0.2},
        {"epoch": 2, "val_dice_mean": ""},  # not validated that epoch
        {"epoch": 3, "val_dice_mean": 0.5},
        {"epoch": 4, "val_dice_mean": 0.5},
    ]
    assert best_epoch(rows) == (3, 0.5)
    assert best_epoch([{"epoch": 1, "val_dice_mean": ""}]) is None


def test_results_round_trip_and_the_plot_of_a_single_epoch(tmp_path):
    import cv2

    rows = [{"epoch": 1, "train_loss": 0.9, "train_bce": 0.7, "lr": 1e-3, "val_loss": 0.8, "val_dice_mean": 0.1}]
    write_results(tmp_path, rows)
    assert read_results(tmp_path) == [{k: str(v) for k, v in rows[0].items()}]
    plot_results(tmp_path, rows)
    image = cv2.imread(str(tmp_path / "results.png"))
    assert image is not None and image.shape[1] > 3 * image.shape[0]  # four panels side by side


def test_the_writer_redraws_the_plot_at_most_every_interval_and_when_it_closes(tmp_path):
    from compkit.training.recipe import Recipe
    from compkit.training.results import ResultsWriter

    row = lambda epoch: {"epoch": epoch, "train_loss": 1.0 / epoch, "lr": 1e-3, "val_dice_mean": 0.1 * epoch}  # noqa: E731
    writer = ResultsWriter(tmp_path, Recipe())
    writer.write([row(1)])
    first = (tmp_path / "results.png").read_bytes()
    writer.write([row(1), row(2), row(3)])
    assert len(read_results(tmp_path)) == 3  # the CSV after every epoch
    assert (tmp_path / "results.png").read_bytes() == first  # the plot not redrawn within the interval
    writer.close()
    assert (tmp_path / "results.png").read_bytes() != first  # ... but when the fold ends


def test_a_trained_run_summarises_every_fold_in_cv_json_and_csv(trained_tiny_run):
    from compkit.data import open_dataset
    from compkit.training.results import read_results
    from compkit.util.fileio import read_json
    from tests.conftest import csv_dicts

    summary = read_json(trained_tiny_run.run / "cv.json")
    classes = open_dataset(trained_tiny_run.data, "train").classes
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    for fold in summary["folds"]:
        rows = read_results(trained_tiny_run.run / f"fold{fold['fold']}")
        best = max(float(r["val_dice_mean"]) for r in rows)
        assert fold["best_dice"] == pytest.approx(best)
        assert {f"dice_{c}" for c in classes} <= set(fold)
    dice = [f["best_dice"] for f in summary["folds"]]
    assert summary["mean"]["best_dice"] == pytest.approx(sum(dice) / 2, abs=1e-6)
    assert summary["std"]["best_dice"] == pytest.approx(abs(dice[0] - dice[1]) / 2, abs=1e-6)
    table = csv_dicts(trained_tiny_run.run / "cv.csv")
    assert [r["fold"] for r in table] == ["0", "1", "mean", "std"]
    assert float(table[2][f"dice_{classes[0]}"]) == pytest.approx(
        sum(f[f"dice_{classes[0]}"] for f in summary["folds"]) / 2, abs=1e-6
    )


def test_the_overlays_show_the_worst_validation_images_of_the_best_checkpoint(trained_tiny_run):
    import cv2
    import numpy as np
    import torch

    from compkit.data import open_dataset
    from compkit.evaluation.metrics import dice_per_class
    from compkit.families import load_fold
    from compkit.inference.predictor import InferenceSettings, predict_cached
    from compkit.training.preprocess import cache_for
    from compkit.training.results import OVERLAYS_PNG, worst_validation_images
    from compkit.training.runs import fold_recipe

    folder = trained_tiny_run.run / "fold0"
    recipe = fold_recipe(folder)
    dataset = open_dataset(trained_tiny_run.data)
    fold = load_fold(folder, dataset.classes, torch.device("cpu"), recipe=recipe)
    cache = cache_for(dataset, recipe, None)
    positions = list(range(len(dataset)))[:10]
    settings = InferenceSettings("none", None, 0.5, 4)
    worst = worst_validation_images(fold.predictor, cache, positions, 0.5, settings, count=3)
    every = sorted(
        float(dice_per_class(p > 0.5, cache.mask(i).astype(bool)).mean())
        for i, p in predict_cached(fold.predictor, cache, positions, settings)
    )
    assert [w[0] for w in worst] == pytest.approx(every[:3]), "the lowest mean dice, worst first"
    picture = cv2.imread(str(folder / OVERLAYS_PNG))
    assert picture is not None and picture.shape[1] > 2 * picture.shape[0] / 2
    results = cv2.imread(str(folder / "results.png"))
    assert results.shape[0] > 380, "the per-class heatmap below the curves"
    assert np.isfinite(every).all()
