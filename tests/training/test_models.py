from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compkit.training.models import create_model
from compkit.training.recipe import ModelConfig
from compkit.util.errors import CompkitError

TINY = {"params": {"decoder_channels": [16, 16, 8, 8, 8]}}


def test_builds_offline_and_runs():
    model = create_model(ModelConfig(arch="Unet", encoder="tu-regnety_002", **TINY), 29)
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 29, 64, 64)


@pytest.mark.parametrize(
    ("arch", "encoder"), [("UnetPlusPlus", "resnet18"), ("FPN", "tu-regnety_002"), ("unet", "resnet18")]
)
def test_any_arch_with_any_encoder(arch, encoder):
    model = create_model(ModelConfig(arch=arch, encoder=encoder), 3)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (dict(arch="Unett", encoder="resnet18"), r"unknown architecture 'Unett' \(did you mean 'Unet'\?\)"),
        (dict(arch="Unet", encoder="resnet19"), r"unknown encoder 'resnet19' \(did you mean 'resnet18'\?\)"),
        (dict(arch="Unet", encoder="tu-regnety_0002"), r"unknown timm encoder 'tu-regnety_0002'"),
        (dict(arch="UnetPlusPlus", encoder="mit_b0"), r"UnetPlusPlus cannot be built with encoder mit_b0"),
        (
            dict(arch="DeepLabV3Plus", encoder="tu-hrnet_w18"),
            r"DeepLabV3Plus cannot be built with encoder tu-hrnet_w18",
        ),
        (
            dict(arch="Unet", encoder="resnet18", encoder_weights="imagenett"),
            r"no published weights 'imagenett' \(did you mean 'imagenet'\?\)",
        ),
        (dict(arch="Unet", encoder="resnet18", encoder_weights="weights/resnet18.pth"), r"file not found"),
    ],
)
def test_bad_model_is_one_clear_error(cfg, message):
    with pytest.raises(CompkitError, match=message):
        create_model(ModelConfig(**cfg), 29)


def test_local_weights_native_encoder(tmp_path):
    source = create_model(ModelConfig(arch="Unet", encoder="resnet18"), 2)
    path = tmp_path / "resnet18.pth"
    torch.save(source.encoder.state_dict(), path)
    model = create_model(ModelConfig(arch="Unet", encoder="resnet18", encoder_weights=str(path)), 2)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)


def test_local_weights_timm_encoder(tmp_path):
    import timm

    backbone = timm.create_model("regnety_002", pretrained=False)
    torch.nn.init.constant_(backbone.stem.conv.weight, 0.125)
    path = tmp_path / "regnety_002.pth"
    torch.save(backbone.state_dict(), path)
    model = create_model(ModelConfig(arch="Unet", encoder="tu-regnety_002", encoder_weights=str(path)), 2)
    weights = [p for name, p in model.encoder.named_parameters() if name.endswith("stem.conv.weight")]
    assert weights and torch.all(weights[0] == 0.125)


def test_local_timm_weights_are_read_by_compkit_without_running_code(tmp_path, monkeypatch):
    """Whatever timm's own torch.load defaults are, compkit reads the file with weights_only=True itself."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"stem.conv.weight": Payload()}))
    with pytest.raises(CompkitError, match="cannot load encoder weights"):
        create_model(ModelConfig(arch="Unet", encoder="tu-regnety_002", encoder_weights=str(path)), 2)
    assert not marker.exists()
    torch.save({"head.fc.weight": torch.zeros(1)}, path)  # a file that lacks the encoder's weights
    with pytest.raises(CompkitError, match=r"of the encoder's weights are not in it"):
        create_model(ModelConfig(arch="Unet", encoder="tu-regnety_002", encoder_weights=str(path)), 2)
    torch.save({"stem.conv.weight": torch.zeros(1)}, path)  # a weight of another shape: the line says which
    with pytest.raises(CompkitError, match=r"size mismatch for stem.conv.weight"):
        create_model(ModelConfig(arch="Unet", encoder="tu-regnety_002", encoder_weights=str(path)), 2)
