from __future__ import annotations

import json
from collections import Counter

import pytest

from compkit.data import open_dataset
from compkit.stages.split import load_splits, make_splits, split
from compkit.stages.synth import synth
from compkit.util.errors import CompkitError
from tests.conftest import quiet
from tests.layouts import read_only_modes


@pytest.fixture(scope="module")
def bigger_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("split") / "data"
    synth(root, patients=30, test_patients=0, size=64, seed=3, console=quiet())
    return root


def check_invariants(dataset, splits, folds):
    ids = {s.image_id for s in dataset.samples}
    patient = {s.image_id: s.patient for s in dataset.samples}
    assert len(splits["folds"]) == folds
    val_counts = Counter(i for fold in splits["folds"] for i in fold["val"])
    assert set(val_counts) == ids and set(val_counts.values()) == {1}, "every image in exactly one validation fold"
    for fold in splits["folds"]:
        assert set(fold["train"]) | set(fold["val"]) == ids
        assert not set(fold["train"]) & set(fold["val"])
        assert not {patient[i] for i in fold["train"]} & {patient[i] for i in fold["val"]}, "patient in two folds"


@pytest.mark.parametrize("stratify", [None, "sex", "age"])
def test_invariants(bigger_data, stratify):
    dataset = open_dataset(bigger_data)
    splits = make_splits(dataset, 5, 21, stratify)
    check_invariants(dataset, splits, 5)
    assert splits["method"] == ("StratifiedGroupKFold" if stratify else "GroupKFold")
    assert splits["stratify"] == stratify


def test_deterministic_and_seeded(bigger_data):
    dataset = open_dataset(bigger_data)
    assert make_splits(dataset, 5, 21, "sex") == make_splits(dataset, 5, 21, "sex")
    assert make_splits(dataset, 5, 21, "sex")["folds"] != make_splits(dataset, 5, 22, "sex")["folds"]


def test_stratification_balances_sex(bigger_data):
    dataset = open_dataset(bigger_data)
    sex = {s.image_id: s.meta["sex"] for s in dataset.samples}
    overall = sum(v == "male" for v in sex.values()) / len(sex)
    splits = make_splits(dataset, 3, 21, "sex")
    for fold in splits["folds"]:
        share = sum(sex[i] == "male" for i in fold["val"]) / len(fold["val"])
        assert abs(share - overall) <= 0.15


def test_writes_file_and_reuses_it(tmp_path, bigger_data, data_copy):
    path = split(data_copy, folds=3, seed=21, stratify="sex", console=quiet())
    written = json.loads(path.read_text())
    assert written["seed"] == 21 and written["num_folds"] == 3 and written["stratify"] == "sex"
    assert load_splits(data_copy) == written
    before = path.stat().st_mtime_ns
    split(data_copy, folds=3, seed=21, stratify="sex", console=quiet())
    assert path.stat().st_mtime_ns == before, "same settings reuse the file"
    with pytest.raises(CompkitError, match="pass --exist-ok to replace it"):
        split(data_copy, folds=4, seed=21, stratify="sex", console=quiet())
    split(data_copy, folds=4, seed=21, stratify="sex", exist_ok=True, console=quiet())
    assert len(load_splits(data_copy)["folds"]) == 4


def test_errors(data_copy):
    with pytest.raises(CompkitError, match="run `compkit split"):
        load_splits(data_copy)
    with pytest.raises(CompkitError, match="no meta column 'bmi'"):
        split(data_copy, folds=2, stratify="bmi", console=quiet())
    with pytest.raises(CompkitError, match="cannot fill 7 folds"):
        split(data_copy, folds=7, console=quiet())


def test_read_only_data_needs_out(data_copy, tmp_path):
    with read_only_modes(data_copy):
        with pytest.raises(CompkitError, match="is read-only: pass --out FILE"):
            split(data_copy, folds=2, console=quiet())
        assert not (data_copy / "splits.json").exists()
        path = split(data_copy, folds=2, out=tmp_path / "splits.json", console=quiet())
        assert path == tmp_path / "splits.json" and len(load_splits(data_copy, path)["folds"]) == 2
