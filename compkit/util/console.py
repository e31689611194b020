"""The console every stage prints to: rich on a terminal or in a notebook; in a pipe (a log file, CI, nohup) wide and
unwrapped, so a table keeps every column and a sentence stays on one line, and without colour codes (rich writes none
where the output is not a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress

PIPE_WIDTH = 1000  # wider than any table compkit prints (29 classes x 8 columns is ~150 characters)
RULE_WIDTH = 100  # a rule spans the terminal, or this much in a pipe


def output_console(**kwargs) -> Console:
    """A rich Console for the command's output (``Console``'s own arguments pass through; an explicit ``width`` or
    ``file`` is kept as given)."""
    console = Console(**kwargs)
    if console.is_terminal or console.is_jupyter or "width" in kwargs or "file" in kwargs:
        return console
    return Console(width=PIPE_WIDTH, soft_wrap=True, **kwargs)


def rule(console: Console, title: str) -> None:
    """A horizontal rule with a title, no wider than :data:`RULE_WIDTH` where the console is a pipe's."""
    from rich.rule import Rule

    console.print(Rule(title), width=min(console.width, RULE_WIDTH) if not console.is_terminal else None)


def transient_progress(console: Console, *columns) -> Progress:
    """A rich progress bar that disappears when done; shown only on a terminal or in a notebook (in a pipe a
    transient bar would leave a blank line behind)."""
    return Progress(*columns, console=console, transient=True, disable=not (console.is_terminal or console.is_jupyter))


def recording_console(console: Console) -> Console:
    """A fresh recording console that prints where ``console`` prints and as it does: a log that holds one part of
    the output only (each trial of a search keeps its own ``train.log``)."""
    return Console(
        file=console.file,
        width=console.width,
        soft_wrap=console.soft_wrap,
        force_terminal=console.is_terminal,
        force_jupyter=console.is_jupyter,
        color_system=console.color_system,
        no_color=console.no_color,
        quiet=console.quiet,
        record=True,
    )
