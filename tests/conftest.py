from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.console import Console

from compkit.synth import synth


def quiet() -> Console:
    return Console(quiet=True)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A small synthetic dataset shared read-only by the tests (copy it before changing it)."""
    root = tmp_path_factory.mktemp("synth") / "data"
    synth(root, patients=6, test_patients=2, size=96, seed=0, console=quiet())
    return root


@pytest.fixture
def data_copy(synth_data, tmp_path) -> Path:
    """A private copy of the synthetic dataset (and its _gt folder) that a test may break."""
    root = tmp_path / "data"
    shutil.copytree(synth_data, root)
    shutil.copytree(synth_data.with_name("data_gt"), tmp_path / "data_gt")
    return root
