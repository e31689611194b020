"""compkit.util.errors: one way to warn (to the console a stage points warnings at, else stderr)."""

from __future__ import annotations

import io

from rich.console import Console

from compkit.util.errors import warn, warnings_to


def recorded() -> Console:
    return Console(file=io.StringIO(), record=True, width=200)


def test_a_warning_goes_to_stderr_by_default(capsys):
    warn("a/b.json", "odd but readable")
    assert capsys.readouterr().err == "warning: a/b.json: odd but readable\n"


def test_a_warning_goes_to_the_console_a_stage_points_it_at(capsys):
    log, inner = recorded(), recorded()
    with warnings_to(log):
        warn("x.png", "turned as its tag says")
        with warnings_to(inner):
            warn(None, "innermost wins")
        warn(None, "[b]markup[/b] is text")  # a path with brackets must not vanish as markup
    warn(None, "after the block: stderr again")
    assert log.export_text() == "warning: x.png: turned as its tag says\nwarning: [b]markup[/b] is text\n"
    assert inner.export_text() == "warning: innermost wins\n"
    assert capsys.readouterr().err == "warning: after the block: stderr again\n"


def test_an_explicit_console_beats_the_pointed_one():
    log, mine = recorded(), recorded()
    with warnings_to(log):
        warn(None, "for me", mine)
    assert mine.export_text() == "warning: for me\n" and log.export_text() == ""
