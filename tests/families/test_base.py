"""The family registry: names, inference of a recipe's family from its architecture, and loading a fold back."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from rich.console import Console

from compkit.data import HANDBONE_CLASSES
from compkit.families import FAMILIES, create_family, load_fold, resolve_family
from compkit.training.checkpoint import load_checkpoint, save_checkpoint
from compkit.training.recipe import load_recipe
from compkit.util.errors import CompkitError


@pytest.fixture(scope="module")
def tiny_fold(trained_tiny_run):
    return trained_tiny_run.run / "fold0"


def test_registry():
    assert set(FAMILIES) >= {"smp", "ultralytics"}
    with pytest.raises(CompkitError, match="unknown family 'smpp' .*did you mean 'smp'") as info:
        create_family("smpp")
    assert info.value.path == "model.family"


@pytest.mark.parametrize(
    "arch, family",
    [("Unet", "smp"), ("UnetPlusPlus", "smp"), ("yolov8n-seg", "ultralytics"), ("yolo11n-seg.yaml", "ultralytics")],
)
def test_older_recipes_get_their_family_inferred_once_with_a_note(arch, family):
    recipe = load_recipe("tiny", [f"model.arch={arch}", "model.family=null"])
    console = Console(record=True, width=200)
    assert resolve_family(recipe, console).name == family
    assert recipe.model.family == family
    assert f"note: model.family not set; '{family}' inferred from model.arch" in console.export_text()
    quiet_console = Console(record=True)
    resolve_family(recipe, quiet_console)
    assert quiet_console.export_text() == "", "inferred once"


def test_an_architecture_no_family_builds_is_refused():
    with pytest.raises(CompkitError, match="no family builds model.arch 'Transformer9000'"):
        resolve_family(load_recipe("tiny", ["model.arch=Transformer9000", "model.family=null"]))


def test_the_family_is_recorded_in_the_run_folder_and_read_back(tiny_fold, tmp_path):
    assert load_checkpoint(tiny_fold / "best.pt")["family"] == "smp"
    assert yaml.safe_load((tiny_fold / "recipe.yaml").read_text())["model"]["family"] == "smp"
    fold = load_fold(tiny_fold, HANDBONE_CLASSES, torch.device("cpu"))
    assert fold.family.name == "smp" and fold.recipe.model.family == "smp"

    # A run folder from before families were recorded: the family is inferred from the architecture.
    old = tmp_path / "fold0"
    shutil.copytree(tiny_fold, old)
    recipe = yaml.safe_load((old / "recipe.yaml").read_text())
    del recipe["model"]["family"]
    (old / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    checkpoint = load_checkpoint(old / "best.pt")
    del checkpoint["family"]
    save_checkpoint(old / "best.pt", checkpoint)
    console = Console(record=True, width=200)
    assert load_fold(old, HANDBONE_CLASSES, torch.device("cpu"), console).family.name == "smp"
    assert "inferred from model.arch 'Unet'" in console.export_text()

    # A checkpoint of another family than its recipe's is refused.
    checkpoint["family"] = "ultralytics"
    save_checkpoint(old / "best.pt", checkpoint)
    with pytest.raises(CompkitError, match="checkpoint of the 'ultralytics' family, but the fold's recipe says 'smp'"):
        load_fold(old, HANDBONE_CLASSES, torch.device("cpu"))
