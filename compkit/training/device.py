"""Choosing the torch device a recipe or a command asks for."""

from __future__ import annotations

import os

import torch

from compkit.training.distributed import launched_by_torchrun
from compkit.util.errors import CompkitError


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """``auto`` (the local rank's GPU under torchrun, else GPU 0, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if launched_by_torchrun() else 0)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CompkitError(setting, f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CompkitError(setting, "CUDA was asked for but is not available on this machine")
    return device
