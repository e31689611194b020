"""Models: any segmentation-models-pytorch architecture with any smp or timm (``tu-``) encoder, starting from pretrained
encoder weights read offline from the weights cache (:mod:`compkit.pretrained.weights`), a local file, or random weights."""

from __future__ import annotations

import contextlib
import traceback
import warnings

import torch
from torch import nn

from compkit.pretrained.weights import (
    WeightsCache,
    encoder_weights,
    libraries_read,
    require,
    smp_encoder_name,
    weights_cache,
)
from compkit.training.recipe import ModelConfig
from compkit.util.errors import CompkitError, first_line
from compkit.util.registry import did_you_mean


def architectures() -> dict[str, type]:
    import segmentation_models_pytorch as smp

    return {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


def check_encoder(name: str) -> None:
    import segmentation_models_pytorch as smp
    import timm

    if name.startswith("tu-"):
        if not timm.is_model(name[3:]):
            raise CompkitError(
                "model.encoder", f"unknown timm encoder {name!r}{did_you_mean(name[3:], timm.list_models())}"
            )
        return
    known = list(smp.encoders.get_encoder_names())
    if name not in known:
        raise CompkitError(
            "model.encoder", f"unknown encoder {name!r}{did_you_mean(name, known)} (or a timm encoder as tu-<name>)"
        )


def create_model(
    cfg: ModelConfig, num_classes: int, pretrained: bool = True, cache: WeightsCache | None = None
) -> nn.Module:
    """Build ``cfg.arch`` with ``cfg.encoder``; incompatible pairs fail here, before any data is touched.

    ``pretrained``: start the encoder from ``cfg.encoder_weights``, read from ``cache`` (default: the standard
    caches) by smp and timm themselves, offline; missing weights fail with the ``compkit weights pull`` command.
    Without it only the architecture is built (a checkpoint's weights go in next).
    """
    import segmentation_models_pytorch as smp

    archs = architectures()
    lookup = {k.lower(): k for k in archs}
    if cfg.arch.lower() not in lookup:
        raise CompkitError(
            "model.arch",
            f"unknown architecture {cfg.arch!r}{did_you_mean(cfg.arch, list(archs))} (known: {', '.join(archs)})",
        )
    arch = lookup[cfg.arch.lower()]
    check_encoder(cfg.encoder)
    weights = encoder_weights(cfg)
    encoder = smp_encoder_name(cfg, weights)
    kwargs = dict(cfg.params)
    if cfg.aux is not None:
        kwargs["aux_params"] = {"classes": cfg.aux.classes, "dropout": cfg.aux.dropout}
    kwargs["encoder_weights"] = None
    local = pretrained and weights is not None and weights.path is not None
    cached = None
    if pretrained and weights is not None and not local:
        cache = cache or weights_cache()
        cached = require(weights, cache)
        # smp loads a native encoder's tag, timm the tag in the encoder name; both read the cache, offline.
        kwargs["encoder_weights"] = True if weights.library == "timm" else weights.tag
    try:
        with libraries_read(cache) if cached is not None else contextlib.nullcontext():
            model = smp.create_model(
                arch, encoder_name=encoder, in_channels=cfg.in_channels, classes=num_classes, **kwargs
            )
    except Exception as e:
        if kwargs["encoder_weights"] is not None and not isinstance(
            e, (ValueError, KeyError, AssertionError, NotImplementedError)
        ):
            # Reading the weights failed (a damaged file, a pickle that is not plain tensors): name the file.
            source = cached.file if cached is not None else weights.path
            raise CompkitError(source, f"cannot load {weights.name} weights {weights.tag!r}: {first_line(e)}") from None
        # Libraries reject pairs with bare asserts (timm's HRNet: "assert output_stride == 32"): show that line.
        frame = traceback.extract_tb(e.__traceback__)[-1]
        detail = str(e).strip().splitlines()[0] if str(e).strip() else f"{type(e).__name__}: {frame.line}"
        raise CompkitError("model", f"{arch} cannot be built with encoder {cfg.encoder}: {detail}") from None
    if local:
        load_local_encoder_weights(model, weights.path, timm_encoder=encoder.startswith("tu-"))
    return model


def load_local_encoder_weights(model: nn.Module, path: str, timm_encoder: bool) -> None:
    """A local weights file, read by compkit with ``weights_only=True`` whatever the library version (nothing in
    it can run code), into the encoder. A timm file holds the whole classifier: its head is left out, but every
    weight the encoder has must be there."""
    try:
        with warnings.catch_warnings():  # torch's warnings about a foreign file would precede compkit's one line
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError("not a state dict")
        if timm_encoder:
            missing = model.encoder.model.load_state_dict(state, strict=False).missing_keys
            if missing:
                raise ValueError(f"{len(missing)} of the encoder's weights are not in it (first: {missing[0]})")
        else:
            model.encoder.load_state_dict(state)
    except Exception as e:  # wrong keys, not a state dict, unpicklable
        raise CompkitError(path, f"cannot load encoder weights: {first_line(e)}") from None
