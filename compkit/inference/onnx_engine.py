"""ONNX models of trained folds: the file a fold exports to, the metadata it carries, and a network that runs it in
onnxruntime behind the same call as a torch module (tensor in, tensor out), so TTA views, sliding windows and
resampling around it stay compkit's own code whichever engine computes the network.

A fold's ONNX model is ``fold<k>/model.onnx``. Its metadata (``compkit.*`` entries of the model's
``metadata_props``) make it usable without compkit: the classes, the input normalisation, the input size, the TTA
views, the family, and the digest of the checkpoint it was exported from (a model whose ``best.pt`` has changed
since is refused as stale, never silently used).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compkit.util.errors import CompkitError

ONNX_FILE = "model.onnx"
DEFAULT_OPSET = 17
ONNX_INPUT, ONNX_OUTPUT = "image", "logits"  # the names of a segmentation network's input and output
#: The most the exported model's probabilities may differ from the torch model's on the run's own images.
EXPORT_TOLERANCE = 1e-4
METADATA_PREFIX = "compkit."
INSTALL_HINT = "pip install 'compkit[onnx]' (onnx and onnxruntime)"


def require(module: str) -> Any:
    """``onnx`` or ``onnxruntime``, or one line saying how to install them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CompkitError("--engine onnx", f"needs the {module} package: {INSTALL_HINT}") from None


def file_digest(path: Path) -> str:
    """sha256 of a file, read in chunks (checkpoints run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_metadata(path: Path, entries: dict[str, Any]) -> None:
    """Add ``compkit.<key>`` entries (JSON values) to the model's metadata, in place."""
    onnx = require("onnx")
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, json.dumps(value)
    onnx.save(model, str(path))


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``compkit.*`` metadata of an exported model (keys without the prefix), read from the file's protobuf
    without building an inference session (the session that predicts is built once, by :class:`OnnxNetwork`)."""
    onnx = require("onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's decode errors have no common public type
        raise CompkitError(path, f"not a readable ONNX model: {str(e).splitlines()[0]}") from None
    return {
        entry.key[len(METADATA_PREFIX) :]: json.loads(entry.value)
        for entry in model.metadata_props
        if entry.key.startswith(METADATA_PREFIX)
    }


def providers(device: torch.device) -> list[str]:
    """onnxruntime's CUDA provider where it is installed and the device is a GPU, else the CPU."""
    ort = require("onnxruntime")
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def check_current(path: Path, checkpoint: Path | None) -> dict[str, Any]:
    """The model's metadata, after checking it was exported from ``checkpoint`` as it is now (where it is here:
    an uploaded copy may carry the ONNX model alone)."""
    if not path.is_file():
        raise CompkitError(path, f"no ONNX model: run `compkit export onnx {path.parent.parent}` first")
    metadata = read_metadata(path)
    if "classes" not in metadata:
        raise CompkitError(path, "not exported by compkit (no compkit.classes metadata)")
    exported_from = metadata.get("checkpoint_sha256")
    if checkpoint is not None and checkpoint.is_file() and exported_from != file_digest(checkpoint):
        raise CompkitError(
            path,
            f"stale: exported from another {checkpoint.name} (the fold trained on since): "
            f"run `compkit export onnx {path.parent.parent}` again",
        )
    return metadata


class OnnxNetwork:
    """An exported network in onnxruntime, called like the torch module it came from: a float tensor batch in,
    the first output as a float tensor out (on the input's device)."""

    def __init__(self, path: Path, device: torch.device, threads: int | None = None):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=providers(device))
        self.input_name = self.session.get_inputs()[0].name

    def eval(self) -> OnnxNetwork:
        return self  # a torch module's call made before predicting; an ONNX model is always in inference mode

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        inputs = np.ascontiguousarray(images.detach().float().cpu().numpy())
        output = self.session.run(None, {self.input_name: inputs})[0]
        return torch.from_numpy(output).to(images.device)
