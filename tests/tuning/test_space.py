"""Search spaces: the file's form, every value checked against the recipe schema, Optuna's draws and grids."""

from __future__ import annotations

import optuna
import pytest
import yaml

from compkit.tuning.space import available_spaces, load_space, overrides_for, yaml_value
from compkit.util.errors import CompkitError


def write_space(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_each_kind_is_read_and_drawn_within_its_bounds(tmp_path):
    space = load_space(
        write_space(
            tmp_path,
            "optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
            "data.image_size: {int: [128, 384], step: 32}\n"
            "loss.dice: {uniform: [0.3, 1.0]}\n"
            "model.encoder: [resnet18, tu-regnety_004]\n"
            "aug: {choice: {light: [{name: HorizontalFlip, p: 0.5}], none: []}}\n",
        )
    )
    assert space.keys == ["optim.lr", "data.image_size", "loss.dice", "model.encoder", "aug"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        values = space.suggest(trial)
        assert 1e-4 <= values["optim.lr"] <= 1e-2
        assert values["data.image_size"] in range(128, 385, 32)
        assert 0.3 <= values["loss.dice"] <= 1.0
        assert values["model.encoder"] in ("resnet18", "tu-regnety_004")
        assert values["aug"] in ([{"name": "HorizontalFlip", "p": 0.5}], [])
        assert trial.params["aug"] in ("light", "none")  # the study records the option's name
        assert space.values_of(trial.params) == values
        study.tell(trial, 0.0)


def test_the_overrides_read_back_as_the_same_values():
    values = {"optim.lr": 1e-5, "aug": [{"name": "Affine", "scale": [0.9, 1.1]}], "model.encoder": "resnet18"}
    for assignment, (key, value) in zip(overrides_for(values), values.items(), strict=True):
        written_key, _, text = assignment.partition("=")
        assert written_key == key and yaml.safe_load(text) == value
    assert yaml_value(1e-5) == "1.0e-05"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optim.lrr: {loguniform: [1.0e-4, 1.0e-2]}", "optim.lrr: unknown key (did you mean 'lr'?)"),
        ("optim.lr: {loguniformm: [1.0e-4, 1.0e-2]}", "unknown kind 'loguniformm' (did you mean 'loguniform'?)"),
        ("optim.lr: {uniform: [0.1, 0.01]}", "needs low < high"),
        ("optim.lr: {loguniform: [0, 0.01]}", "positive low bound"),
        ("data.image_size: {int: [8, 64]}", "data.image_size: Input should be greater than or equal to 32"),
        ("data.image_size: {int: [64, 128], stepp: 32}", "int takes no 'stepp' (did you mean 'step'?)"),
        ("loss.dicee: {uniform: [0.1, 1.0]}", "unknown loss term 'dicee' (did you mean 'dice'?)"),
        ("optim.name: {choice: [adamw, adamx]}", "unknown optimizer 'adamx'"),
        ("aug: {choice: [[{p: 0.5}]]}", "each transform needs a 'name'"),
        ("[1, 2]", "a search space is a mapping"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    path = write_space(tmp_path, text + "\n")
    with pytest.raises(CompkitError) as caught:
        load_space(path).check("tiny")
    assert caught.value.path == str(path)
    assert message in caught.value.problem


def test_grid_values_and_a_continuous_range_refused(tmp_path):
    space = load_space(
        write_space(tmp_path, "data.image_size: {int: [64, 128], step: 32}\noptim.name: [adamw, lion]\n")
    )
    assert space.grid() == {"data.image_size": [64, 96, 128], "optim.name": ["adamw", "lion"]}
    continuous = load_space(write_space(tmp_path, "optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"))
    with pytest.raises(CompkitError, match="grid sampler needs each value"):
        continuous.grid()


def test_the_shipped_spaces_fit_the_shipped_smp_recipes():
    assert {"lr-loss", "model-size"} <= set(available_spaces())
    for name in available_spaces():
        for recipe in ("tiny", "resnet34"):
            load_space(name).check(recipe)
