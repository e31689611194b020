"""Planning: budgets and memory sizes parse, and a measured probe times a real model."""

from __future__ import annotations

import pytest
import torch

from compkit.planning.planner import CANDIDATES, parse_budget, parse_memory, probe_model
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
    from compkit.planning.planner import PlanMachine, Probe, plan_recipe

    def probe(candidate, classes, size, batch, device, steps=3):
        return Probe(
            candidate["arch"],
            candidate["encoder"],
            dict(candidate.get("params", {})),
            size,
            batch,
            images_per_second=50.0,
            peak_bytes=2**20,
            parameters=10**6,
            predict_images_per_second=150.0,
        )

    monkeypatch.setattr("compkit.planning.planner.probe_model", probe)
    planned = plan_recipe(synth_data, "3m", PlanMachine("cpu", "512MB"), folds=3, console=quiet())
    assert planned.recipe["train"]["device"] == "cpu" and planned.budget_s == 180
    assert any(r.startswith("budget: 3.0 min") and "512 MB --memory memory" in r for r in planned.reasons)
    assert planned.reasons[0].endswith("3 folds of 8 training / 4 validation images, 4 test images")
    default = plan_recipe(synth_data, "3m", console=quiet())  # the default machine: auto device, its own memory
    assert default.recipe["train"]["device"] == "auto"
    assert any("this machine's memory" in r for r in default.reasons)
