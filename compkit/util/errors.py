"""The one exception type that means "the user's input is wrong" (exit code 2, one line, no traceback)."""
from __future__ import annotations

import sys
from pathlib import Path


class CompkitError(Exception):
    """Bad input or an impossible request: the CLI prints ``error: <path>: <problem>`` and exits with code 2."""

    exit_code = 2

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def warn(path: str | Path | None, problem: str) -> None:
    """A suspicious input that still has one right reading: one line on stderr, ``warning: <path>: <problem>``."""
    print(f"warning: {path}: {problem}" if path else f"warning: {problem}", file=sys.stderr, flush=True)


def first_line(error: BaseException) -> str:
    """An exception's first non-empty line, or its type where it has no message (some libraries raise bare ones)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict for X:" says nothing alone
        return f"{lines[0]} {lines[1]}"
    return lines[0]
