"""Pseudo-label round trip: train, ensemble, pseudo, retrain with data.pseudo."""

from __future__ import annotations

import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.data.cache import build_cache
from compkit.data.writer import trace_polygons
from compkit.stages.ensemble import ensemble
from compkit.stages.pseudo import confidence, pseudo
from compkit.stages.train import train
from compkit.training.checkpoint import load_checkpoint
from compkit.util.errors import CompkitError
from tests.conftest import FAST, quiet


def test_confidence_and_tracing():
    probs = np.zeros((3, 10, 10), np.float32)
    probs[0, 2:6, 2:6] = 0.95  # confident blob
    probs[1, 2:6, 2:6] = 0.5  # all uncertain
    c = confidence(probs)
    assert c[0] == 1.0 and c[1] == 0.0 and c[2] == 1.0
    polygons = trace_polygons(probs[0] > 0.5)
    assert len(polygons) == 1 and sorted(map(tuple, polygons[0])) == [(2, 2), (2, 5), (5, 2), (5, 5)]


@pytest.mark.slow
def test_round_trip(trained_tiny_run, tmp_path):
    data = trained_tiny_run.data  # read-only: everything below writes under tmp_path
    ens = ensemble([trained_tiny_run.run], name="e", out=tmp_path / "ens", console=quiet())
    with pytest.raises(CompkitError, match="no test image reaches"):
        pseudo(ens, tmp_path / "none", min_confidence=1.0, console=quiet())
    out = pseudo(ens, tmp_path / "pseudo", min_confidence=0.0, max_images=3, console=quiet())
    labelled = open_dataset(out)
    assert labelled.format_name == "handbone" and len(labelled) == 3
    assert all(s.meta for s in labelled.samples), "meta travels with the pseudo set"
    test_ids = {s.image_id for s in open_dataset(data, "test").samples}
    assert {s.image_id for s in labelled.samples} <= test_ids

    # --soft: uncertain pixels are written as ignore masks, cached, and left out of the loss.
    soft = pseudo(ens, tmp_path / "soft", min_confidence=0.0, max_images=3, soft=True, console=quiet())
    soft_set = open_dataset(soft)
    sample = soft_set.samples[0]
    ignore = soft_set.read_ignore(sample, soft_set.image_shape(sample))
    assert ignore is not None and ignore.shape == (29, 96, 96) and ignore.any()
    cache = build_cache(soft_set, 64, console=quiet())
    assert cache.ignore(0) is not None and cache.ignore(0).shape == (29, 64, 64)
    assert open_dataset(out).read_ignore(labelled.samples[0], (96, 96)) is None
    train(
        "tiny",
        data=data,
        fold="1",
        overrides=[*FAST, "train.epochs=1", f"data.pseudo={soft}"],
        out=tmp_path / "soft-run",
        console=quiet(),
    )

    # Retraining with data.pseudo: 6 fold images + 3 pseudo = 9, batch 3 -> 3 steps instead of 2.
    train(
        "tiny",
        data=data,
        fold="0",
        overrides=[*FAST, "train.epochs=1", f"data.pseudo={out}"],
        out=tmp_path / "again",
        console=quiet(),
    )
    ckpt = load_checkpoint(tmp_path / "again" / "tiny" / "fold0" / "last.pt")
    assert ckpt["schedule"]["step"] == 3

    with pytest.raises(CompkitError, match="already exists and is not empty"):
        pseudo(ens, out, min_confidence=0.0, max_images=1, console=quiet())
    pseudo(ens, out, min_confidence=0.0, max_images=1, exist_ok=True, console=quiet())
    assert len(open_dataset(out)) == 1
