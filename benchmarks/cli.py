"""CLI start-up: the wall time of `compkit --help`, each `compkit COMMAND --help`, `--version`, `recipes` and a
completion request, next to `python -c pass` in the same run (goal: 0.5 s or less each on 2 cores), and whether
each one imported torch.

Run: .venv/bin/python benchmarks/cli.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

GOAL_S = 0.5
HEAVY = ("torch", "ultralytics", "albumentations", "timm", "segmentation_models_pytorch")
# Runs the CLI as the console script does, then reports which heavy packages the command imported.
PROBE = (
    "import sys\n"
    "from compkit.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "print('HEAVY=' + ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
)


def timed(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, str]:
    """The median wall time of running the CLI with ``argv``, and the heavy packages it imported."""
    code = PROBE.format(heavy=HEAVY)
    times, heavy = [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - started)
        heavy = next((line[6:] for line in done.stderr.splitlines() if line.startswith("HEAVY=")), "?")
    return statistics.median(times), heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from typer.main import get_command

    from compkit.cli import app  # the command list, once, in this process

    commands = sorted(get_command(app).commands)
    env = dict(os.environ)
    started = time.perf_counter()
    for _ in range(args.repeat):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    reference = (time.perf_counter() - started) / args.repeat
    cases = [["--help"], ["--version"], ["recipes"], *([c, "--help"] for c in commands)]
    table = Table(title=f"compkit start-up (median of {args.repeat}); python -c pass: {reference:.3f} s")
    for column in ("command", "seconds", "x python -c pass", f"<= {GOAL_S} s", "heavy imports"):
        table.add_column(column)
    rows = [(" ".join(argv), *timed(argv, env, args.repeat)) for argv in cases]
    completion = {**env, "_COMPKIT_COMPLETE": "complete_bash", "COMP_WORDS": "compkit tr", "COMP_CWORD": "1"}
    rows.append(("(completion: compkit tr<TAB>)", *timed([], completion, args.repeat)))
    for name, seconds, heavy in rows:
        ok = "yes" if seconds <= GOAL_S else "[red]no[/red]"
        table.add_row(name, f"{seconds:.3f}", f"{seconds / reference:.1f}", ok, heavy or "-")
    Console().print(table)


if __name__ == "__main__":
    main()
