"""Checkpoints: one ``torch.save`` dict per file, written atomically, read with ``weights_only=True``.

Every checkpoint holds ``model`` (a state dict) and ``family`` (the model family that reads it back); smp folds
also hold ``optimizer``, ``schedule``, ``scaler``, ``epoch``, ``best_dice``, ``best_epoch``, ``stale_epochs``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from compkit.errors import CompkitError
from compkit.fileio import atomic_write

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CompkitError(path, "checkpoint not found") from None
    except Exception as e:  # truncated or not a compkit checkpoint
        detail = (str(e).strip().splitlines() or [""])[0]
        raise CompkitError(path, f"unreadable checkpoint ({type(e).__name__}{': ' + detail if detail else ''})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CompkitError(path, "not a compkit checkpoint (no 'model' state dict)")
    return checkpoint


def fold_checkpoint(folder: Path) -> Path:
    """The fold's best checkpoint, else its last."""
    best = folder / CHECKPOINT_BEST
    return best if best.is_file() else folder / CHECKPOINT_LAST
