"""compkit bundle: the wheels an offline machine needs, installed with no index into a fresh virtual environment
that already has PyTorch (as Kaggle's image has), then a 1-epoch training from that install."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from compkit.stages.bundle import PROFILES, pip_failure, provided, resolve
from compkit.util.errors import CompkitError


def test_profiles_leave_out_what_the_target_has_and_keep_the_rest():
    assert (
        provided("torch", "torch") and provided("nvidia-cudnn-cu13", "torch") and provided("nvidia_nccl_cu13", "torch")
    )
    assert not provided("nvidia-ml-py", "torch") and not provided("timm", "torch") and not provided("numpy", "torch")
    assert provided("numpy", "kaggle") and provided("scikit_learn", "kaggle") and not provided("ultralytics", "kaggle")
    assert set(PROFILES["torch"]) <= set(PROFILES["kaggle"]) and PROFILES["none"] == ()


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal pure-Python wheel that only declares its requirements."""
    info = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", metadata)
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def test_what_the_target_has_is_resolved_around_not_fetched(tmp_path, monkeypatch):
    """A requirement on torch (which pulls a CUDA stack that may not exist for the target's tags) resolves with no
    index at all: torch is a stand-in at the version installed here, and only the rest is to download."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # this machine's own links and constraints stay out
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    index = tmp_path / "index"
    index.mkdir()
    _wheel(index, "needs_torch", "1.0", ["torch>=2", "helper>=1"])
    _wheel(index, "helper", "1.2", [])
    offline = ["--no-index", "--find-links", str(index), "--only-binary=:all:"]
    resolved = resolve("needs_torch", offline, {"torch": "2.14.1+cu130"})
    assert sorted(resolved) == [("helper", "1.2"), ("needs_torch", "1.0")]
    with pytest.raises(CompkitError, match=r"resolve needs_torch.*satisfies the requirement torch>=2"):
        resolve("needs_torch", offline, {})  # without it pip would have to find torch


def test_pip_failures_are_one_line_with_the_cause():
    conflict = (
        "INFO: pip is looking at multiple versions\nERROR: Cannot install compkit because these package versions "
        "have conflicting dependencies.\n\nThe conflict is caused by:\n    torch 2.14.1 depends on nvidia-cudnn==9\n"
        "    torch 2.14.0 depends on nvidia-cudnn==9\n\nTo fix this you could try to:\nERROR: ResolutionImpossible: x"
    )
    assert pip_failure(conflict) == (
        "conflict: torch 2.14.1 depends on nvidia-cudnn==9; torch 2.14.0 depends on nvidia-cudnn==9"
    )
    assert pip_failure("WARNING: x\nERROR: No matching distribution found for foo\n") == (
        "No matching distribution found for foo"
    )


def _with_requirements(names: set[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` and everything they require here, recursively (what a machine with
    them installed has too)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    installed = {
        canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions() if d.metadata["Name"]
    }
    todo, found = [canonicalize_name(n) for n in names], {}
    while todo:
        name = todo.pop()
        if name in found or name not in installed:
            continue
        found[name] = installed[name]
        for text in found[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return list(found.values())


def _provide(names_of: set[str], folder: Path) -> None:
    """The test environment's copies of the torch profile's distributions and what they require (files and
    metadata), linked into ``folder``: a machine with PyTorch installed."""
    folder.mkdir()
    profile = {d.metadata["Name"] for d in importlib.metadata.distributions() if d.metadata["Name"]}
    for dist in _with_requirements({n for n in profile if provided(n, "torch")}):
        names_of.add(dist.metadata["Name"])
        top = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for name in top:
            source = Path(dist.locate_file(name))
            if source.exists() and not (folder / name).exists():
                (folder / name).symlink_to(source)


@pytest.mark.slow
def test_a_bundle_installs_with_no_index_and_trains(tmp_path, trained_tiny_run):
    from compkit.stages.bundle import bundle
    from tests.conftest import quiet

    out = bundle(tmp_path / "bundle", profile="torch", runs=[trained_tiny_run.run], console=quiet())
    assert sorted(p.name for p in (out / "runs" / "tiny").iterdir()) == ["fold0", "fold1"]
    assert not list((out / "runs" / "tiny").glob("fold*/last.pt"))  # inference-only: no training state
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
    if "setuptools" in torch_stack:  # the venv's own older copy would shadow the one PyTorch was installed with
        subprocess.run([venv / "bin" / "pip", "uninstall", "-q", "-y", "setuptools"], check=True)
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
    run("predict", str(out / "runs" / "tiny"), "--data", "data", "--out", "bundled")  # the run that came with it
    assert list((work / "bundled" / "tiny").glob("fold*/test/*"))
    assert {"torch", "torchvision"} <= {n.lower() for n in torch_stack}
