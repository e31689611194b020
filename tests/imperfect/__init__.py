"""The catalogue of valid-but-imperfect inputs (run by ``tests/test_imperfect_inputs.py``).

Real data is untidy but valid: a polygon running out of the frame, a label JSON with a BOM, a palette PNG mask, an
EXIF-rotated JPEG, a mask rewritten after the cache was built, two processes aiming at one output. Each case builds
such an input in its own folder and asserts the *right result*: the mask actually trained on, the rows actually
written, the message actually printed. An exit code alone is never the assertion.

One module per area holds a ``CASES`` list (``polygons``, ``text``, ``images``, ``cache``, ``processes``); a case is
``Case(id, check)`` where ``check(env)`` builds its input under ``env.tmp`` and asserts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from compkit.cli import app


@dataclass
class Env:
    """What a case gets: its own working folder (also the working directory) and the session's shared fixtures."""

    tmp: Path
    request: Any  # pytest's FixtureRequest

    def fixture(self, name: str) -> Any:
        """A session fixture of ``tests/conftest.py`` (``synth_data``, ``fundus_data``, ``trained_tiny_run`` ...),
        built on first use; shared: copy before changing it."""
        return self.request.getfixturevalue(name)

    def cli(self, *args: Any, ok: bool = True):
        """Run ``compkit ARGS`` in-process; with ``ok`` assert it exited 0 (showing its output if not)."""
        result = CliRunner().invoke(app, [str(a) for a in args])
        if ok:
            assert result.exit_code == 0, (
                f"compkit {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}\n{result.exception!r}"
            )
        return result


@dataclass(frozen=True)
class Case:
    id: str
    check: Callable[[Env], None]


def cwd(path: Path) -> None:
    os.chdir(path)
