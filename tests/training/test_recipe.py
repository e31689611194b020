from __future__ import annotations

import pytest
import yaml

from compkit.training.recipe import LOCAL, SHIPPED, available_recipes, load_recipe, recipe_origin, shipped_recipes_dir
from compkit.util.errors import CompkitError


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("hrnet", "imagenet"),
        ("effb5", "imagenet"),
        ("vgg19", "imagenet"),
        ("resnet34", "imagenet"),
        ("yolov8-seg", "coco"),
        ("tiny", None),
    ],
)
def test_shipped_recipes_load(name, weights):
    """The GPU recipes start from pretrained weights; tiny trains from scratch, so the demo needs no download."""
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.model.encoder_weights == weights
    assert recipe.data.mean is None and recipe.data.std is None, "normalisation follows the encoder"


def test_available():
    assert {"hrnet", "tiny"} <= set(available_recipes())


def test_hrnet_is_the_seed_report_model():
    r = load_recipe("hrnet")
    assert (r.model.arch, r.model.encoder, r.data.image_size) == ("UnetPlusPlus", "tu-hrnet_w64", 1024)
    assert r.optim.name == "lion" and r.sched.name == "plateau" and r.loss == {"bce": 0.5, "dice": 0.5}
    assert [a["name"] for a in r.aug] == ["HorizontalFlip", "Rotate"] and r.data.clahe is not None


def test_extends_merges_and_child_wins():
    r = load_recipe("effb5")
    assert r.model.encoder == "efficientnet-b5"
    assert r.model.arch == "UnetPlusPlus" and r.data.image_size == 1024  # inherited
    assert r.optim.name == "adam"


def test_set_overrides_parse_yaml():
    r = load_recipe(
        "tiny",
        [
            "train.epochs=3",
            "optim.lr=1e-4",
            "loss={dice: 1.0}",
            "model.params.decoder_channels=[8, 8, 8, 8, 8]",
            "data.clahe={clip_limit: 3}",
        ],
    )
    assert r.train.epochs == 3 and r.optim.lr == 1e-4 and r.loss == {"dice": 1.0}
    assert r.model.params["decoder_channels"] == [8, 8, 8, 8, 8]
    assert r.data.clahe.clip_limit == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", r"train.epoch: unknown key \(did you mean 'epochs'\?\)"),
        ("trian.epochs=3", r"trian: unknown key \(did you mean 'train'\?\)"),
        ("data.clahe.clip=3", r"data.clahe.clip: unknown key \(did you mean 'clip_limit'\?\)"),
        ("optim.name=adamm", r"unknown optimizer 'adamm' \(did you mean 'adam'\?\)"),
        ("sched.name=cosin", r"unknown scheduler 'cosin'"),
        ("loss={bce: 1, dise: 1}", r"unknown loss term 'dise' \(did you mean 'dice'\?\)"),
        ("train.epochs=-1", r"train.epochs: Input should be greater than or equal to 1"),
        ("train.batch_size=many", r"train.batch_size: Input should be a valid integer"),
        ("aug=[{p: 1}]", r"each transform needs a 'name'"),
    ],
)
def test_bad_values_are_one_clear_error(override, message):
    with pytest.raises(CompkitError, match=message):
        load_recipe("tiny", [override])


def test_recipe_files(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"extends": "b.yaml", "train": {"epochs": 2}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"extends": "a.yaml"}))
    with pytest.raises(CompkitError, match="extends itself"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"extends": "tiny", "train": {"epochs": 2}}))
    r = load_recipe(tmp_path / "c.yaml")
    assert r.name == "c" and r.train.epochs == 2 and r.model.encoder == "tu-regnety_002"
    (tmp_path / "bad.yaml").write_text("train: [1, 2")
    with pytest.raises(CompkitError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    with pytest.raises(CompkitError, match=r"no such recipe \(did you mean 'tiny'\?\)"):
        load_recipe("tinny")


def test_resolved_yaml_round_trips(tmp_path):
    r = load_recipe("effb5", ["train.epochs=7"])
    path = tmp_path / "recipe.yaml"
    path.write_text(r.to_yaml())
    again = load_recipe(path)
    assert again.model_dump(exclude={"name"}) == r.model_dump(exclude={"name"})


def test_infer_tta_accepts_every_view_set_the_cli_offers():
    from compkit.inference.views import TTA_VIEWS

    for views in TTA_VIEWS:
        assert load_recipe("tiny", [f"infer.tta={views}"]).infer.tta == views
    with pytest.raises(CompkitError, match="--set: infer.tta=scale: .*did you mean 'scales'"):
        load_recipe("tiny", ["infer.tta=scale"])


def test_a_local_recipe_shadows_a_shipped_one_and_says_so(tmp_path, monkeypatch, capsys):
    shipped = shipped_recipes_dir()
    assert shipped is not None and (shipped / "tiny.yaml").is_file()
    monkeypatch.chdir(tmp_path)
    assert recipe_origin("tiny") == (SHIPPED, None)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.yaml").write_text("extends: tiny  # the shipped tiny\ntrain: {epochs: 3}\n")
    (tmp_path / "recipes" / "mine.yaml").write_text("extends: tiny\n")
    assert recipe_origin("tiny") == (LOCAL, shipped / "tiny.yaml")
    assert recipe_origin("mine") == (LOCAL, None)
    assert {"mine", "tiny", "hrnet"} <= set(available_recipes())
    recipe = load_recipe("tiny")
    assert recipe.train.epochs == 3, "the local one is read"
    assert recipe.data.image_size == load_recipe(shipped / "tiny.yaml").data.image_size, "extending the shipped one"
    load_recipe("mine")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {tmp_path / 'recipes' / 'tiny.yaml'}: shadows the shipped recipe of the same name "
        f"({shipped / 'tiny.yaml'})"
    ], "announced once, in one line"
