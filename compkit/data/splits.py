"""The splits artifact (``DATA/splits.json``, written by ``compkit split``), read by every stage that needs folds."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compkit.data.formats import dataset_folder
from compkit.errors import CompkitError
from compkit.fileio import read_json

SPLITS_FILE = "splits.json"
SPLITS_VERSION = 1


def splits_path(data: str | Path) -> Path:
    """``splits.json`` in the dataset's folder (for a ``dataset.yaml``: the folder it describes)."""
    return dataset_folder(data) / SPLITS_FILE


def load_splits(data: str | Path) -> dict[str, Any]:
    """The splits file of a dataset; a clear error when there is none yet."""
    path = splits_path(data)
    if not path.is_file():
        raise CompkitError(path, "no splits file: run `compkit split DATA` first")
    splits = read_json(path)
    if not isinstance(splits, dict) or not isinstance(splits.get("folds"), list):
        raise CompkitError(path, "not a compkit splits file (no 'folds' list)")
    return splits
