"""Run and fold folders: ``runs/<name>/fold<k>/`` with the resolved ``recipe.yaml`` that trained it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from compkit.data.splits import fingerprint
from compkit.training.recipe import Recipe, load_recipe
from compkit.util.errors import REPLACE_FLAG, CompkitError
from compkit.util.fileio import read_json, read_text, write_json
from compkit.util.locks import OutputInUse, OutputLock

RUNS_DIR = "runs"  # where `compkit train` puts run folders by default (runs/<name>/fold<k>/)
RECIPE_FILE = "recipe.yaml"
RUN_FILE = "run.json"  # what a fold was trained on: family, the split's fingerprint, its validation images
PRETRAINED_FILE = "pretrained.json"  # the weights a fold started from: name, tag, repository, revision, file, sha256
TRAIN_LOG = "train.log"  # the console output of the command that trained the fold
FOLD_PREFIX = "fold"  # fold folders are fold0, fold1, ... inside a run folder
FOLD_NAME = re.compile(rf"{FOLD_PREFIX}(\d+)")


def fold_folder(run_dir: Path, k: int) -> Path:
    return run_dir / f"{FOLD_PREFIX}{k}"


def fold_dirs(path: str | Path) -> list[Path]:
    """Fold folders under a run folder (``runs/name`` -> ``fold0``, ``fold1``, ...), or the fold folder itself."""
    path = Path(path)
    if (path / RECIPE_FILE).is_file():
        return [path]
    folds = sorted((p for p in path.glob(f"{FOLD_PREFIX}*") if (p / RECIPE_FILE).is_file()), key=fold_number)
    if not folds:
        raise CompkitError(path, f"not a run or fold folder (no {RECIPE_FILE}, no {FOLD_PREFIX}*/ folders)")
    return folds


def fold_number(folder: Path) -> int:
    match = FOLD_NAME.fullmatch(folder.name)
    if match is None:
        raise CompkitError(folder, "a fold folder must be named fold<k> (fold0, fold1, ...)")
    return int(match.group(1))


def named_folds(fold: str | int) -> list[int] | None:
    """The fold numbers ``fold`` names (a number, or several separated by commas: '0,2'; repeats dropped), or None
    for 'all'."""
    if str(fold).strip() == "all":
        return None
    try:
        wanted = [int(part) for part in str(fold).split(",") if part.strip()]
    except ValueError:
        raise CompkitError("--fold", f"{fold!r} is not a fold number or 'all' (several: 0,2)") from None
    if not wanted:
        raise CompkitError("--fold", "no fold given: a fold number or 'all' (several: 0,2)")
    return list(dict.fromkeys(wanted))


def fold_recipe(folder: Path) -> Recipe:
    """The resolved recipe a fold was trained with; its dataset found again where the run moved with its data
    (``run.json``'s path relative to the fold: a run copied to another machine or attached to a notebook)."""
    recipe = load_recipe(folder / RECIPE_FILE)
    recipe.data.root = data_root_of(folder, recipe.data.root)
    return recipe


def data_root_of(folder: Path, recorded: str | None) -> str | None:
    """``recorded`` where it exists, else the run record's relative path from ``folder`` where that exists."""
    if recorded is None or Path(recorded).exists():
        return recorded
    relative = read_run_record(folder).get("data_root_relative") if (folder / RUN_FILE).is_file() else None
    if relative and (folder / relative).exists():
        return str((folder / relative).resolve())
    return recorded


def write_run_record(folder: Path, record: dict[str, Any]) -> None:
    write_json(folder / RUN_FILE, record)


def read_run_record(folder: Path) -> dict[str, Any]:
    """A fold's run record; ``{}`` for runs from before records were written."""
    path = folder / RUN_FILE
    if not path.is_file():
        return {}
    record = read_json(path)
    if not isinstance(record, dict):
        raise CompkitError(path, "not a compkit run record (not a JSON object)")
    return record


def check_fold_split(folder: Path, splits: dict[str, Any], splits_file: Path) -> None:
    """A fold's validation predictions are out-of-fold only for the split it was trained on: refuse otherwise."""
    trained_on = read_run_record(folder).get("splits_fingerprint")
    if trained_on is not None and trained_on != fingerprint(splits):
        raise CompkitError(
            folder,
            f"was trained on another split than {splits_file} holds now: its validation images are not out-of-fold "
            "(retrain it, or restore the splits file it was trained on)",
        )


def recipe_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every key whose value differs between two resolved recipes."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += recipe_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append((f"{prefix}{key}", a, b))
    return changes


def recipe_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first dotted key whose value differs between two resolved recipes (``train.epochs: 3 -> 4``), or None."""
    changes = recipe_changes(old, new)
    return f"{changes[0][0]}: {changes[0][1]!r} -> {changes[0][2]!r}" if changes else None


def saved_recipe(folder: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(read_text(folder / RECIPE_FILE))
    except yaml.YAMLError as e:
        raise CompkitError(folder / RECIPE_FILE, f"unreadable recipe ({e})") from None
    if not isinstance(data, dict):
        raise CompkitError(folder / RECIPE_FILE, "not a resolved recipe")
    return data


def run_conflict(
    run_dir: Path, recipe: dict[str, Any], splits_fingerprint: str, ignore: tuple[str, ...] = ()
) -> str | None:
    """Why training ``recipe`` into ``run_dir`` would change what its existing folds mean, or None."""
    for folder in sorted(run_dir.glob(f"{FOLD_PREFIX}*")):
        if not (folder / RECIPE_FILE).is_file():
            continue
        old, new = saved_recipe(folder), dict(recipe)
        for dotted in ignore:
            section, key = dotted.split(".")
            old.get(section, {}).pop(key, None)
            new[section] = {k: v for k, v in new.get(section, {}).items() if k != key}
        difference = recipe_difference(old, new)
        if difference:
            return f"{folder.name} was trained with another recipe ({difference})"
        trained_on = read_run_record(folder).get("splits_fingerprint")
        if trained_on is not None and trained_on != splits_fingerprint:
            return f"{folder.name} was trained on another split"
    return None


def next_free(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... whichever does not exist yet (as ultralytics names its runs)."""
    if not path.exists():
        return path
    n = 2
    while path.with_name(f"{path.name}-{n}").exists():
        n += 1
    return path.with_name(f"{path.name}-{n}")


def output_folder(path: Path, explicit: bool, exist_ok: bool, option: str = "--out") -> Path:
    """Where a command writes a folder: never silently over an existing one. A default location that is taken
    moves on to ``name-2``; an explicit one is refused unless ``exist_ok``."""
    if not path.exists() or exist_ok:
        return path
    if not explicit:
        return next_free(path)
    raise _already_exists(path, option)


def _already_exists(path: Path, option: str) -> CompkitError:
    return CompkitError(path, f"already exists: pass {REPLACE_FLAG} to replace it, or another {option}")


def claim_output_folder(path: Path, explicit: bool, exist_ok: bool, option: str = "--out") -> OutputLock:
    """:func:`output_folder`, chosen and locked for this process without a race (a held :class:`OutputLock`;
    ``with claim_output_folder(...) as folder:``). A default location that another process is writing counts as
    taken and moves on too; an explicit one in use is refused, naming its holder."""
    fixed = explicit or exist_ok
    n = 1
    while True:
        candidate = path if n == 1 else path.with_name(f"{path.name}-{n}")
        n += 1
        if fixed or not candidate.exists():
            lock = OutputLock(candidate, option)
            try:
                lock.acquire()
            except OutputInUse:
                if fixed:
                    raise
                continue
            if not candidate.exists() or exist_ok:  # looked at again now that no other process can make it
                return lock
            lock.release()
            if fixed:
                raise _already_exists(candidate, option)


def refuse_nonempty(out: Path, exist_ok: bool) -> None:
    """An output dataset folder (``pseudo``, ``augment``) is replaced only with ``--exist-ok``."""
    if out.exists() and any(out.iterdir()) and not exist_ok:
        raise CompkitError(out, f"already exists and is not empty (use {REPLACE_FLAG} to replace it)")


def copy_fold_records(folder: Path, destination: Path) -> None:
    """A fold's recipe and run record in ``destination`` (predictions written elsewhere stay a run folder)."""
    destination.mkdir(parents=True, exist_ok=True)
    (destination / RECIPE_FILE).write_bytes((folder / RECIPE_FILE).read_bytes())
    record = read_run_record(folder)
    if record:
        root = data_root_of(folder, record.get("data_root"))
        if root:
            record["data_root_relative"] = os.path.relpath(root, destination.absolute())
        write_run_record(destination, record)
