from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub.constants  # noqa: F401  (imported before any test sets HF_HUB_OFFLINE: it reads it once)
import pytest
from rich.console import Console

from compkit.synth import synth


def quiet() -> Console:
    return Console(quiet=True)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A small synthetic dataset shared read-only by the tests (copy it before changing it)."""
    root = tmp_path_factory.mktemp("synth") / "data"
    synth(root, patients=6, test_patients=2, size=96, seed=0, console=quiet())
    return root


@pytest.fixture
def data_copy(synth_data, tmp_path) -> Path:
    """A private copy of the synthetic dataset (and its _gt folder) that a test may break."""
    root = tmp_path / "data"
    shutil.copytree(synth_data, root)
    shutil.copytree(synth_data.with_name("data_gt"), tmp_path / "data_gt")
    return root


class NetworkCut(ConnectionRefusedError):
    """What a socket call raises on a machine without network (an OSError, as the real thing)."""


@pytest.fixture
def cut_network(monkeypatch):
    """Every connection attempt and DNS lookup fails as on a machine without network; yields the attempts made."""
    import socket

    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise NetworkCut(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def plant_hub_entry(hub: Path, repo_id: str, files: dict[str, bytes], revision: str | None = None) -> Path:
    """A Hugging Face hub cache entry exactly as the hub client writes one: ``blobs/<sha256>``, the snapshot's files
    as links to them, ``refs/main`` naming the revision. Returns the snapshot folder."""
    import hashlib
    import os

    revision = revision or hashlib.sha1(repo_id.encode()).hexdigest()
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        os.symlink(f"../../blobs/{blob}", snapshot / name)
    return snapshot


PLANTED_MEAN, PLANTED_STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.fixture(scope="session")
def planted_weights(tmp_path_factory) -> dict:
    """A weights folder (``COMPKIT_WEIGHTS`` layout: ``hub/``) holding randomly initialised ImageNet-style entries for
    a timm encoder (``tu-resnet18`` -> timm/resnet18.a1_in1k) and an smp native one (``resnet18`` ->
    smp-hub/resnet18.imagenet at the revision smp pins), with the state dicts planted. Read-only for tests."""
    import json

    import segmentation_models_pytorch as smp
    import timm
    import torch
    from safetensors.torch import save

    folder = tmp_path_factory.mktemp("weights")
    with torch.random.fork_rng():  # the other tests' random streams stay as they were
        torch.manual_seed(1234)
        timm_state = timm.create_model("resnet18", pretrained=False).state_dict()
        native_state = smp.encoders.get_encoder("resnet18", weights=None).state_dict()
    plant_hub_entry(folder / "hub", "timm/resnet18.a1_in1k", {"config.json": b'{"architecture": "resnet18"}', "model.safetensors": save(timm_state)})
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    config = json.dumps({"mean": PLANTED_MEAN, "std": PLANTED_STD, "input_space": "RGB", "input_range": [0, 1]}).encode()
    plant_hub_entry(folder / "hub", settings["repo_id"], {"config.json": config, "model.safetensors": save(native_state)}, settings["revision"])
    return {"folder": folder, "timm": timm_state, "smp": native_state}
