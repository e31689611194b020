"""The Python API as docs/python-api.md and docs/kaggle.md show it: its example, and the offline Kaggle inference notebook run as a script
against read-only copies of a trained run and a dataset."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import compkit
from compkit.data import open_dataset
from compkit.stores.probabilities import Store
from compkit.submission.layouts import validate
from tests.conftest import csv_rows, quiet

DOCS = Path(__file__).parent.parent / "docs"


def docs_block(marker: str) -> str:
    """The Python block after ``<!-- marker -->`` in the docs pages."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))
    return re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", text, re.S).group(1)


def test_import_is_light_and_commands_are_callable():
    code = "import sys, compkit; assert 'torch' not in sys.modules, 'import compkit loaded torch'; assert callable(compkit.train)"
    subprocess.run([os.sys.executable, "-c", code], check=True)
    import compkit.stages.train as module  # importing the stage module does not shadow the API name

    assert compkit.train is module.train and compkit.inspect.__module__ == "compkit.stages.inspect"
    assert all(callable(getattr(compkit, name)) for name in compkit.__all__ if name != "__version__")
    with pytest.raises(AttributeError):
        compkit.no_such_thing  # noqa: B018


def test_importing_compkit_changes_nothing_in_the_host_process():
    """No environment variable set, no matplotlib backend chosen (pyplot never imported), the hub's settings kept."""
    code = """
import os, sys
import cv2, torch  # their own import effects (OpenCV's loader sets LD_LIBRARY_PATH) are not compkit's
import huggingface_hub.constants as hub
environment, hub_settings = dict(os.environ), (hub.HF_HUB_CACHE, hub.HF_HUB_OFFLINE)
import compkit, compkit.cli, compkit.util.plots, compkit.training.results, compkit.stages.eda, compkit.stages.train
import compkit.pretrained.weights, compkit.families
changed = sorted(k for k in set(os.environ) | set(environment) if os.environ.get(k) != environment.get(k))
assert not changed, changed
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported: a backend would be chosen"
assert (hub.HF_HUB_CACHE, hub.HF_HUB_OFFLINE) == hub_settings
"""
    env = {k: v for k, v in os.environ.items() if k not in ("YOLO_OFFLINE", "ULTRALYTICS_SAFE_LOAD", "MPLBACKEND")}
    subprocess.run([os.sys.executable, "-c", code], check=True, env=env)


@pytest.mark.slow
def test_the_readme_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(docs_block("api-example"), "README api-example", "exec"), namespace)
    folds, probs, image = namespace["folds"], namespace["probs"], namespace["image"]
    assert len(folds) == 2 and list(folds.table.columns)[:2] == ["fold", "best_dice"]
    assert probs.shape == (29, *image.shape[:2]) and probs.dtype == np.float32
    # The same numbers as the stores training wrote: each fold's test probabilities, resampled, averaged.
    test = open_dataset(namespace["data"], "test")
    image_id = next(
        s.image_id
        for s in test.samples
        if (test.root / "test" / "DCM" / s.image_id).samefile(next(namespace["data"].glob("test/DCM/*/*.png")))
    )
    stores = [Store(f / "test").read(image_id, image.shape[:2]) for f in sorted(folds.run_dir.glob("fold*"))]
    assert np.abs(probs - np.mean(stores, axis=0)).max() < 3 / 255, "load_run predicts what training predicted"
    assert namespace["csv"].read_text().startswith("image_name,class,rle")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def read_only(tmp_path):
    """Makes folders read-only: a read-only bind mount where possible (root ignores file modes), else modes."""
    mounted: list[Path] = []

    def protect(folder: Path) -> Path:
        target = folder.with_name(folder.name + "-ro")
        target.mkdir()
        if (
            os.geteuid() == 0
            and not subprocess.run(["mount", "--bind", str(folder), str(target)], capture_output=True).returncode
        ):
            mounted.append(target)
            if not subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], capture_output=True).returncode:
                return target
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
        return folder if not mounted or mounted[-1] != target else target

    yield protect
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_the_kaggle_inference_notebook_runs_on_read_only_inputs(trained_tiny_run, tmp_path, monkeypatch, read_only):
    inputs = tmp_path / "input"
    data = Path(
        shutil.copytree(
            trained_tiny_run.data, inputs / "data", ignore=shutil.ignore_patterns(".compkit-cache", "splits.json")
        )
    )
    shutil.copytree(trained_tiny_run.data.with_name("data_gt"), inputs / "data_gt")
    runs = inputs / "runs"
    shutil.copytree(trained_tiny_run.run, runs / "tiny")  # recipes still name the training machine's data path
    data, runs = read_only(data), read_only(runs)
    work = tmp_path / "working"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("COMPKIT_CACHE", str(tmp_path / "home-cache"))
    before = snapshot(data) | snapshot(runs)
    script = docs_block("kaggle-inference")
    script = re.sub(r'DATA = ".*?"', f"DATA = {str(data)!r}", script)
    script = re.sub(r'RUNS = ".*?"', f"RUNS = {str(runs)!r}", script)
    script = re.sub(r'WORK = ".*?"', f"WORK = {str(work)!r}", script).replace("hrnet", "tiny")
    namespace: dict = {}
    exec(compile(script, "README kaggle-inference", "exec"), namespace)
    assert compkit.split(data, folds=2, out=work / "splits.json") == work / "splits.json", (
        "splits of read-only data go elsewhere"
    )
    submission = work / "submission.csv"
    rows = validate(submission, open_dataset(data, "test"))
    assert len(rows) == 4 * 29
    assert snapshot(data) | snapshot(runs) == before, "nothing written under the read-only inputs"
    assert any((tmp_path / "home-cache").iterdir()), "the preprocessing cache went to the user's cache folder"
    assert (work / "predictions" / "tiny" / "fold0" / "test" / "index.json").is_file()
    assert (work / "predictions" / "tiny" / "fold0" / "recipe.yaml").is_file(), (
        "the predictions are a run folder of their own"
    )
    # The same submission as the local pipeline's: the run's out-of-fold stores came along, so the ensemble tuned
    # the same thresholds and postprocessing (not 0.5).
    assert (work / "predictions" / "tiny" / "fold0" / "oof" / "index.json").is_file()
    local = compkit.ensemble([trained_tiny_run.run], name="local", out=tmp_path / "local", console=quiet())
    assert (local / "thresholds.json").is_file()
    expected = compkit.submit(local, data=data, out=tmp_path / "local.csv", console=quiet())
    assert csv_rows(submission) == csv_rows(expected), "the notebook's submission is the local one, row for row"
