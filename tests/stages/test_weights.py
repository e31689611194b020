"""``compkit weights pull | list | export`` and training from the weights cache, as a user meets them: the network cut,
a planted cache, an export attached to a "fresh machine", one-line errors naming the pull command."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import torch
import yaml
from rich.console import Console

from compkit.pretrained.weights import weights_cache
from compkit.stages.split import split
from compkit.stages.weights import export, list_weights
from tests.conftest import plant_hub_entry, quiet
from tests.stages.test_train import FAST
from tests.test_cli import assert_one_line_error, run

PRETRAINED_TINY = ["--set", "model.encoder=tu-resnet18", "--set", "model.encoder_weights=imagenet"]
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture
def offline(cut_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COMPKIT_WEIGHTS", raising=False)
    yield cut_network
    assert not cut_network, f"network access attempted: {cut_network}"


@pytest.mark.slow
def test_pull_export_and_train_offline_from_the_export(planted_weights, data_copy, tmp_path, offline):
    source = planted_weights["folder"]
    result = run("weights", "pull", "tu-resnet18", "--cache", source)
    assert result.exit_code == 0, result.output
    assert "1 entry" in result.stdout, "already cached: nothing downloaded"

    listed = {(e["name"], e["tag"]): e for e in list_weights(cache=source, console=quiet())}
    assert set(listed) == {("tu-resnet18", "a1_in1k"), ("resnet18", "imagenet")}
    assert listed[("tu-resnet18", "a1_in1k")]["size"] > 40e6

    out = tmp_path / "kaggle-dataset"
    result = run("weights", "export", out, "tu-resnet18", "--cache", source)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "weights.json").read_text())["entries"]
    assert [(e["name"], e["tag"], e["repo_id"]) for e in manifest] == [
        ("tu-resnet18", "a1_in1k", "timm/resnet18.a1_in1k")
    ]
    exported = out / "hub" / "models--timm--resnet18.a1_in1k"
    revision = (exported / "refs" / "main").read_text()
    weights_file = exported / "snapshots" / revision / "model.safetensors"
    assert weights_file.is_file() and not weights_file.is_symlink(), "plain files survive a dataset upload"
    assert not (out / "hub" / "models--smp-hub--resnet18.imagenet").exists(), "only what was asked for"
    planted_bytes = (
        source / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / revision / "model.safetensors"
    ).read_bytes()
    assert manifest[0]["sha256"] == hashlib.sha256(planted_bytes).hexdigest()

    # A fresh machine: only the export, no network, HF_HUB_OFFLINE=1; one step at lr 0 keeps the planted weights.
    split(data_copy, folds=2, seed=0, console=quiet())
    runs = tmp_path / "runs"
    sets = [a for s in [*FAST, "train.epochs=1", "optim.lr=0"] for a in ("--set", s)]
    result = run(
        "train",
        "--recipe",
        "tiny",
        "--data",
        data_copy,
        *PRETRAINED_TINY,
        *sets,
        "--weights-cache",
        out,
        "--runs-dir",
        runs,
    )
    assert result.exit_code == 0, result.output
    assert "fold 0 starts from tu-resnet18 a1_in1k (timm/resnet18.a1_in1k@" in result.stdout
    folder = runs / "tiny" / "fold0"
    record = json.loads((folder / "pretrained.json").read_text())
    assert (record["name"], record["tag"], record["repo_id"], record["revision"]) == (
        "tu-resnet18",
        "a1_in1k",
        "timm/resnet18.a1_in1k",
        revision,
    )
    assert record["sha256"] == manifest[0]["sha256"] and record["path"] == str(weights_file)
    trained = torch.load(folder / "best.pt", map_location="cpu", weights_only=True)["model"]
    compared = 0
    for name, value in planted_weights["timm"].items():
        if not name.startswith("fc.") and not name.endswith(BUFFERS):
            assert torch.equal(trained[f"encoder.model.{name}"], value), name
            compared += 1
    assert compared > 40
    resolved = yaml.safe_load((folder / "recipe.yaml").read_text())
    assert resolved["data"]["mean"] == [0.485, 0.456, 0.406] and resolved["data"]["std"] == [0.229, 0.224, 0.225]
    assert resolved["model"]["encoder_weights"] == "imagenet"


def test_train_without_cached_weights_stops_before_reading_any_data(data_copy, tmp_path, offline):
    split(data_copy, folds=2, seed=0, console=quiet())
    empty = tmp_path / "weights"
    result = run(
        "train",
        "--recipe",
        "tiny",
        "--data",
        data_copy,
        *PRETRAINED_TINY,
        "--weights-cache",
        empty,
        "--runs-dir",
        tmp_path / "runs",
    )
    assert_one_line_error(
        result,
        "tu-resnet18 weights 'a1_in1k'",
        "HF_HUB_OFFLINE is set",
        f"compkit weights pull tu-resnet18.a1_in1k --cache {empty}",
    )
    assert not (data_copy / ".compkit-cache").exists(), "no data was read"
    assert not (tmp_path / "runs").exists() and not empty.exists(), "nothing half-written"


def test_train_without_network_names_the_pull_command(data_copy, tmp_path, cut_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("COMPKIT_WEIGHTS", str(tmp_path / "weights"))
    result = run("train", "--recipe", "resnet34", "--data", data_copy, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(
        result,
        "resnet34 weights 'imagenet'",
        "huggingface.co cannot be reached",
        "compkit weights pull resnet34.imagenet --cache",
    )
    assert len(cut_network) == 1
    assert not (tmp_path / "weights").exists() and not (data_copy / ".compkit-cache").exists()


def test_list_shows_the_recipes_each_entry_serves_and_what_they_lack(tmp_path, offline):
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders["resnet34"]["pretrained_settings"]["imagenet"]
    plant_hub_entry(
        tmp_path / "hub",
        settings["repo_id"],
        {"config.json": b"{}", "model.safetensors": b"0" * 2048},
        settings["revision"],
    )
    plant_hub_entry(tmp_path / "hub", "bert/base", {"model.safetensors": b"0"})  # another library's: not shown
    (tmp_path / "ultralytics").mkdir()
    (tmp_path / "ultralytics" / "yolov8n-seg.pt").write_bytes(b"0" * 4096)
    console = Console(record=True, width=250)
    entries = list_weights(cache=tmp_path, console=console)
    assert [(e["name"], e["tag"], e["size"], e["serves"]) for e in entries] == [
        ("resnet34", "imagenet", 2050, ["resnet34"]),
        ("yolov8n-seg", "coco", 4096, ["yolov8-seg"]),
    ]
    text = console.export_text()
    assert "recipes whose weights are not cached" in text
    assert f"compkit weights pull hrnet --cache {tmp_path}" in text and "compkit weights pull resnet34 --" not in text


def test_pull_and_export_errors(planted_weights, tmp_path, offline):
    assert_one_line_error(
        run("weights", "pull", "resnet35"), "resnet35: not a recipe", "nor an encoder or release file"
    )
    result = run("weights", "pull", "tiny")
    assert result.exit_code == 0 and "starts from random weights" in result.stdout
    assert_one_line_error(
        run("weights", "pull", "resnet18.ssl", "--cache", tmp_path / "w"),
        "resnet18.ssl: resnet18 weights 'ssl'",
        "HF_HUB_OFFLINE is set",
    )
    assert not (tmp_path / "w").exists()
    assert_one_line_error(
        run("weights", "export", tmp_path / "out", "--cache", tmp_path / "w"), "nothing cached to export"
    )
    assert_one_line_error(
        run("weights", "export", tmp_path / "out", "resnet18.ssl", "--cache", planted_weights["folder"]),
        "run: compkit weights pull resnet18.ssl --cache",
    )
    occupied = tmp_path / "notes"
    occupied.mkdir()
    (occupied / "todo.txt").write_text("mine")
    assert_one_line_error(
        run("weights", "export", occupied, "--cache", planted_weights["folder"]), "not a compkit weights export"
    )
    assert (occupied / "todo.txt").read_text() == "mine"
    # Everything cached (no names given); a second export replaces the first whole.
    out = tmp_path / "all"
    export(out, cache=planted_weights["folder"], console=quiet())
    export(out, cache=planted_weights["folder"], console=quiet())
    assert sorted(p.name for p in (out / "hub").iterdir()) == [
        "models--smp-hub--resnet18.imagenet",
        "models--timm--resnet18.a1_in1k",
    ]
    assert len(json.loads((out / "weights.json").read_text())["entries"]) == 2


@pytest.fixture
def fake_hub(monkeypatch):
    """A Hugging Face hub on the loopback interface answering as the real one does (``X-Repo-Commit``, ``ETag``,
    ``X-Error-Code: EntryNotFound``); any connection to another host fails the test. Yields ``{(repo, revision,
    file): bytes or an HTTP status}`` to fill and the list of requests served."""
    import http.server
    import socket
    import threading

    from huggingface_hub import constants

    files: dict[tuple[str, str, str], bytes | int] = {}
    served: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            served.append(f"{self.command} {self.path}")
            repo, _, rest = self.path.lstrip("/").partition("/resolve/")
            revision, _, name = rest.partition("/")
            found = files.get((repo, revision, name), files.get((repo, "main", name)) if len(revision) == 40 else None)
            if found is None or isinstance(found, int):
                self.send_response(found or 404)
                self.send_header("X-Error-Code", "EntryNotFound" if found is None else "")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header(
                "X-Repo-Commit", revision if len(revision) == 40 else hashlib.sha1(repo.encode()).hexdigest()
            )
            self.send_header("ETag", f'"{hashlib.sha256(found).hexdigest()}"')
            self.send_header("Content-Length", str(len(found)))
            self.end_headers()
            if body:
                self.wfile.write(found)

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "COMPKIT_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def loopback_only(sock, address):
        assert address[0] in ("127.0.0.1", "::1"), f"network access attempted: {address!r}"
        return connect(sock, address)

    def loopback_names_only(host, *args, **kwargs):
        assert host in ("127.0.0.1", "::1", "localhost"), f"network access attempted: DNS lookup of {host!r}"
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    monkeypatch.setattr(socket, "getaddrinfo", loopback_names_only)
    yield files, served
    server.shutdown()
    server.server_close()


def test_pull_downloads_complete_entries_and_training_reads_them_offline(fake_hub, tmp_path, monkeypatch):
    import segmentation_models_pytorch as smp
    from safetensors.torch import save

    from compkit.training.models import create_model
    from compkit.training.recipe import ModelConfig

    files, served = fake_hub
    with torch.random.fork_rng():
        torch.manual_seed(7)
        state = smp.encoders.get_encoder("resnet18", weights=None).state_dict()
    pinned = smp.encoders.encoders["resnet18"]["pretrained_settings"]
    config = json.dumps({"mean": [0.5] * 3, "std": [0.5] * 3}).encode()
    files[("smp-hub/resnet18.imagenet", pinned["imagenet"]["revision"], "config.json")] = config
    files[("smp-hub/resnet18.imagenet", pinned["imagenet"]["revision"], "model.safetensors")] = save(state)
    files[("timm/regnety_002.pycls_in1k", "main", "pytorch_model.bin")] = (
        b"0" * 300
    )  # no safetensors: the .bin, as timm
    cache = tmp_path / "weights"
    result = run("weights", "pull", "resnet18", "tu-regnety_002", "--cache", cache)
    assert result.exit_code == 0, result.output
    assert "2 entries" in result.stdout
    assert any(s.endswith("/timm/regnety_002.pycls_in1k/resolve/main/model.safetensors") for s in served), (
        "safetensors asked for first"
    )
    listed = {(e["name"], e["tag"]): e["size"] for e in list_weights(cache=cache, console=quiet())}
    assert listed == {("resnet18", "imagenet"): len(save(state)) + len(config), ("tu-regnety_002", "pycls_in1k"): 300}

    # A second pull finds everything cached; then the libraries read the pulled entry with the hub switched off.
    served.clear()
    assert run("weights", "pull", "resnet18", "--cache", cache).exit_code == 0 and not served
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = create_model(
        ModelConfig(arch="Unet", encoder="resnet18", encoder_weights="imagenet"), 2, cache=weights_cache(cache)
    )
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in state.items())


def test_a_failed_pull_leaves_no_entry_behind(fake_hub, tmp_path):
    import segmentation_models_pytorch as smp

    files, _ = fake_hub
    revision = smp.encoders.encoders["resnet18"]["pretrained_settings"]["ssl"]["revision"]
    files[("smp-hub/resnet18.ssl", revision, "config.json")] = b"{}"
    files[("smp-hub/resnet18.ssl", revision, "model.safetensors")] = 401  # refused after config.json arrived
    cache = tmp_path / "weights"
    assert_one_line_error(run("weights", "pull", "resnet18.ssl", "--cache", cache), "resnet18.ssl: ", "download failed")
    assert not (cache / "hub" / "models--smp-hub--resnet18.ssl").exists()
    console = Console(record=True, width=250, file=io.StringIO())
    assert list_weights(cache=cache, console=console) == []
    said = " ".join(console.export_text().split())
    assert f"weights cache {cache} is empty: pull what the recipes below need" in said, "an empty state says what to do"
    assert "compkit weights pull resnet34" in said
