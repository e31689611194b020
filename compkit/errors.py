"""The one exception type that means "the user's input is wrong" (exit code 2, one line, no traceback)."""
from __future__ import annotations

from pathlib import Path


class CompkitError(Exception):
    """Bad input or an impossible request: the CLI prints ``error: <path>: <problem>`` and exits with code 2."""

    exit_code = 2

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
