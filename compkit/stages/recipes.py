"""``compkit recipes``: the recipes compkit finds (one line each), one resolved recipe, or a copy to start one's own."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from compkit.training.recipe import available_recipes, find_recipe, load_recipe, recipe_origin
from compkit.util.console import output_console
from compkit.util.errors import REPLACE_FLAG, CompkitError
from compkit.util.fileio import read_text


def describe(path: Path) -> str:
    """A recipe file's one-line description: the first sentence of its leading comment."""
    lines = []
    for line in read_text(path).splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    return text.split(". ")[0].rstrip(".") if text else ""


def list_recipes(console: Console | None = None) -> list[str]:
    """Print every recipe name with where it comes from (shipped, ./recipes), its description, resolution, model and
    batch; return the names."""
    console = console or output_console()
    table = Table(title="recipes (compkit recipes show NAME; compkit recipes copy NAME FILE)")
    for column in ("name", "from", "model", "size", "batch", "description"):
        table.add_column(column)
    names = available_recipes()
    for name in names:
        path = find_recipe(name)
        recipe = load_recipe(path)
        origin, shadowed = recipe_origin(name)
        origin += " (shadows the shipped one)" if shadowed is not None else ""
        model = f"{recipe.model.arch}/{recipe.model.encoder}" if recipe.model.encoder else recipe.model.arch
        row = (name, origin, model, str(recipe.data.image_size), str(recipe.train.batch_size), describe(path))
        table.add_row(*row)
    console.print(table)
    return names


def show(name: str, overrides: list[str] | tuple[str, ...] = (), console: Console | None = None) -> str:
    """Print the fully resolved recipe (``extends`` merged, ``--set`` applied, every default filled in) as YAML."""
    console = console or output_console()
    text = yaml.safe_dump(load_recipe(name, overrides).model_dump(mode="json"), sort_keys=False)
    console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    return text


def copy(name: str, file: Path, exist_ok: bool = False, console: Console | None = None) -> Path:
    """Copy a recipe file (as written, with its ``extends:``) to ``file`` to start one's own."""
    console = console or output_console()
    source = find_recipe(name)
    file = Path(file)
    if file.suffix not in (".yaml", ".yml"):
        file = file.with_suffix(".yaml")
    if file.exists() and not exist_ok:
        raise CompkitError(file, f"exists (pass {REPLACE_FLAG} to replace it)")
    file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, file)
    console.print(f"wrote {file} (a copy of {source})")
    console.print(f"next: compkit train --recipe {file} --data DATA")
    return file
