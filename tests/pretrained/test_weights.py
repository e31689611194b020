"""Pretrained weights: tags resolved as smp and timm publish them, models built by the libraries from a planted hub
cache with the network cut, the missing-cache error, normalisation from the weights' config, no code in weights."""

from __future__ import annotations

import os

import pytest
import torch

from compkit.pretrained.weights import encoder_normalisation, encoder_reference, encoder_weights, require, weights_cache
from compkit.training.models import create_model
from compkit.training.preprocess import Normaliser
from compkit.training.recipe import ModelConfig, Recipe
from compkit.util.errors import CompkitError
from tests.conftest import PLANTED_MEAN, PLANTED_STD, plant_hub_entry

UNET = {"arch": "Unet", "params": {"decoder_channels": [16, 16, 8, 8, 8]}}


@pytest.mark.parametrize(
    ("encoder", "tag", "repo", "resolved"),
    [
        ("tu-resnet18", "imagenet", "timm/resnet18.a1_in1k", "a1_in1k"),  # imagenet: timm's default tag
        ("tu-resnet18", True, "timm/resnet18.a1_in1k", "a1_in1k"),
        ("tu-resnet18", ".in1k", "timm/resnet18.a1_in1k", "a1_in1k"),  # several end with in1k: the default wins
        ("tu-resnet18", "tv_in1k", "timm/resnet18.tv_in1k", "tv_in1k"),
        ("tu-resnet18.gluon_in1k", "imagenet", "timm/resnet18.gluon_in1k", "gluon_in1k"),  # the tag in the name
        ("tu-convnext_tiny", "in22k", "timm/convnext_tiny.fb_in22k", "fb_in22k"),
        ("tu-resnet50", "ssl", "timm/resnet50.fb_ssl_yfcc100m_ft_in1k", "fb_ssl_yfcc100m_ft_in1k"),
        ("resnet50", "ssl", "smp-hub/resnet50.ssl", "ssl"),
        ("resnet50", "swsl", "smp-hub/resnet50.swsl", "swsl"),
        ("efficientnet-b5", "advprop", "smp-hub/efficientnet-b5.advprop", "advprop"),
        ("vgg19", True, "smp-hub/vgg19.imagenet", "imagenet"),
    ],
)
def test_published_tags_resolve_to_the_libraries_hub_repositories(encoder, tag, repo, resolved):
    weights = encoder_weights(ModelConfig(encoder=encoder, encoder_weights=tag))
    assert (weights.repo_id, weights.tag) == (repo, resolved)
    if weights.library == "smp":  # smp pins the revision it loads
        import segmentation_models_pytorch as smp

        assert weights.revision == smp.encoders.encoders[encoder]["pretrained_settings"][resolved]["revision"]
    else:
        assert weights.revision is None
    assert encoder_reference(weights.reference) == weights, "the pull command names exactly these weights"


@pytest.mark.parametrize(
    ("encoder", "tag", "message"),
    [
        ("resnet34", "imagenett", r"resnet34 has no published weights 'imagenett' \(did you mean 'imagenet'\?\)"),
        ("resnet34", "ssl", r"published: imagenet"),
        ("tu-resnet18", "in22k", r"timm publishes no weights 'in22k' for resnet18"),
        (
            "tu-resnet50",
            "ft_in1k",
            r"names several timm weights of resnet50: fb_ssl_yfcc100m_ft_in1k, fb_swsl_ig1b_ft_in1k",
        ),
        ("tu-resnet18.a1_in1k", "tv_in1k", r"contradicts the tag in model.encoder"),
        ("resnet34", "weights/missing.pth", r"file not found"),
    ],
)
def test_bad_weights_are_one_clear_error(encoder, tag, message):
    with pytest.raises(CompkitError, match=message):
        encoder_weights(ModelConfig(encoder=encoder, encoder_weights=tag))


def test_false_and_null_mean_random_weights():
    assert ModelConfig(encoder_weights=False).encoder_weights is None
    assert encoder_weights(ModelConfig(encoder="resnet34")) is None


@pytest.fixture
def offline(planted_weights, cut_network, monkeypatch):
    """The planted weights folder as COMPKIT_WEIGHTS, HF_HUB_OFFLINE=1 and every socket call refused."""
    monkeypatch.setenv("COMPKIT_WEIGHTS", str(planted_weights["folder"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield planted_weights
    assert not cut_network, f"network access attempted: {cut_network}"


@pytest.mark.parametrize(("encoder", "key", "prefix"), [("tu-resnet18", "timm", "model."), ("resnet18", "smp", "")])
def test_the_libraries_load_planted_weights_offline(offline, encoder, key, prefix):
    planted = offline[key]
    model = create_model(ModelConfig(encoder=encoder, encoder_weights="imagenet", **UNET), 2)
    state = model.encoder.state_dict()
    for name, value in planted.items():
        if not name.startswith("fc."):  # the classifier is not part of an encoder
            assert torch.equal(state[prefix + name], value), name
    # Without pretrained weights (prediction: a checkpoint goes in next) the encoder is random.
    scratch = create_model(ModelConfig(encoder=encoder, encoder_weights="imagenet", **UNET), 2, pretrained=False)
    assert not torch.equal(scratch.encoder.state_dict()[prefix + "conv1.weight"], planted["conv1.weight"])


@pytest.mark.parametrize(("encoder", "key", "prefix"), [("tu-resnet18", "timm", "model."), ("resnet18", "smp", "")])
def test_other_input_channels_adapt_the_first_convolution(offline, encoder, key, prefix):
    """One channel: the RGB filters summed, as smp and timm adapt them."""
    model = create_model(ModelConfig(encoder=encoder, encoder_weights="imagenet", in_channels=1, **UNET), 2)
    first = model.encoder.state_dict()[prefix + "conv1.weight"]
    assert first.shape[1] == 1
    torch.testing.assert_close(first, offline[key]["conv1.weight"].sum(dim=1, keepdim=True))
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_missing_weights_offline_name_the_pull_command_and_write_nothing(tmp_path, cut_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = weights_cache(tmp_path / "empty")
    weights = encoder_weights(ModelConfig(encoder="tu-resnet18", encoder_weights="imagenet"))
    with pytest.raises(CompkitError) as info:
        require(weights, cache, download=True)
    message = str(info.value)
    assert "\n" not in message and info.value.path == "model.encoder_weights"
    assert "tu-resnet18 weights 'a1_in1k' (timm/resnet18.a1_in1k)" in message and "HF_HUB_OFFLINE is set" in message
    assert message.endswith(f"compkit weights pull tu-resnet18.a1_in1k --cache {tmp_path / 'empty'}")
    assert not cut_network, "HF_HUB_OFFLINE: not even a probe"
    assert not (tmp_path / "empty").exists()


def test_missing_weights_without_network_fail_at_once_and_write_nothing(tmp_path, cut_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    cache = weights_cache(tmp_path / "empty")
    weights = encoder_weights(ModelConfig(encoder="resnet18", encoder_weights="ssl"))
    with pytest.raises(
        CompkitError, match=r"huggingface.co cannot be reached from here; .*compkit weights pull resnet18.ssl --cache"
    ):
        require(weights, cache, download=True)
    assert len(cut_network) == 1, "one quick probe, not the download client's retries"
    assert not (tmp_path / "empty").exists()
    with pytest.raises(CompkitError, match=r"run: compkit weights pull resnet18.ssl"):
        create_model(ModelConfig(encoder="resnet18", encoder_weights="ssl", **UNET), 2, cache=cache)


def test_normalisation_follows_the_encoders_weights(offline):
    native = ModelConfig(encoder="resnet18", encoder_weights="imagenet")
    assert encoder_normalisation(native) == (tuple(PLANTED_MEAN), tuple(PLANTED_STD)), "the smp entry's config.json"
    assert encoder_normalisation(ModelConfig(encoder="tu-resnet18", encoder_weights=True)) == (
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )
    import timm

    inception = timm.models.get_pretrained_cfg("inception_v3")
    assert encoder_normalisation(ModelConfig(encoder="tu-inception_v3", encoder_weights=True)) == (
        inception.mean,
        inception.std,
    )
    recipe = Recipe(model=native)
    assert Normaliser(recipe).mean.tolist() == pytest.approx([v * 255 for v in PLANTED_MEAN])
    recipe.data.mean = (0.1, 0.2, 0.3)  # a recipe's own values win
    assert Normaliser(recipe).mean.tolist() == pytest.approx([25.5, 51.0, 76.5])


class Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_in_hub_weights_does_not_run(tmp_path, cut_network, monkeypatch):
    """A hub entry that publishes pytorch_model.bin (no safetensors): timm unpickles it with weights_only=True."""
    import io

    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"conv1.weight": Payload(marker)}, buffer)
    plant_hub_entry(tmp_path / "w" / "hub", "timm/resnet18.a1_in1k", {"pytorch_model.bin": buffer.getvalue()})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CompkitError, match=r"cannot load tu-resnet18 weights 'a1_in1k'") as info:
        create_model(
            ModelConfig(encoder="tu-resnet18", encoder_weights="imagenet", **UNET),
            2,
            cache=weights_cache(tmp_path / "w"),
        )
    assert info.value.path.endswith("pytorch_model.bin")
    assert not marker.exists(), "the weights file ran code"
    assert not cut_network


def test_the_cache_listing_does_not_depend_on_what_was_imported_first(tmp_path):
    """Asset libraries are registered with the weights cache itself, not by their family's module as it is imported."""
    import subprocess
    import sys

    (tmp_path / "ultralytics").mkdir()
    (tmp_path / "ultralytics" / "yolov8n-seg.pt").write_bytes(b"not really weights")
    listing = (
        "from compkit.pretrained.weights import cached_entries, weights_cache\n"
        f"print([(e.library, e.name, e.tag, e.file.name) for e in cached_entries(weights_cache({str(tmp_path)!r}))])"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    alone, after_families = (
        subprocess.run(
            [sys.executable, "-c", first + listing], capture_output=True, text=True, env=env, check=True
        ).stdout
        for first in ("", "import compkit.families\n")
    )
    assert alone == after_families == "[('ultralytics', 'yolov8n-seg', 'coco', 'yolov8n-seg.pt')]\n"


def test_a_weights_folder_holds_the_hub_cache_layout(tmp_path):
    from compkit.pretrained.weights import HUB_DIR, folder_cache, main_ref, snapshot_folder

    cache = folder_cache(tmp_path)
    assert cache.hub == tmp_path / HUB_DIR == weights_cache(tmp_path).hub
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    assert snapshot_folder(cache, "timm/resnet18.a1_in1k", "abc") == repo / "snapshots" / "abc"
    assert main_ref(cache, "timm/resnet18.a1_in1k") == repo / "refs" / "main"
