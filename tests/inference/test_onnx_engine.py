"""compkit.inference.onnx_engine: metadata written and read back, staleness, an onnxruntime network called like a
torch module, and one line where the packages are missing."""

from __future__ import annotations

import sys

import pytest
import torch

from compkit.inference.onnx_engine import (
    OnnxNetwork,
    check_current,
    file_digest,
    providers,
    read_metadata,
    require,
    write_metadata,
)
from compkit.util.errors import CompkitError

onnx = pytest.importorskip("onnx", reason="the onnx extra (pip install 'compkit[onnx]') is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def doubling_model(path):
    """A real ONNX model: y = x + x, dynamic batch, height and width, with someone else's metadata entry."""
    from onnx import TensorProto, helper

    shape = ["batch", 3, "height", "width"]
    graph = helper.make_graph(
        [helper.make_node("Add", ["image", "image"], ["logits"])],
        "double",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "stride", "32"
    onnx.save(model, str(path))
    return path


def test_metadata_round_trip_keeps_other_entries(tmp_path):
    path = doubling_model(tmp_path / "model.onnx")
    write_metadata(path, {"classes": ["a", "b"], "mean": [0.5, 0.5, 0.5], "window": None})
    write_metadata(path, {"classes": ["a", "b"], "fold": 1})  # rewritten, not appended
    assert read_metadata(path) == {"classes": ["a", "b"], "fold": 1}
    others = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert others["stride"] == "32", "metadata of the exporter (ultralytics writes its own) is kept"


def test_a_changed_checkpoint_makes_the_model_stale(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    path = doubling_model(tmp_path / "model.onnx")
    write_metadata(path, {"classes": ["a"], "checkpoint_sha256": file_digest(checkpoint)})
    assert check_current(path, checkpoint)["classes"] == ["a"]
    assert check_current(path, tmp_path / "absent.pt")["classes"] == ["a"], "an upload may carry the model alone"
    checkpoint.write_bytes(b"other weights")
    with pytest.raises(CompkitError, match="stale"):
        check_current(path, checkpoint)


def test_models_compkit_did_not_export_and_unreadable_files_are_refused(tmp_path):
    with pytest.raises(CompkitError, match="not exported by compkit"):
        check_current(doubling_model(tmp_path / "model.onnx"), None)
    broken = tmp_path / "broken" / "model.onnx"
    broken.parent.mkdir()
    broken.write_bytes(b"\x08\x07 not protobuf")
    with pytest.raises(CompkitError, match="not a readable ONNX model"):
        read_metadata(broken)
    with pytest.raises(CompkitError, match="compkit export onnx"):
        check_current(tmp_path / "nowhere" / "fold0" / "model.onnx", None)


def test_the_network_is_called_like_a_torch_module(tmp_path):
    network = OnnxNetwork(doubling_model(tmp_path / "model.onnx"), torch.device("cpu"), threads=1)
    assert network.eval() is network
    for shape in ((1, 3, 32, 32), (3, 3, 64, 96)):
        x = torch.randn(shape)
        y = network(x)
        assert isinstance(y, torch.Tensor) and y.shape == x.shape
        assert torch.allclose(y, 2 * x)
    assert network(torch.randn(1, 3, 8, 8, dtype=torch.float64)).dtype == torch.float32


def test_the_cuda_provider_only_where_onnxruntime_has_it():
    import onnxruntime as ort

    assert providers(torch.device("cpu")) == ["CPUExecutionProvider"]
    chosen = providers(torch.device("cuda", 1))
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert chosen == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    else:  # the CPU build (pip install onnxruntime): a GPU machine still predicts, on the CPU
        assert chosen == ["CPUExecutionProvider"]


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: import raises ImportError
    with pytest.raises(CompkitError, match=r"compkit\[onnx\]"):
        require("onnxruntime")
