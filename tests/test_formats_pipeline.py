"""The fundus (masks) and skin-lesion (isic) formats through split, train, ensemble, submit and score unchanged."""

from __future__ import annotations

import pytest

from compkit.stages.ensemble import ensemble
from compkit.stages.score import score
from compkit.stages.split import split
from compkit.stages.submit import submit
from compkit.stages.synth import synth
from compkit.stages.train import train
from compkit.util.fileio import read_json
from tests.conftest import FAST, csv_rows, quiet

# Test mean dice after 1 epoch, measured: isic 0.33 (an empty submission scores 0.0), a floor comfortably below.
# Fundus: 0.001 with thresholds kept only where cross-validation confirms them (0.084 with in-sample ones, which
# an empty submission matches: most lesion classes are absent from most eyes); one epoch learns no lesion, so no floor.
SCORE_FLOORS = {"fundus": 0.0, "isic": 0.15}


@pytest.fixture
def dataset_of_kind(request, tmp_path, fundus_copy):
    """A private dataset of the kind: the session's fundus dataset copied, or a fresh skin-lesion one."""
    if request.param == "fundus":
        return fundus_copy
    data = tmp_path / "data"
    synth(data, patients=3, test_patients=1, size=96, kind=request.param, console=quiet())
    return data


@pytest.mark.parametrize(
    ("dataset_of_kind", "kind", "classes", "first_name"),
    [("fundus", "fundus", 6, "0004_1.png"), ("isic", "isic", 1, "ISIC_")],
    indirect=["dataset_of_kind"],
)
@pytest.mark.slow
def test_pipeline(tmp_path, dataset_of_kind, kind, classes, first_name):
    data = dataset_of_kind
    split(data, folds=2, seed=0, console=quiet())
    train("tiny", data=data, fold="all", overrides=[*FAST, "train.epochs=1"], out=tmp_path / "runs", console=quiet())
    ens = ensemble([tmp_path / "runs" / "tiny"], name=kind, out=tmp_path / "ens", console=quiet())
    out = submit(ens, out=tmp_path / f"{kind}.csv", console=quiet())
    rows = csv_rows(out)
    assert len({r[1] for r in rows[1:]}) == classes
    assert rows[1][0].startswith(first_name)
    assert score(out, data, console=quiet()) >= SCORE_FLOORS[kind]
    figures = read_json(ens / "members.json")  # what the ensemble kept never loses to 0.5 held out
    assert figures["oof_dice_cross_validated"] >= figures["oof_dice_at_0.5"]
