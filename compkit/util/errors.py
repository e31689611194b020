"""The one exception type that means "the user's input is wrong" (exit code 2, one line, no traceback), and the
one way to warn: to the console a stage pointed warnings at (:func:`warnings_to`), else stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

REPLACE_FLAG = "--exist-ok"  # the one option that lets a command replace an output it would otherwise refuse
# Consoles warnings go to, innermost last: a stage that keeps its console as a log (train.log) points warnings at it.
_warning_consoles: list[Console] = []


class CompkitError(Exception):
    """Bad input or an impossible request: the CLI prints ``error: <path>: <problem>`` and exits with code 2."""

    exit_code = 2

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def warn(path: str | Path | None, problem: str, console: Console | None = None) -> None:
    """A suspicious input that still has one right reading: one line, ``warning: <path>: <problem>``, on
    ``console``, else the console of the innermost :func:`warnings_to`, else stderr."""
    text = f"{path}: {problem}" if path else problem
    target = console if console is not None else (_warning_consoles[-1] if _warning_consoles else None)
    if target is None:
        print(f"warning: {text}", file=sys.stderr, flush=True)
        return
    from rich.markup import escape

    target.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False)


@contextmanager
def warnings_to(console: Console) -> Iterator[Console]:
    """Within the block, :func:`warn` prints on ``console`` (so a console recorded as a log keeps them)."""
    _warning_consoles.append(console)
    try:
        yield console
    finally:
        _warning_consoles.remove(console)


def first_line(error: BaseException) -> str:
    """An exception's first non-empty line, or its type where it has no message (some libraries raise bare ones)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict for X:" says nothing alone
        return f"{lines[0]} {lines[1]}"
    return lines[0]
