"""The command line as a user meets it: real subcommands, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from compkit.cli import app
from tests.conftest import copy_run

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_synth_split_encode_score(tmp_path):
    data = tmp_path / "d"
    assert run("synth", data, "--patients", 6, "--test-patients", 2, "--size", 64).exit_code == 0
    result = run("split", data, "--folds", 3, "--stratify", "sex")
    assert result.exit_code == 0 and "StratifiedGroupKFold" in result.stdout
    assert json.loads((data / "splits.json").read_text())["stratify"] == "sex"
    out = tmp_path / "perfect.csv"
    assert run("encode-labels", data, "--out", out).exit_code == 0
    result = run("score", out, "--data", data)
    assert result.exit_code == 0
    assert result.stdout.strip().splitlines()[-1] == "mean dice: 1.0000"


def test_broken_submission_exits_2(data_copy, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image_name,class,rle\nx.png,finger-1,1 2 3\n")
    assert_one_line_error(run("score", bad, "--data", data_copy), str(bad), "line 2")


def test_missing_folder(tmp_path):
    assert_one_line_error(run("split", tmp_path / "nope"), "dataset folder not found")


def test_unreadable_image(data_copy, tmp_path):
    out = tmp_path / "labels.csv"
    image = next((data_copy / "test" / "DCM").rglob("*.png"))
    image.write_bytes(b"not a png")
    assert_one_line_error(run("encode-labels", data_copy, "--out", out), str(image), "unreadable image")
    assert not out.exists()


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d.pop("annotations"), "no 'annotations' list"),
        (lambda d: d["annotations"][0].update(label="Thumb"), "unknown label 'Thumb'"),
        (lambda d: d["annotations"][1].update(points=[[0, 0]]), "needs at least 3"),
    ],
)
def test_bad_labels(data_copy, edit, problem):
    path = sorted((data_copy / "train" / "outputs_json").rglob("*.json"))[2]
    label = json.loads(path.read_text())
    edit(label)
    path.write_text(json.dumps(label))
    assert_one_line_error(run("split", data_copy), str(path), problem)
    assert not (data_copy / "splits.json").exists()


def test_image_without_json(data_copy):
    next((data_copy / "train" / "outputs_json").rglob("*.json")).unlink()
    assert_one_line_error(run("split", data_copy), "no label JSON")


def test_meta_without_columns(data_copy):
    (data_copy / "meta_data.xlsx").unlink()
    (data_copy / "meta_data.csv").write_text("patient,age\n1,3\n")
    assert_one_line_error(run("split", data_copy), "meta_data.csv", "no ID column")


def test_unwritable_output(data_copy, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_line_error(run("encode-labels", data_copy, "--out", blocker / "x.csv"), "cannot write")


@pytest.mark.slow
def test_python_dash_m_entry_point(tmp_path):
    """The installed entry point, as a separate process: help works, errors are one line and exit 2."""
    done = subprocess.run([sys.executable, "-m", "compkit", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "synth" in done.stdout and "score" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "compkit", "split", str(tmp_path / "none")], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {tmp_path / 'none'}: dataset folder not found"


def test_train_bad_recipe_value(data_copy):
    result = run("train", "--recipe", "tiny", "--data", data_copy, "--set", "optim.name=adamm")
    assert_one_line_error(result, "error: --set: optim.name=adamm", "unknown optimizer 'adamm' (did you mean 'adam'?)")


def test_train_incompatible_model(data_copy):
    run("split", data_copy, "--folds", "2")
    result = run(
        "train",
        "--recipe",
        "tiny",
        "--data",
        data_copy,
        "--set",
        "model.arch=UnetPlusPlus",
        "--set",
        "model.encoder=mit_b0",
    )
    assert_one_line_error(result, "UnetPlusPlus cannot be built with encoder mit_b0")
    assert not (data_copy / ".compkit-cache").exists(), "failed before any work"


def test_predict_ensemble_submit_errors(tmp_path, data_copy):
    assert_one_line_error(run("predict", tmp_path), "not a run or fold folder")
    assert_one_line_error(run("ensemble", tmp_path / "runs" / "none"), "not found")
    assert_one_line_error(run("ensemble", f"{tmp_path}/runs/*"), "matches nothing: no runs yet", "compkit train")
    assert_one_line_error(run("submit", "--ensembles-dir", tmp_path / "nothing"), "no ensemble found")
    result = run("ensemble", tmp_path / "a.csv", "--weights", "1,x")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_train_predict_ensemble_submit_commands(trained_tiny_run, tmp_path):
    """On a copy of the session's trained run (predicting rewrites its stores)."""
    data = trained_tiny_run.data
    tiny = copy_run(trained_tiny_run.run, tmp_path / "runs" / "tiny")
    assert run("predict", tiny, "--tta", "d4", "--exist-ok").exit_code == 0
    assert (
        run("predict", tiny / "fold0", "--split", "val", "--window", "32", "--overlap", "0.5", "--exist-ok").exit_code
        == 0
    )
    result = run("ensemble", tiny, "--name", "cli", "--out-dir", tmp_path / "ens")
    assert result.exit_code == 0, result.output
    out = tmp_path / "sub.csv"
    result = run("submit", "--ensembles-dir", tmp_path / "ens", "--out", out, "--threshold", "0.5")
    assert result.exit_code == 0, result.output
    assert run("score", out, "--data", data).exit_code == 0


def test_predict_a_run_with_an_aux_head(trained_fundus_aux, tmp_path):
    """A classification head's weights come last in the state dict: the model is still rebuilt for the masks."""
    fold = copy_run(trained_fundus_aux.run / "fold0", tmp_path / "runs" / "tiny" / "fold0")
    assert run("predict", fold, "--tta", "none", "--exist-ok").exit_code == 0


@pytest.mark.slow
def test_version_and_shell_completion():
    from importlib.metadata import version

    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"compkit {version('compkit')}"
    # As installed: the completion script of the `compkit` program (python -m compkit runs the same main()).
    completion = subprocess.run(
        [sys.executable, "-m", "compkit", "--show-completion", "bash"], capture_output=True, text=True, timeout=120
    )
    assert completion.returncode == 0, completion.stderr
    assert (
        "_COMPKIT_COMPLETE=complete_bash" in completion.stdout
        and "complete -o default -F _compkit_completion compkit" in completion.stdout
    )


def test_every_subcommand_help_follows_one_convention():
    from compkit.inference.views import TTA_VIEWS

    wide = CliRunner(env={"COLUMNS": "200"})
    commands = [
        "synth",
        "check-data",
        "export",
        "split",
        "score",
        "encode-labels",
        "train",
        "predict",
        "ensemble",
        "submit",
        "pseudo",
        "augment",
        "eda",
        "inspect",
        "demo",
        "recipes",
        "weights",
    ]
    helps = {c: wide.invoke(app, [c, "--help"]).stdout for c in commands}
    assert all(h.strip() for h in helps.values())
    for command, text in helps.items():
        assert "--runs-dir" not in text and "--out-dir" not in text, command  # old names are hidden aliases
        for flag in ("--force", "--exist-ok", "--resume", "--write", "--soft", "--flip"):
            if flag + " " in text:
                assert "--no-" + flag[2:] in text, (command, flag)
    assert "|".join(TTA_VIEWS) in helps["predict"]
    assert "test|val" in helps["predict"] and "val|test" in helps["inspect"] and "soft|hard" in helps["ensemble"]
    assert "test|train" in helps["score"] and "handbone|fundus|isic" in helps["synth"]
    assert (
        "--device" in helps["train"]
        and "--device" in helps["predict"]
        and "--out" in helps["train"]
        and "--out" in helps["ensemble"]
    )


def test_exist_ok_is_the_one_word_for_replacing_an_output(tmp_path):
    wide = CliRunner(env={"COLUMNS": "200"})
    replacing = ["synth", "check-data", "split", "plan", "train", "predict", "ensemble", "pseudo", "augment"]
    replacing += ["eda", "inspect"]
    for command in [[c] for c in replacing] + [["recipes", "copy"]]:
        text = wide.invoke(app, [*command, "--help"]).stdout
        assert "--exist-ok" in text and "--force" not in text, command  # --force: a hidden older name
    data = tmp_path / "d"
    made = ["synth", data, "--patients", 3, "--test-patients", 0, "--size", 64]
    assert run(*made).exit_code == 0
    assert_one_line_error(run(*made, "--seed", 1), str(data), "already exists")

    def images() -> dict:
        return {p.relative_to(data): p.read_bytes() for p in sorted(data.rglob("*.png"))}

    seed_0 = images()
    assert run(*made, "--seed", 1, "--exist-ok").exit_code == 0
    seed_1 = images()
    assert seed_1 != seed_0, "--exist-ok replaced it"
    assert run(*made, "--force").exit_code == 0
    assert images() == seed_0, "--force, the older name, replaced it too"
    assert run("split", "--data", data, "--folds", 2).exit_code == 0
    assert_one_line_error(run("split", "--data", data, "--folds", 3), "splits.json")
    assert run("split", "--data", data, "--folds", 3, "--exist-ok").exit_code == 0
    assert len(json.loads((data / "splits.json").read_text())["folds"]) == 3
    assert run("split", "--data", data, "--folds", 2, "--force").exit_code == 0
    assert len(json.loads((data / "splits.json").read_text())["folds"]) == 2


def test_recipes_list_show_and_copy(tmp_path):
    import yaml

    from compkit.training.recipe import available_recipes, load_recipe

    wide = CliRunner(env={"COLUMNS": "200"})
    listed = wide.invoke(app, ["recipes"])
    assert listed.exit_code == 0
    for name in available_recipes():
        assert f"│ {name} " in listed.stdout
    assert "A small U-Net that learns the synthetic hand bones" in listed.stdout
    shown = run("recipes", "show", "resnet34", "--set", "train.epochs=7")
    resolved = yaml.safe_load(shown.stdout)
    assert (
        resolved["train"]["epochs"] == 7
        and resolved["model"]["encoder"] == "resnet34"
        and resolved["infer"]["tta"] == "hflip"
    )
    mine = tmp_path / "mine.yaml"
    copied = run("recipes", "copy", "resnet34", mine)
    assert copied.exit_code == 0 and f"next: compkit train --recipe {mine}" in " ".join(copied.stdout.split())
    assert load_recipe(mine).model_dump(exclude={"name"}) == load_recipe("resnet34").model_dump(exclude={"name"})
    assert_one_line_error(run("recipes", "copy", "resnet34", mine), str(mine), "--exist-ok")


def test_a_bad_set_names_set_not_the_recipe_file(tmp_path):
    assert_one_line_error(
        run("train", "--recipe", "tiny", "--set", "train.epoch=3", "--out", tmp_path / "runs"),
        "error: --set: train.epoch=3",
        "did you mean 'epochs'",
    )
    assert not (tmp_path / "runs").exists()


def test_readme_command_table_lists_every_command():
    from pathlib import Path

    import typer.main

    readme = (Path(__file__).parent.parent / "docs" / "commands.md").read_text(encoding="utf-8")
    table = readme[readme.index("| command | what it does | writes |") :].split("\n\n")[0]
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None)
        for sub in subcommands or [None]:
            assert f"`compkit {name}" + (f" {sub}" if sub else "") in table, (name, sub)


def test_data_is_one_option_everywhere_and_the_positional_form_still_works(tmp_path):
    data = tmp_path / "d"
    assert run("synth", data, "--patients", 4, "--test-patients", 0, "--size", 64).exit_code == 0
    result = run("split", "--data", data, "--folds", 2)
    assert result.exit_code == 0 and (data / "splits.json").is_file()
    assert run("split", data, "--folds", 2, "--force").exit_code == 0  # the older positional form
    assert_one_line_error(run("eda", "--out", tmp_path / "r"), "error: --data: missing: pass --data DATA")
    assert_one_line_error(run("split", data, "--data", tmp_path / "other"), "error: --data: the dataset is given twice")
    for command in (
        "check-data",
        "split",
        "encode-labels",
        "augment",
        "eda",
        "train",
        "predict",
        "ensemble",
        "submit",
        "score",
        "inspect",
        "pseudo",
    ):
        assert "--data" in CliRunner(env={"COLUMNS": "200"}).invoke(app, [command, "--help"]).stdout, command


def test_help_and_recipes_answer_without_torch():
    """--help, a command's --help and the recipe listing import none of the heavy libraries (they start in 0.2 s)."""
    heavy = ("torch", "ultralytics", "albumentations", "timm", "segmentation_models_pytorch")
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom compkit.cli import app\n"
        "for args in (['--help'], ['predict', '--help'], ['train', '--help'], ['recipes']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"imported {done.stdout.strip()}"


def test_help_lists_commands_in_pipeline_order_with_readable_value_names():
    import re

    import typer.main

    from compkit.cli import COMMAND_ORDER

    wide = CliRunner(env={"COLUMNS": "200"})
    listed = wide.invoke(app, ["--help"]).stdout
    shown = [name for name in re.findall(r"^│ ([a-z-]+) ", listed, re.M) if name in COMMAND_ORDER]
    assert shown[:7] == ["demo", "synth", "check-data", "eda", "split", "plan", "train"]
    assert shown.index("train") < shown.index("predict") < shown.index("ensemble") < shown.index("submit")
    assert shown.index("submit") < shown.index("score") < shown.index("encode-labels")
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for sub in getattr(command, "commands", None) or [None]:
            args = [name, *([sub] if sub else []), "--help"]
            text = wide.invoke(app, args).stdout
            assert not re.search(r"<(bool|int|str|float|path|list\[[^]]*\])>", text, re.I), args
    train_help = " ".join(wide.invoke(app, ["train", "--help"]).stdout.split())
    assert "--set KEY=VALUE" in train_help.replace("│", "").replace("  ", " ") or "KEY=VALUE" in train_help
    assert "--epochs" in train_help and "--imgsz" in train_help and "--batch" in train_help


def test_several_key_value_pairs_after_one_set_and_ultralytics_shortcuts():
    import yaml

    shown = run("recipes", "show", "tiny", "--set", "train.epochs=7", "optim.lr=0.01", "imgsz=128", "batch=3")
    assert shown.exit_code == 0, shown.output
    resolved = yaml.safe_load(shown.stdout)
    assert resolved["train"]["epochs"] == 7 and resolved["optim"]["lr"] == 0.01
    assert resolved["data"]["image_size"] == 128 and resolved["train"]["batch_size"] == 3
    assert_one_line_error(run("recipes", "show", "tiny", "oops"), "oops: unexpected argument", "KEY=VALUE")
    assert_one_line_error(
        run("recipes", "show", "tiny", "--bogus"), "No such option: --bogus", "(see compkit recipes show --help)"
    )


def test_train_trains_every_fold_by_default_and_records_the_shortcuts_as_overrides(tmp_path, synth_data):
    from tests.conftest import copy_dataset

    data = copy_dataset(synth_data, tmp_path / "d")
    assert run("split", "--data", data, "--folds", 2).exit_code == 0
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app,
        ["train", "--recipe", "tiny", "--data", str(data), "--out", str(tmp_path / "runs"), "--epochs", "1"]
        + ["--imgsz", "64", "--batch", "4", "train.workers=0", "infer.tta=none"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    for k in (0, 1):
        record = json.loads((run_dir / f"fold{k}" / "run.json").read_text())
        assert {"train.epochs=1", "data.image_size=64", "train.batch_size=4", "train.workers=0"} <= set(
            record["overrides"]
        )
        assert record["recipe"]["train"]["epochs"] == 1 and record["recipe"]["data"]["image_size"] == 64
    cv = json.loads((run_dir / "cv.json").read_text())
    assert [f["fold"] for f in cv["folds"]] == [0, 1]
    assert f"next: compkit ensemble {run_dir}" in " ".join(result.stdout.split())
