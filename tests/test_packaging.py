"""The built wheel holds what an installed compkit needs: every module and every shipped recipe."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_every_module_and_recipe(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("compkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = sorted(p.relative_to(ROOT / "recipes").as_posix() for p in (ROOT / "recipes").rglob("*.yaml"))
    assert recipes and {f"compkit/recipes/{name}" for name in recipes} <= names  # search spaces (spaces/) too
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "compkit").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
