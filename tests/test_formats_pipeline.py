"""The fundus (masks) and skin-lesion (isic) formats through split, train, ensemble, submit and score unchanged."""
from __future__ import annotations

import csv

import pytest

from compkit.ensemble import ensemble
from compkit.score import score
from compkit.split import split
from compkit.submit import submit
from compkit.synth import synth
from compkit.train import train
from tests.conftest import quiet
from tests.test_train import FAST


@pytest.mark.parametrize(("kind", "classes", "first_name"), [("fundus", 6, "0004_1.png"), ("isic", 1, "ISIC_")])
def test_pipeline(tmp_path, kind, classes, first_name):
    data = tmp_path / "data"
    synth(data, patients=3, test_patients=1, size=96, kind=kind, console=quiet())
    split(data, folds=2, seed=0, console=quiet())
    train("tiny", data=data, fold="all", overrides=[*FAST, "train.epochs=1"], runs_dir=tmp_path / "runs", console=quiet())
    ens = ensemble([tmp_path / "runs" / "tiny"], name=kind, out_dir=tmp_path / "ens", console=quiet())
    out = submit(ens, out=tmp_path / f"{kind}.csv", console=quiet())
    rows = list(csv.reader(open(out)))
    assert len({r[1] for r in rows[1:]}) == classes
    assert rows[1][0].startswith(first_name)
    assert 0.0 <= score(out, data, console=quiet()) <= 1.0
