"""compkit.training.distributed: a no-op for one process, and real DDP through torchrun with two gloo processes on CPU."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

from compkit.stages.split import split
from compkit.training.checkpoint import load_checkpoint
from compkit.training.distributed import (
    DistInfo,
    any_rank,
    barrier,
    broadcast_flag,
    cleanup,
    init_distributed,
    launched_by_torchrun,
)
from tests.conftest import FAST, quiet

TORCHRUN_VARIABLES = ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_collectives(monkeypatch):
    """Any collective call fails the test: one process must never touch torch.distributed."""

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.distributed called in a single process")

    for name in ("init_process_group", "barrier", "broadcast", "all_reduce", "destroy_process_group"):
        monkeypatch.setattr(dist, name, forbidden)


def test_one_process_is_not_distributed(no_torchrun, no_collectives):
    assert not launched_by_torchrun()
    info = init_distributed(torch.device("cpu"))
    assert info == DistInfo() and info.rank == 0 and info.world_size == 1
    assert not info.enabled and info.is_main
    assert not dist.is_initialized()


def test_one_process_collectives_are_identities(no_collectives):
    info = DistInfo()
    barrier(info)
    assert broadcast_flag(info, True) is True and broadcast_flag(info, False) is False
    assert any_rank(info, True) is True and any_rank(info, False) is False
    cleanup(info)


def test_torchrun_with_one_process_stays_single(monkeypatch, no_collectives):
    """torchrun --nproc-per-node=1 sets the variables, but a world of one needs no process group."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert launched_by_torchrun()
    assert init_distributed(torch.device("cpu")) == DistInfo()


@pytest.mark.parametrize(
    ("variables", "launched"),
    [({"RANK": "0"}, False), ({"RANK": "1", "WORLD_SIZE": "2"}, True), ({"TORCHELASTIC_RUN_ID": "7"}, True)],
)
def test_launched_by_torchrun_reads_its_variables(no_torchrun, monkeypatch, variables, launched):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert launched_by_torchrun() is launched


def test_dist_info_roles():
    assert DistInfo(rank=1, world_size=2).enabled and not DistInfo(rank=1, world_size=2).is_main
    assert DistInfo(rank=0, world_size=2).is_main


@pytest.mark.slow
def test_ddp_two_gloo_processes(data_copy, trained_tiny_run, tmp_path):
    """--devices 2 on CPU: torchrun starts two gloo processes; rank 0 alone writes the run folder."""
    split(data_copy, folds=2, seed=0, console=quiet())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "compkit",
        "train",
        "--recipe",
        "tiny",
        "--data",
        str(data_copy),
        "--fold",
        "0",
        "--devices",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    for o in [*FAST, "train.epochs=2"]:
        args += ["--set", o]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "runs" / "tiny" / "fold0"
    with open(folder / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in table] == [1, 2]
    ckpt = load_checkpoint(folder / "last.pt")
    assert ckpt["epoch"] == 2
    # 6 training images, batch 3: one process takes 2 steps an epoch; each of 2 ranks takes 1 (its half).
    assert ckpt["schedule"]["step"] == 2
    assert np.isfinite(float(table[-1]["val_dice_mean"]))
    written = sorted(p.name for p in folder.iterdir())
    assert {"best.pt", "last.pt", "oof", "recipe.yaml", "results.csv", "results.png", "test"} <= set(written)
    assert written == sorted(p.name for p in (trained_tiny_run.run / "fold0").iterdir()), (
        "what one process writes, no more"
    )
