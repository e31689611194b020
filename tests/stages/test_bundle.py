"""compkit bundle: the wheels an offline machine needs, installed with no index into a fresh virtual environment
that already has PyTorch (as Kaggle's image has), then a 1-epoch training from that install."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compkit.stages.bundle import PROFILES, provided


def test_profiles_leave_out_what_the_target_has_and_keep_the_rest():
    assert (
        provided("torch", "torch") and provided("nvidia-cudnn-cu13", "torch") and provided("nvidia_nccl_cu13", "torch")
    )
    assert not provided("nvidia-ml-py", "torch") and not provided("timm", "torch") and not provided("numpy", "torch")
    assert provided("numpy", "kaggle") and provided("scikit_learn", "kaggle") and not provided("ultralytics", "kaggle")
    assert set(PROFILES["torch"]) <= set(PROFILES["kaggle"]) and PROFILES["none"] == ()


def _provide(names_of: set[str], folder: Path) -> None:
    """The test environment's copies of these distributions (files and metadata), linked into ``folder``."""
    folder.mkdir()
    for dist in importlib.metadata.distributions():
        if dist.metadata["Name"] is None or not provided(dist.metadata["Name"], "torch"):
            continue
        names_of.add(dist.metadata["Name"])
        top = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for name in top:
            source = Path(dist.locate_file(name))
            if source.exists() and not (folder / name).exists():
                (folder / name).symlink_to(source)


@pytest.mark.slow
def test_a_bundle_installs_with_no_index_and_trains(tmp_path):
    from compkit.stages.bundle import bundle
    from tests.conftest import quiet

    out = bundle(tmp_path / "bundle", profile="torch", console=quiet())
    wheels = sorted(p.name for p in (out / "wheels").iterdir())
    assert any(w.startswith("compkit-") for w in wheels) and any(w.startswith("timm-") for w in wheels)
    assert not any(w.startswith(("torch-", "nvidia_cudnn", "triton-")) for w in wheels)
    assert "--no-index --find-links bundle/wheels compkit" in (out / "INSTALL.md").read_text()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    torch_stack: set[str] = set()
    _provide(torch_stack, tmp_path / "preinstalled")
    (site / "preinstalled.pth").write_text(str(tmp_path / "preinstalled") + "\n")
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}  # no index, no machine-wide links
    env.pop("PIP_FIND_LINKS", None)
    subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--no-index", "--find-links", out / "wheels", "compkit"],
        check=True,
        env=env,
    )
    compkit = str(venv / "bin" / "compkit")
    work = tmp_path / "work"
    work.mkdir()

    def run(*args):
        done = subprocess.run([compkit, *args], cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "compkit" in run("--version")
    run("synth", "data", "--patients", "4", "--test-patients", "1", "--size", "64")
    run("split", "--data", "data", "--folds", "2")
    run("train", "--recipe", "tiny", "--data", "data", "--set", "train.epochs=1", "--set", "data.image_size=64")
    assert (work / "runs" / "tiny" / "fold0" / "best.pt").is_file()
    assert {"torch", "torchvision"} <= {n.lower() for n in torch_stack}
