"""Checkpoints: one ``torch.save`` dict per file, written atomically, read with ``weights_only=True``.

Every checkpoint holds ``model`` (a state dict) and ``family`` (the model family that reads it back); smp folds
also hold ``optimizer``, ``schedule``, ``scaler``, ``epoch``, ``best_dice``, ``best_epoch``, ``stale_epochs``.
An exported one (:func:`inference_checkpoint`) keeps only what predicting needs, and ``exported``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from compkit.util.errors import CompkitError, first_line
from compkit.util.fileio import atomic_write, write_problem

CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically; a full disk is one clear error and the previous checkpoint stays as it was."""
    try:
        with atomic_write(path, "wb") as f:
            torch.save(payload, f)
    except (
        RuntimeError
    ) as e:  # torch reports failed writes (ENOSPC) as RuntimeError; atomic_write removed the temp file
        raise CompkitError(path, write_problem(path, e)) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():  # torch's own warnings about a bad file would come before compkit's one line
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CompkitError(path, "checkpoint not found") from None
    except Exception as e:  # truncated or not a compkit checkpoint
        raise CompkitError(path, f"unreadable checkpoint ({type(e).__name__}: {first_line(e)})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CompkitError(path, "not a compkit checkpoint (no 'model' state dict)")
    return checkpoint


# What predicting a fold needs from its checkpoint; the rest (optimizer, schedule, scaler, the trained weights
# behind an average) only resumes training.
INFERENCE_KEYS = ("family", "classes", "model", "head_source_nc", "epoch", "best_dice", "best_epoch")


def inference_checkpoint(checkpoint: dict[str, Any], half: bool = False) -> dict[str, Any]:
    """``checkpoint`` without its training state; ``half``: floating-point weights stored as float16 (loading casts
    them back into the model's float32)."""
    slim = {key: checkpoint[key] for key in INFERENCE_KEYS if key in checkpoint}
    if half:
        slim["model"] = {
            name: tensor.half() if torch.is_floating_point(tensor) else tensor
            for name, tensor in checkpoint["model"].items()
        }
    slim["exported"] = {"half": half}
    return slim


def checkpoint_epoch(path: Path) -> int | None:
    """The epochs a checkpoint has completed (``epoch``), read without loading its tensors; None if it has none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            epoch = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("epoch")
    except Exception:  # unreadable: nothing to resume from
        return None
    return int(epoch) if isinstance(epoch, int) else None


def fold_checkpoint(folder: Path) -> Path:
    """The fold's best checkpoint, else its last."""
    best = folder / CHECKPOINT_BEST
    return best if best.is_file() else folder / CHECKPOINT_LAST


def check_classes(checkpoint: dict[str, Any], classes, path: Path) -> None:
    """A checkpoint predicts the classes it was trained on; refuse a dataset with others."""
    trained = checkpoint.get("classes")
    if trained is not None and list(trained) != list(classes):
        if len(trained) != len(classes):
            raise CompkitError(path, f"{len(trained)} classes in the checkpoint, {len(classes)} in the dataset")
        raise CompkitError(
            path,
            f"the checkpoint's classes differ from the dataset's (first: {next(a for a, b in zip(trained, classes, strict=False) if a != b)!r})",
        )
