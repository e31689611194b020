"""The README and docs/ as a reader meets them: every page linked, every link resolving, every command and option
they name existing, and every shell block that runs on synthetic data run (a block marked ``bash no-run`` needs a
GPU, real data, the network or minutes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [ROOT / "README.md", *PAGES]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    heading = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def test_the_readme_links_every_page_and_fits_a_first_screen():
    readme = text_of(ROOT / "README.md")
    for page in PAGES:
        assert f"](docs/{page.name})" in readme, page.name
    first_screen = "\n".join(readme.splitlines()[:60])
    for piece in (
        "pip install",
        "compkit demo",
        "val_overlays.png",
        "compkit check-data",
        "compkit submit",
        "| recipe |",
    ):
        assert piece in first_screen, piece
    assert len(readme.splitlines()) < 120


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_link_resolves(document):
    for target in re.findall(r"\]\(([^)\s]+)\)", text_of(document)):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        path = (document.parent / file).resolve() if file else document
        assert path.exists(), f"{document.name}: {target}"
        if anchor and path.suffix == ".md":
            headings = {slug(h) for h in re.findall(r"^#+ (.*)$", text_of(path), re.M)}
            assert anchor in headings, f"{document.name}: {target}"


def command_mentions(text: str) -> list[tuple[str, list[str]]]:
    """Each ``compkit <command> [<sub>]`` in the code of a document (inline and blocks), with the options after it."""
    code = [m.group(2) for m in FENCE.finditer(text)] + re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    found = []
    for piece in code:
        for line in piece.splitlines():
            for part in re.split(r"&&|\|\||;|\|(?=\s)", line.split("  #")[0]):
                match = re.search(r"\bcompkit ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)(.*)", part)
                if match:
                    found.append((match.group(1), re.findall(r"(?<![\w-])--[a-z][a-z-]*", match.group(2))))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_command_and_option_named_exists(document):
    import typer.main

    from compkit.cli import app

    group = typer.main.get_command(app)
    for words, options in command_mentions(text_of(document)):
        name, *rest = words.split()
        assert name in group.commands, f"{document.name}: compkit {words}"
        command = group.commands[name]
        if getattr(command, "commands", None):
            if not rest or rest[0] not in command.commands:
                continue  # the group itself (`compkit weights`, `compkit recipes`)
            command = command.commands[rest[0]]
        known = {o for p in command.params for o in (*p.opts, *getattr(p, "secondary_opts", []))} | {"--help"}
        for option in options:
            assert option in known, f"{document.name}: compkit {words} {option}"


def runnable_blocks(page: Path) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(text_of(page)) if m.group(1).strip() == "bash"]


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in DOCUMENTS if runnable_blocks(p)], ids=lambda p: p.name)
def test_the_shell_blocks_run(page, tmp_path):
    """A page's runnable blocks, in order, in one fresh folder, with nothing downloaded."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COMPKIT_WEIGHTS": str(tmp_path / ".weights"),
        "COMPKIT_CONFIG_DIR": str(tmp_path / ".config"),
        "HF_HOME": str(tmp_path / ".hf"),
        "TORCH_HOME": str(tmp_path / ".torch"),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
    }
    for n, block in enumerate(runnable_blocks(page)):
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, (
            f"{page.name} block {n + 1}:\n{block}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        assert "Traceback" not in done.stderr, f"{page.name} block {n + 1}: {done.stderr[-3000:]}"
