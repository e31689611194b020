"""``compkit export onnx`` and ``compkit predict --engine onnx``: a run's folds as ONNX models, verified against the
torch model at export, predicting the same stores within 1/255 through onnxruntime, refused when stale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from compkit.families.loading import fold_classes
from compkit.inference.loaded_run import load_run
from compkit.inference.onnx_engine import ONNX_FILE, file_digest, read_metadata
from compkit.stages import export as export_stage
from compkit.stages.export import export_onnx
from compkit.stages.predict import predict
from compkit.stores.probabilities import Store
from compkit.util.errors import CompkitError
from tests.conftest import copy_run, quiet
from tests.stages.test_predict import ROUNDING, max_difference
from tests.test_cli import assert_one_line_error
from tests.test_cli import run as cli

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'compkit[onnx]') is not installed")


@pytest.fixture(scope="module")
def exported(trained_tiny_run, tmp_path_factory):
    """A copy of the session's tiny run with both folds exported (read-only: copy it before changing it)."""
    run = copy_run(trained_tiny_run.run, tmp_path_factory.mktemp("onnx") / "tiny")
    models = export_onnx(run, console=quiet())
    return run, models


def test_every_fold_exports_with_its_settings_in_the_metadata(exported):
    run, models = exported
    assert models == [run / "fold0" / ONNX_FILE, run / "fold1" / ONNX_FILE]
    metadata = read_metadata(models[0])
    assert metadata["classes"] == fold_classes(run / "fold0") == Store(run / "fold0" / "test").classes
    assert metadata["family"] == "smp" and metadata["image_size"] == 64 and metadata["fold"] == 0
    assert len(metadata["mean"]) == 3 and len(metadata["std"]) == 3
    assert metadata["checkpoint_sha256"] == file_digest(run / "fold0" / "best.pt")
    assert "sigmoid" in metadata["output"]
    assert not [p for p in (run / "fold0").iterdir() if p.name.startswith(".")], "no partial file left"


def test_the_model_has_dynamic_batch_height_and_width(exported):
    import onnxruntime as ort

    _, models = exported
    session = ort.InferenceSession(str(models[0]), providers=["CPUExecutionProvider"])
    [image] = session.get_inputs()
    assert image.shape[0] == "batch" and image.shape[2:] == ["height", "width"]
    for batch, side in ((1, 64), (3, 96)):
        [logits] = session.run(None, {image.name: np.zeros((batch, 3, side, side), np.float32)})
        assert logits.shape[0] == batch and logits.shape[2:] == (side, side)


@pytest.mark.parametrize("tta", ["hflip", "scales"])
def test_onnx_stores_equal_the_torch_stores(exported, tmp_path, tta):
    run, _ = exported
    torch_stores = predict([run], tta=tta, device="cpu", out=tmp_path / "torch", console=quiet())
    onnx_stores = predict([run], tta=tta, device="cpu", out=tmp_path / "onnx", engine="onnx", console=quiet())
    assert len(onnx_stores) == 2
    for a, b in zip(torch_stores, onnx_stores, strict=True):
        assert max_difference(Store(a), Store(b)) <= ROUNDING


def test_load_run_with_the_onnx_engine(exported, trained_tiny_run):
    run, _ = exported
    image = cv2.imread(str(next((trained_tiny_run.data / "test").rglob("*.png"))))
    torch_probs = load_run(run, device="cpu").predict(image)
    onnx_probs = load_run(run, device="cpu", engine="onnx").predict(image)
    assert onnx_probs.shape == torch_probs.shape == (len(Store(run / "fold0" / "test").classes), *image.shape[:2])
    assert float(np.abs(onnx_probs - torch_probs).max()) <= 1e-4


def test_an_export_elsewhere_predicts_without_the_checkpoints(exported, trained_tiny_run, tmp_path):
    run, _ = exported
    export_onnx(run, fold="1", out=tmp_path / "upload", console=quiet())
    copy = tmp_path / "upload" / "tiny"
    assert sorted(p.name for p in copy.iterdir()) == ["fold1"]
    assert not (copy / "fold1" / "best.pt").exists() and (copy / "fold1" / "oof").is_dir()
    [store] = predict([copy], device="cpu", engine="onnx", console=quiet())
    assert max_difference(Store(store), Store(run / "fold1" / "test")) <= ROUNDING
    with pytest.raises(CompkitError, match="best.pt|last.pt|checkpoint"):
        predict([copy], device="cpu", exist_ok=True, console=quiet())  # the torch engine needs the checkpoint


def test_a_stale_export_is_refused(exported, tmp_path):
    run = copy_run(exported[0], tmp_path / "tiny")
    with open(run / "fold0" / "best.pt", "ab") as handle:
        handle.write(b"\0")  # the fold's checkpoint changed after the export (it trained on)
    with pytest.raises(CompkitError, match="stale"):
        predict([run], device="cpu", out=tmp_path / "out", engine="onnx", console=quiet())


def test_a_run_without_exports_says_how_to_make_them(trained_tiny_run, tmp_path):
    with pytest.raises(CompkitError, match="compkit export onnx"):
        predict([trained_tiny_run.run], device="cpu", out=tmp_path / "out", engine="onnx", console=quiet())


def test_an_export_that_differs_from_torch_is_refused_and_nothing_is_written(trained_tiny_run, tmp_path, monkeypatch):
    run = copy_run(trained_tiny_run.run, tmp_path / "tiny")
    monkeypatch.setattr(export_stage, "EXPORT_TOLERANCE", -1.0)  # no export can pass
    with pytest.raises(CompkitError, match="differ from the torch model"):
        export_onnx(run, fold="0", console=quiet())
    assert not [p.name for p in (run / "fold0").iterdir() if "onnx" in p.name]


def test_a_model_with_an_auxiliary_head_exports_its_masks(trained_fundus_aux, tmp_path):
    run = copy_run(trained_fundus_aux.run, tmp_path / "tiny")
    [model] = export_onnx(run, console=quiet())
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"], "the classification head is left out"


def test_the_command_line(exported, tmp_path):
    run = copy_run(exported[0], tmp_path / "tiny")
    for fold in ("fold0", "fold1"):
        (run / fold / ONNX_FILE).unlink()
    result = cli("export", "onnx", run, "--fold", "0")
    assert result.exit_code == 0, result.output
    assert "max |Δp|" in result.stdout and f"compkit predict {run} --engine onnx" in result.stdout
    assert (run / "fold0" / ONNX_FILE).is_file() and not (run / "fold1" / ONNX_FILE).exists()
    result = cli("predict", run / "fold0", "--engine", "onnx", "--device", "cpu", "--exist-ok")
    assert result.exit_code == 0, result.output
    assert "onnx" in result.stdout
    assert_one_line_error(cli("predict", run, "--engine", "tensorrt", "--device", "cpu"), "--engine", "tensorrt")
    assert_one_line_error(cli("export", "onnx", run, "--fold", "7"), "--fold")
