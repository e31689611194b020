"""``compkit weights pull | list | export``: fill the weights cache, show it, and copy it for an offline machine.

``pull`` takes recipes (their model family says what they start from) and encoder or release-file names;
``list`` shows every cached entry with the recipes it serves (and what the recipes still lack); ``export DIR``
copies entries into a folder with the cache's own layout (``DIR/hub``, ``DIR/ultralytics``, ``DIR/weights.json``)
that an offline machine uses with ``COMPKIT_WEIGHTS=DIR`` or ``--cache DIR`` / ``--weights-cache DIR``.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from compkit.families import FAMILIES, resolve_family
from compkit.pretrained.weights import (
    CachedWeights,
    PretrainedWeights,
    cached_entries,
    copy_entry,
    folder_cache,
    locate,
    require,
    serves,
    snapshot_folder,
    weights_cache,
)
from compkit.pretrained.weights import (
    pull as pull_weights,
)
from compkit.training.recipe import RECIPE_SUFFIXES, available_recipes, find_recipe, load_recipe
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError, warn
from compkit.util.fileio import AtomicFolder, write_json

MANIFEST = "weights.json"
EXAMPLES = "resnet34, resnet50.ssl, tu-resnet18, tu-convnext_tiny.fb_in22k, yolov8x-seg"


def _recipe_weights(reference: str) -> PretrainedWeights | None:
    recipe = load_recipe(reference)
    return resolve_family(recipe).pretrained(recipe)


def _is_recipe(reference: str) -> bool:
    return Path(reference).suffix in RECIPE_SUFFIXES or reference in available_recipes()


def resolve_references(references: list[str] | tuple[str, ...], console: Console) -> list[PretrainedWeights]:
    """The weights each reference stands for: a recipe (name or file) first, else a name some family knows."""
    wanted: list[PretrainedWeights] = []
    for reference in references:
        if _is_recipe(reference):
            find_recipe(reference)  # a recipe file that is not there fails here, by name
            weights = _recipe_weights(reference)
            if weights is None:
                console.print(
                    f"{reference}: starts from random weights (model.encoder_weights: null), nothing to fetch"
                )
                continue
        else:
            weights = next(
                (w for family in FAMILIES.values() if (w := family.weights_named(reference)) is not None), None
            )
            if weights is None:
                raise CompkitError(
                    reference,
                    f"not a recipe ({', '.join(available_recipes())}) nor an encoder or release file (e.g. {EXAMPLES})",
                )
        if weights.path is not None:
            console.print(f"{reference}: starts from the local file {weights.path}, nothing to fetch")
        elif weights not in wanted:
            wanted.append(weights)
    return wanted


def _entry_table(title: str, entries: list[CachedWeights], extra: dict[str, list[str]] | None = None) -> Table:
    """name, tag, size, path of each entry, and any extra columns (one value per entry)."""
    extra = extra or {}
    table = Table(title=title)
    for column in ("name", "tag", "size", *extra, "path"):
        table.add_column(column, overflow="fold")
    for i, entry in enumerate(entries):
        table.add_row(
            entry.name, entry.tag, _size(entry.size), *(values[i] for values in extra.values()), str(entry.location)
        )
    return table


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def pull(
    references: list[str] | tuple[str, ...], cache: str | Path | None = None, console: Console | None = None
) -> list[CachedWeights]:
    """Download what the recipes / encoders need into the cache (the libraries' progress bars show each file)."""
    console = console or output_console()
    where = weights_cache(cache)
    pulled, status = [], []
    for weights in resolve_references(references, console):
        status.append("already cached" if locate(weights, where) is not None else "downloaded")
        pulled.append(pull_weights(weights, where, console, setting=weights.reference))
    if pulled:
        console.print(_entry_table(f"weights cache {where.describe()}", pulled, {"": status}))
    console.print(
        f"{len(pulled)} entr{'y' if len(pulled) == 1 else 'ies'} ({_size(sum(e.size for e in pulled))}) in {where.describe()}"
    )
    return pulled


def _recipe_needs(console: Console) -> list[tuple[str, PretrainedWeights]]:
    needs = []
    for name in available_recipes():
        try:
            weights = _recipe_weights(name)
        except CompkitError as e:  # a broken recipe in ./recipes is reported, not fatal to the listing
            warn(f"recipe {name}", str(e), console)
            continue
        if weights is not None and weights.path is None:
            needs.append((name, weights))
    return needs


def list_weights(cache: str | Path | None = None, console: Console | None = None) -> list[dict]:
    """A table of the cached entries (name, tag, size, path, the recipes each serves) and of what recipes lack."""
    console = console or output_console()
    where = weights_cache(cache)
    entries = cached_entries(where)
    needs = _recipe_needs(console)
    served = [", ".join(name for name, weights in needs if serves(weights, entry)) for entry in entries]
    if entries:
        console.print(_entry_table(f"weights cache {where.describe()}", entries, {"serves": served}))
    else:
        console.print(
            f"weights cache {where.describe()} is empty: pull what the recipes below need, or point --cache or "
            "COMPKIT_WEIGHTS at a `compkit weights export` folder"
        )
    missing = [(name, w) for name, w in needs if not any(serves(w, e) for e in entries)]
    if missing:
        table = Table(title="recipes whose weights are not cached")
        for column in ("recipe", "name", "tag", "pull with"):
            table.add_column(column)
        for name, weights in missing:
            table.add_row(name, weights.name, weights.tag, f"compkit weights pull {name}{where.option}")
        console.print(table)
    console.print(
        f"{len(entries)} cached entr{'y' if len(entries) == 1 else 'ies'}, {_size(sum(e.size for e in entries))}"
    )
    return [
        {
            "name": e.name,
            "tag": e.tag,
            "size": e.size,
            "path": str(e.location),
            "serves": names.split(", ") if names else [],
        }
        for e, names in zip(entries, served, strict=True)
    ]


def export(
    out: str | Path,
    references: list[str] | tuple[str, ...] = (),
    cache: str | Path | None = None,
    console: Console | None = None,
) -> Path:
    """Copy the entries ``references`` need (default: every cached entry) into ``out`` for an offline machine."""
    console = console or output_console()
    out = Path(out)
    source = weights_cache(cache)
    if references:
        entries = [
            require(weights, source, setting=weights.reference) for weights in resolve_references(references, console)
        ]
    else:
        entries = cached_entries(source)
    if not entries:
        raise CompkitError(source.describe(), "nothing cached to export: run `compkit weights pull RECIPE` first")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise CompkitError(out, "exists and is not a compkit weights export: name a new folder")
    total = sum(e.size for e in entries)
    progress = transient_progress(
        console,
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with progress, AtomicFolder(out) as staging:
        task = progress.add_task("copying", total=total)

        def copy(source_file: Path, target: Path) -> None:
            with open(source_file, "rb") as src, open(target, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 22), b""):
                    dst.write(chunk)
                    progress.advance(task, len(chunk))

        for entry in entries:
            copy_entry(entry, staging, copy)
        manifest = [{**entry.record(), "path": str(_exported_path(entry, out))} for entry in entries]
        write_json(staging / MANIFEST, {"version": 1, "entries": manifest})
    exported = folder_cache(out)
    console.print(_entry_table(f"exported to {out}", cached_entries(exported)))
    console.print(
        f"wrote {out} ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {_size(total)}); on the offline machine: "
        f"COMPKIT_WEIGHTS=<that folder> compkit train ... (or --weights-cache <that folder>)"
    )
    return out


def _exported_path(entry: CachedWeights, out: Path) -> Path:
    if entry.repo_id is None:
        return out / entry.library / entry.file.name
    return snapshot_folder(folder_cache(out), entry.repo_id, entry.revision) / entry.file.name
