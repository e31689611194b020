"""Models: any segmentation-models-pytorch architecture with any smp or timm (``tu-``) encoder, built offline."""
from __future__ import annotations

import traceback
import warnings
from pathlib import Path

import torch
from torch import nn

from compkit.errors import CompkitError, first_line
from compkit.recipe import ModelConfig, did_you_mean


def architectures() -> dict[str, type]:
    import segmentation_models_pytorch as smp

    return {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


def check_encoder(name: str) -> None:
    import segmentation_models_pytorch as smp
    import timm

    if name.startswith("tu-"):
        if not timm.is_model(name[3:]):
            raise CompkitError("model.encoder", f"unknown timm encoder {name!r}{did_you_mean(name[3:], timm.list_models())}")
        return
    known = list(smp.encoders.get_encoder_names())
    if name not in known:
        raise CompkitError("model.encoder", f"unknown encoder {name!r}{did_you_mean(name, known)} (or a timm encoder as tu-<name>)")


def _weights_file(cfg: ModelConfig) -> Path | None:
    if cfg.encoder_weights is None:
        return None
    path = Path(cfg.encoder_weights).expanduser()
    if not path.is_file():
        raise CompkitError(
            cfg.encoder_weights,
            "model.encoder_weights must be null or a local weights file (compkit never downloads weights); file not found",
        )
    return path


def create_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build ``cfg.arch`` with ``cfg.encoder``; incompatible pairs fail here, before any data is touched."""
    import segmentation_models_pytorch as smp

    archs = architectures()
    lookup = {k.lower(): k for k in archs}
    if cfg.arch.lower() not in lookup:
        raise CompkitError("model.arch", f"unknown architecture {cfg.arch!r}{did_you_mean(cfg.arch, list(archs))} (known: {', '.join(archs)})")
    arch = lookup[cfg.arch.lower()]
    check_encoder(cfg.encoder)
    weights = _weights_file(cfg)
    kwargs = dict(cfg.params)
    if cfg.aux is not None:
        kwargs["aux_params"] = {"classes": cfg.aux.classes, "dropout": cfg.aux.dropout}
    timm_encoder = cfg.encoder.startswith("tu-")
    if weights is not None and timm_encoder:
        # timm loads the file itself; a string would mean "download" to smp, so pass True plus the file.
        kwargs.update(encoder_weights=True, pretrained_cfg_overlay={"file": str(weights)})
    else:
        kwargs["encoder_weights"] = None
    try:
        model = smp.create_model(arch, encoder_name=cfg.encoder, in_channels=cfg.in_channels, classes=num_classes, **kwargs)
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError, NotImplementedError, AssertionError) as e:
        # Libraries reject pairs with bare asserts (timm's HRNet: "assert output_stride == 32"): show that line.
        frame = traceback.extract_tb(e.__traceback__)[-1]
        detail = str(e).strip().splitlines()[0] if str(e).strip() else f"{type(e).__name__}: {frame.line}"
        raise CompkitError("model", f"{arch} cannot be built with encoder {cfg.encoder}: {detail}") from None
    if weights is not None and not timm_encoder:
        try:
            with warnings.catch_warnings():  # torch's warnings about a foreign file would precede compkit's one line
                warnings.simplefilter("ignore")
                state = torch.load(weights, map_location="cpu", weights_only=True)
            model.encoder.load_state_dict(state)
        except Exception as e:  # wrong keys, not a state dict, unpicklable
            raise CompkitError(weights, f"cannot load encoder weights: {first_line(e)}") from None
    return model
