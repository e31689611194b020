from __future__ import annotations

import numpy as np
import pytest

from compkit.stores.probabilities import Store, StoreWriter
from compkit.util.errors import CompkitError


def test_round_trip_and_quantisation(tmp_path):
    probs = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    with StoreWriter(tmp_path / "s", ["a", "b", "c"], (8, 8)) as w:
        w.write("ID1/x.png", probs, (32, 32))
    store = Store(tmp_path / "s")
    assert store.classes == ["a", "b", "c"] and store.resolution == (8, 8)
    assert store.image_ids == ["ID1/x.png"] and store.original_size("ID1/x.png") == (32, 32)
    assert np.abs(store.read("ID1/x.png") - probs).max() <= 0.5 / 255 + 1e-6
    assert store.read_raw("ID1/x.png").dtype == np.uint8


def test_float16(tmp_path):
    probs = np.full((1, 4, 4), 3 / 7, np.float32)
    with StoreWriter(tmp_path / "s", ["a"], (4, 4), dtype="float16") as w:
        w.write("x", probs, (4, 4))
    assert abs(Store(tmp_path / "s").read("x")[0, 0, 0] - 3 / 7) < 1e-3


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), StoreWriter(tmp_path / "s", ["a"], (4, 4)) as w:
        w.write("x", np.zeros((1, 4, 4)), (4, 4))
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tmp_path):
    with StoreWriter(tmp_path / "s", ["a"], (4, 4)) as w:
        with pytest.raises(CompkitError, match="NaN"):
            w.write("x", np.full((1, 4, 4), np.nan), (4, 4))
        with pytest.raises(ValueError, match="shape"):
            w.write("x", np.zeros((2, 4, 4)), (4, 4))
        w.write("y", np.zeros((1, 4, 4)), (4, 4))
    path = tmp_path / "s" / "y.npy"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CompkitError, match="truncated"):
        Store(tmp_path / "s").read("y")
    with pytest.raises(CompkitError, match="not a probability store"):
        Store(tmp_path)
