"""Planning: budgets and memory sizes parse, a measured probe times a real model, and thin structures keep their
width (never downscaled below MIN_WIDTH_PIXELS; patches where whole images do not fit the budget)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from compkit.planning.planner import (
    CANDIDATES,
    MIN_PATCH,
    PlanMachine,
    parse_budget,
    parse_memory,
    plan_recipe,
    probe_model,
)
from compkit.training.recipe import Recipe
from compkit.util.errors import CompkitError
from tests.conftest import quiet


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("6h", 21600), ("90s", 90), ("1h30m", 5400), ("45", 45), ("2.5min", 150), (20, 20)],
)
def test_budgets(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "0m", "-5m", ""])
def test_bad_budgets_say_what_is_wrong(text):
    with pytest.raises(CompkitError, match="--budget"):
        parse_budget(text)


def test_memory_sizes():
    assert (
        parse_memory("24GB") == 24 * 2**30 and parse_memory("512MB") == 512 * 2**20 and parse_memory("8G") == 8 * 2**30
    )
    assert parse_memory(None) is None
    with pytest.raises(CompkitError, match="--memory"):
        parse_memory("lots")


def test_probe_times_a_real_model(monkeypatch):
    monkeypatch.setattr("compkit.planning.planner.PROBE_SECONDS", 0.0)  # one timed step is enough here
    probe = probe_model(CANDIDATES[0], classes=3, size=64, batch=2, device=torch.device("cpu"), steps=1)
    assert probe.images_per_second > 0 and probe.parameters > 1_000_000
    # Peak memory: at least the float32 weights, their gradients and AdamW's two moments, plus the batch (an image
    # of 3 channels and a mask of 3 classes); the activations come on top and grow with the pixel count.
    fixed = 4 * 4 * probe.parameters
    batch_bytes = 2 * (3 + 3) * 64 * 64 * 4
    assert probe.peak_bytes > fixed + batch_bytes
    larger = probe_model(CANDIDATES[0], classes=3, size=128, batch=2, device=torch.device("cpu"), steps=1)
    activations, larger_activations = probe.peak_bytes - fixed, larger.peak_bytes - fixed
    assert larger_activations == pytest.approx(4 * activations, rel=0.1)
    # throughput falls with the pixel count, memory grows with it and with the batch
    assert probe.speed_at(128) == pytest.approx(probe.images_per_second / 4)
    assert probe.memory_at(128, 4) == pytest.approx(probe.peak_bytes * 8)
    # prediction (forward passes alone) is timed too, and is faster than training (forward, backward, step)
    assert probe.predict_images_per_second > probe.images_per_second
    assert probe.predict_speed_at(128) == pytest.approx(probe.predict_images_per_second / 4)


def test_fold_sizes_come_from_the_splits_file_the_training_uses(data_copy, tmp_path):
    from compkit.planning.planner import fold_sizes
    from compkit.stages.split import split

    split(data_copy, folds=3, seed=0, out=tmp_path / "elsewhere.json", console=quiet())
    assert fold_sizes(data_copy, 12, None, str(tmp_path / "elsewhere.json"))[0] == 3
    assert fold_sizes(data_copy, 12, None, None) == (2, 6, 6)  # no splits.json in the dataset: two folds assumed


def test_the_machine_planned_for_sets_the_device_and_memory(synth_data, monkeypatch):
    """PlanMachine: the device the recipe trains on and the memory the batch must fit (probes faked: no timing)."""
    monkeypatch.setattr("compkit.planning.planner.probe_model", timed_at(50.0, per_pixel=False))
    planned = plan_recipe(synth_data, "3m", PlanMachine("cpu", "512MB"), folds=3, console=quiet())
    assert planned.recipe["train"]["device"] == "cpu" and planned.budget_s == 180
    assert any(r.startswith("budget: 3.0 min") and "512 MB --memory memory" in r for r in planned.reasons)
    assert planned.reasons[0].endswith("3 folds of 8 training / 4 validation images, 4 test images")
    default = plan_recipe(synth_data, "3m", console=quiet())  # the default machine: auto device, its own memory
    assert default.recipe["train"]["device"] == "auto"
    assert any("this machine's memory" in r for r in default.reasons)


def timed_at(speed: float, per_pixel: bool = True):
    """A fake probe_model (no timing): ``speed`` training images per second (at 128 px where ``per_pixel``, scaled by
    the pixel count), prediction 3x faster."""
    from compkit.planning.planner import Probe

    def probe(candidate, classes, size, batch, device, steps=3):
        scale = (128 / size) ** 2 if per_pixel else 1.0
        return Probe(
            candidate["arch"],
            candidate["encoder"],
            dict(candidate.get("params", {})),
            size,
            batch,
            images_per_second=speed * scale,
            peak_bytes=2**20,
            parameters=10**6,
            predict_images_per_second=3 * speed * scale,
        )

    return probe


@pytest.fixture(scope="module")
def thin_lines(tmp_path_factory):
    """12 images of 256 px crossed by 1 px lines: a class large in area, thin in width (as retinal vessels)."""
    root = tmp_path_factory.mktemp("thin")
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (root / "train" / folder).mkdir(parents=True)
    for i in range(12):
        mask = np.zeros((256, 256), np.uint8)
        for _ in range(12):
            x0, y0, x1, y1 = (int(v) for v in rng.integers(0, 256, 4))
            cv2.line(mask, (x0, y0), (x1, y1), 255, 1)
        image = np.stack([mask // 2 + 60] * 3, -1)
        cv2.imwrite(str(root / "train" / "images" / f"{i:02d}.png"), image)
        cv2.imwrite(str(root / "train" / "masks" / f"{i:02d}.png"), mask)
    return root / "train"


def test_thin_structures_keep_the_original_size_and_train_on_patches_when_slow(thin_lines, monkeypatch):
    monkeypatch.setattr("compkit.planning.planner.probe_model", timed_at(4.0))
    planned = plan_recipe(thin_lines, "3m", PlanMachine("cpu"), folds=2, console=quiet())
    recipe = planned.recipe
    assert recipe["data"]["image_size"] == 256  # 1 px lines: never downscaled, though their area would allow it
    sizing = next(r for r in planned.reasons if r.startswith("input size"))
    assert "bound by the structures' width" in sizing and "1.0 px wide" in sizing
    crop = recipe["aug"][0]
    assert crop["name"] == "RandomCrop" and MIN_PATCH <= crop["height"] < 256 and crop["height"] % 32 == 0
    assert recipe["train"]["repeats"] > 1 and recipe["infer"]["window"] is None  # predicts whole images
    assert any(r.startswith(f"patches {crop['height']} px:") for r in planned.reasons)
    Recipe.model_validate({k: v for k, v in recipe.items() if k != "extends"})


def test_a_fast_machine_trains_thin_structures_on_whole_images(thin_lines, monkeypatch):
    monkeypatch.setattr("compkit.planning.planner.probe_model", timed_at(4000.0))
    planned = plan_recipe(thin_lines, "3m", PlanMachine("cpu"), folds=2, console=quiet())
    assert planned.recipe["data"]["image_size"] == 256
    assert not any(a["name"] == "RandomCrop" for a in planned.recipe["aug"]) and planned.recipe["train"]["repeats"] == 1


def test_a_cached_imagenet_encoder_is_planned_with_its_weights_and_a_missing_one_names_the_pull_command(
    synth_data, planted_weights, tmp_path, monkeypatch
):
    """The weights cache decides: the planted one holds resnet18's ImageNet weights (smp-hub), so the CPU plan
    fine-tunes resnet18 from them; with an empty cache it trains from scratch and says how to fill it."""
    monkeypatch.setattr("compkit.planning.planner.probe_model", timed_at(400.0, per_pixel=False))  # all affordable
    monkeypatch.setenv("COMPKIT_WEIGHTS", str(planted_weights["folder"]))
    planned = plan_recipe(synth_data, "3m", PlanMachine("cpu"), folds=2, console=quiet())
    model = planned.recipe["model"]
    assert (model["encoder"], model["encoder_weights"]) == ("resnet18", "imagenet")
    assert planned.recipe["optim"]["lr"] == 1.0e-3  # fine-tuned, not tiny's 5e-3 for scratch
    assert any(
        r.startswith("encoder weights: ImageNet (resnet18.imagenet, in the weights cache)") for r in planned.reasons
    )
    Recipe.model_validate({k: v for k, v in planned.recipe.items() if k != "extends"})  # training reads it as is

    monkeypatch.setenv("COMPKIT_WEIGHTS", str(tmp_path / "empty"))
    scratch = plan_recipe(synth_data, "3m", PlanMachine("cpu"), folds=2, console=quiet())
    assert scratch.recipe["model"]["encoder_weights"] is None and "optim" not in scratch.recipe
    line = next(r for r in scratch.reasons if r.startswith("encoder weights:"))
    assert "from scratch" in line and "`compkit weights pull tu-regnety_002." in line


def test_a_gpu_plan_considers_unet_plus_plus_and_large_encoders_with_amp(synth_data, tmp_path, monkeypatch):
    """On a GPU (faked: device, memory and probes) the candidates are the GPU recipes' models; the largest that
    gets its steps is chosen, with mixed precision, and a missing cached weight is a reason line naming the pull
    command, not a silent fallback."""
    monkeypatch.setattr("compkit.planning.planner.resolve_device", lambda device, option: torch.device("cuda"))
    monkeypatch.setattr("compkit.planning.planner._device_memory", lambda device: 80 * 2**30)
    monkeypatch.setenv("COMPKIT_WEIGHTS", str(tmp_path / "empty"))
    probed: list[str] = []
    fake = timed_at(4000.0, per_pixel=False)

    def probe(candidate, classes, size, batch, device, steps=3):
        probed.append(f"{candidate['arch']}/{candidate['encoder']}")
        result = fake(candidate, classes, size, batch, device)
        result.parameters = {"resnet34": 2, "efficientnet-b5": 3, "tu-hrnet_w64": 4}[candidate["encoder"]] * 10**7
        return result

    monkeypatch.setattr("compkit.planning.planner.probe_model", probe)
    planned = plan_recipe(synth_data, "6h", PlanMachine("cuda"), folds=2, console=quiet())
    assert {"Unet/resnet34", "UnetPlusPlus/resnet34", "UnetPlusPlus/tu-hrnet_w64"} <= set(probed)
    model = planned.recipe["model"]
    assert (model["arch"], model["encoder"], model["encoder_weights"]) == ("UnetPlusPlus", "tu-hrnet_w64", None)
    assert planned.recipe["train"]["amp"] is True
    line = next(r for r in planned.reasons if r.startswith("encoder weights:"))
    assert "`compkit weights pull tu-hrnet_w64." in line


def test_images_no_larger_than_the_smallest_patch_train_whole(synth_data, monkeypatch):
    """96 px images that get few steps in the budget: a 96 px patch would be the whole image, so none is planned."""
    monkeypatch.setattr("compkit.planning.planner.probe_model", timed_at(0.5, per_pixel=False))
    planned = plan_recipe(synth_data, "3m", PlanMachine("cpu"), folds=2, console=quiet())
    assert planned.recipe["data"]["image_size"] == 96 and planned.recipe["train"]["repeats"] == 1
    assert not any("Crop" in item["name"] for item in planned.recipe["aug"])
