"""DDP through torchrun: compkit never launches processes itself; ``--devices N`` re-runs under torchrun."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from rich.console import Console


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collective tensors live (nccl needs CUDA tensors)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class DistContext:
    """Who trains: this process's rank, its device, and its console (quiet except on rank 0)."""

    dist: DistInfo
    device: torch.device
    console: Console


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun set up (nccl on GPU, gloo on CPU); a no-op for one process."""
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), str(device))


def start_distributed(device: torch.device, console: Console) -> DistContext:
    """:func:`init_distributed` on ``device``; ranks other than 0 print nothing."""
    info = init_distributed(device)
    return DistContext(info, device, console if info.is_main else Console(quiet=True))


@contextmanager
def main_rank_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block first (a download, a cache it builds); the other ranks wait for it, then run it,
    finding rank 0's work done (ultralytics' ``torch_distributed_zero_first``). One process just runs it."""
    if not info.is_main:
        barrier(info)
    yield
    if info.is_main:
        barrier(info)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flag(info: DistInfo, value: bool) -> bool:
    """Rank 0's decision (stop early, NaN seen) shared with every rank."""
    if not info.enabled:
        return value
    flag = torch.tensor([int(value)], device=info.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def any_rank(info: DistInfo, value: bool) -> bool:
    if not info.enabled:
        return value
    flag = torch.tensor([int(value)], device=info.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
