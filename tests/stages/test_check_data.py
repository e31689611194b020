"""``compkit check-data``: what compkit sees in a folder, and the dataset.yaml it proposes and writes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from compkit.data import open_dataset
from compkit.stages.check_data import check_data, description_text
from compkit.util.errors import CompkitError
from tests.conftest import quiet
from tests.layouts import drive, kaggle_wide_dicom, read_only_modes, write_gif


def recording(tmp_path) -> tuple[Console, callable]:
    console = Console(file=io.StringIO(), width=200)
    return console, console.file.getvalue


def test_proposes_and_writes_the_drive_description(tmp_path):
    root = drive(tmp_path / "DRIVE")
    write_gif(root / "training" / "1st_manual" / "99_manual1.gif", np.eye(8, dtype=np.uint8))  # a label without image
    (root / "training" / "1st_manual" / "24_manual1.gif").unlink()  # an image without label
    (root / "training" / "mask" / "24_training_mask.gif").unlink()
    console, text = recording(tmp_path)
    report = check_data(root, console=console)
    out = text()
    assert report["splits"]["train"]["unlabelled"] == ["24_training.tif"]
    assert "1 training images have no labels: training stops until the description says missing: empty" in out
    (root / "training" / "images" / "24_training.tif").unlink()
    console, text = recording(tmp_path)
    report = check_data(root, console=console)
    out = text()
    assert not report["sure"] and report["format"] == "pairs"
    proposal = report["proposal"]
    assert len(proposal.splitlines()) <= 15
    assert (
        "labels:\n  1st_manual: ../1st_manual/{id}_manual1.gif\nignore:\n  outside: ../mask/{stem}_mask.gif" in proposal
    )
    assert "not sure how to read" in out and "write it with `compkit check-data" in out
    train = report["splits"]["train"]
    assert train["images"] == 3 and train["classes"]["1st_manual"]["images"] == 3
    assert train["unmatched_labels"] == ["training/1st_manual/99_manual1.gif"]
    assert train["mask_values"] == {"1st_manual/*.gif": [0, 255], "mask/*.gif": [0, 255]}
    assert train["sizes"] == {"64x72": 3} and train["kinds"] == {"8-bit RGB": 3}
    assert report["splits"]["test"]["labelled"] == 2

    written = check_data(root, write=True, console=quiet())
    assert written["written"] == root / "dataset.yaml" and (root / "dataset.yaml").read_text() == proposal
    dataset = open_dataset(root)
    assert (
        dataset.format_name == "described"
        and len(dataset) == 3
        and dataset.read_ignore(dataset.samples[0], (72, 64)) is not None
    )
    again = check_data(root, console=quiet())
    assert again["sure"] and again["format"] == "described" and again["proposal"] is None
    with pytest.raises(CompkitError, match="already exists"):
        check_data(root, write=True, console=quiet())
    (root / "dataset.yaml").write_text(proposal + "# edited\n")
    assert check_data(root, write=True, exist_ok=True, console=quiet())["written"] == root / "dataset.yaml"
    assert "# edited" not in (root / "dataset.yaml").read_text(), "exist_ok replaced it"


def test_out_writes_the_description_of_read_only_data_elsewhere(tmp_path):
    root = drive(tmp_path / "DRIVE")
    files = sorted(p for p in root.rglob("*"))
    target = tmp_path / "work" / "dataset.yaml"
    with read_only_modes(root):
        with pytest.raises(CompkitError, match="is read-only: pass --out FILE"):
            check_data(root, write=True, console=quiet())
        console, text = recording(tmp_path)
        report = check_data(root, out=target, console=console)
        assert report["written"] == target and f"pass --data {target}" in text()
        assert sorted(p for p in root.rglob("*")) == files, "nothing written into the data"
        description = target.read_text()
        assert "root: ../DRIVE\n" in description and "outside: ../mask/{stem}_mask.gif" in description
        train, test = open_dataset(target), open_dataset(target, "test")
        assert train.root.resolve() == root and len(train) == 4 and len(test) == 2
        assert train.read_ignore(train.samples[0], (72, 64)) is not None
        with pytest.raises(CompkitError, match="already exists"):
            check_data(root, out=target, console=quiet())


def test_root_is_relative_unless_only_the_file_system_root_is_shared():
    assert "root: ../input/DRIVE\n" in description_text(
        Path("/kaggle/input/DRIVE"), {"format": "pairs"}, [], Path("/kaggle/working/d.yaml")
    )
    assert "root: /data/DRIVE\n" in description_text(Path("/data/DRIVE"), {"format": "pairs"}, [], Path("/work/d.yaml"))
    assert "root:" not in description_text(
        Path("/data/DRIVE"), {"format": "pairs"}, [], Path("/data/DRIVE/dataset.yaml")
    )


def test_rle_order_is_explained_and_written(tmp_path):
    root = kaggle_wide_dicom(tmp_path / "comp")
    console, text = recording(tmp_path)
    report = check_data(root, write=True, console=console)
    out = text()
    assert report["sure"] and report["format"] == "rlecsv"
    assert "RLE order C: square images" in out and "merged into one mask each" in out
    assert report["splits"]["train"]["kinds"] == {"DICOM 12-bit MONOCHROME1": 6}
    description = (root / "dataset.yaml").read_text()
    assert "rle:\n  file: train.csv\n  order: C\n" in description
    assert open_dataset(root).rle_order == "C"


def test_cli_nothing_to_read(tmp_path):
    (tmp_path / "readme.txt").write_text("no images")
    done = subprocess.run(
        [sys.executable, "-m", "compkit", "check-data", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "found no layout compkit can read" in done.stderr


def test_cli_write_into_read_only_data_is_one_line_and_out_writes_elsewhere(tmp_path):
    from typer.testing import CliRunner

    from compkit.cli import app

    root = drive(tmp_path / "DRIVE")
    runner = CliRunner(env={"COLUMNS": "200"})
    with read_only_modes(root):
        refused = runner.invoke(app, ["check-data", "--data", str(root), "--write"])
        assert refused.exit_code == 2 and refused.stderr.strip().count("\n") == 0 and "Traceback" not in refused.output
        assert refused.stderr.startswith(f"error: {root / 'dataset.yaml'}: {root} is read-only: pass --out FILE")
        assert not (root / "dataset.yaml").exists()
        written = runner.invoke(app, ["check-data", "--data", str(root), "--out", str(tmp_path / "d.yaml")])
        assert written.exit_code == 0 and "root: DRIVE\n" in (tmp_path / "d.yaml").read_text()


def test_says_how_patients_are_grouped_and_what_comes_next(tmp_path, synth_data):
    console, text = recording(tmp_path)
    report = check_data(synth_data, console=console)
    dataset = open_dataset(synth_data)
    patients = len({s.patient for s in dataset.samples})
    assert report["patients"] == {"images": len(dataset), "patients": patients, "by": dataset.patients_from}
    out = " ".join(text().split())
    assert f"{len(dataset)} training images of {patients} patients, grouped by the patient folder" in out
    assert out.endswith(f"next: compkit split --data {synth_data}")

    # DRIVE-like data, read-only, one image per patient: said so, and the next step writes beside it.
    root = drive(tmp_path / "DRIVE")
    with read_only_modes(root):
        console, text = recording(tmp_path)
        check_data(root, console=console)
    out = " ".join(text().split())
    assert "every training image is its own group (each image's own id)" in out
    assert out.endswith("next: the command above, then compkit split --data dataset.yaml --out splits.json")
