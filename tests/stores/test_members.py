"""compkit.stores.members: fold, run, ensemble and store folders and submission CSVs read back as ensemble members."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml
from rich.console import Console

from compkit.stores.members import Member, dataset_root, open_member, open_stores_member, resolve_thresholds
from compkit.stores.probabilities import Store, StoreWriter
from compkit.util.errors import CompkitError
from compkit.util.fileio import write_json
from tests.conftest import quiet

CLASSES = ["a", "b", "c"]
IDS = ["P1/x.png", "P2/y.png"]


def make_store(folder, fill, resolution=(8, 8), ids=IDS, classes=CLASSES, box=None):
    """A store whose image k holds ``fill(k)`` (a number, or an array of the store's shape)."""
    with StoreWriter(folder, classes, resolution) as w:
        for k, image_id in enumerate(ids):
            value = fill(k)
            probs = np.broadcast_to(np.asarray(value, np.float32), (len(classes), *resolution))
            w.write(image_id, np.array(probs), (32, 48), box)
    return folder


def make_fold(folder, value=0.5, oof_ids=None, recipe=None, **store_args):
    """A fold folder as training leaves it, minus checkpoints: recipe.yaml, test/ and (optionally) oof/."""
    folder.mkdir(parents=True)
    recipe = (
        {"name": "tiny", "data": {"root": "/datasets/hands"}, "model": {"family": "smp", "arch": "Unet"}}
        if recipe is None
        else recipe
    )
    (folder / "recipe.yaml").write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    make_store(folder / "test", lambda k: value, **store_args)
    if oof_ids:
        make_store(folder / "oof", lambda k: value, ids=oof_ids)
    return folder


# Fold, run, ensemble, store and CSV folders


def test_a_trained_fold_and_run(trained_tiny_run):
    data, run = trained_tiny_run
    fold = open_member(run / "fold1")
    assert fold.kind == "stores" and fold.name == "fold1" and fold.path == run / "fold1"
    assert [s.folder for s in fold.test_stores] == [run / "fold1" / "test"]
    assert [s.folder for s in fold.oof_stores] == [run / "fold1" / "oof"]
    assert fold.data_root == str(data.absolute()) and fold.families == ["smp"] and fold.description == "smp"
    assert fold.resolution == (64, 64) and len(fold.classes) == 29 and len(fold.image_ids) == 4
    assert fold.thresholds is None and fold.postprocess is None
    member = open_member(run)
    assert member.name == "tiny" and len(member.test_stores) == 2
    assert len(member.oof_index()) == 12, "the folds' validation images together: every training image"
    assert member.data_root == fold.data_root and member.families == ["smp"]
    expected = (
        Store(run / "fold0" / "test").read(fold.image_ids[0]) + Store(run / "fold1" / "test").read(fold.image_ids[0])
    ) / 2
    assert np.allclose(member.test_probs(fold.image_ids[0]), expected, atol=1e-6)


def test_run_folder_of_hand_made_folds(tmp_path):
    run = tmp_path / "runs" / "yolo"
    make_fold(
        run / "fold1", 0.2, oof_ids=["P3/z.png"], recipe={"data": {"root": "/d"}, "model": {"family": "ultralytics"}}
    )
    make_fold(
        run / "fold0", 0.6, oof_ids=["P4/w.png"], recipe={"data": {"root": "/d"}, "model": {"family": "ultralytics"}}
    )
    (run / "notes").mkdir()  # not a fold
    member = open_member(run)
    assert [s.folder.parent.name for s in member.test_stores] == ["fold0", "fold1"], "folds in number order"
    assert member.families == ["ultralytics"] and member.data_root == "/d"
    assert {i: s.folder.parent.name for i, s in member.oof_index().items()} == {
        "P4/w.png": "fold0",
        "P3/z.png": "fold1",
    }
    assert member.original_size(IDS[0]) == (32, 48) and member.box(IDS[0]) is None


@pytest.mark.parametrize(
    ("recipe", "root", "families"),
    [
        ({"data": {"root": "/r"}, "model": {"arch": "Unet"}}, "/r", []),  # an older recipe: no family recorded
        ({"model": {"family": "smp"}}, None, ["smp"]),
        ("data: [unclosed", None, []),  # unreadable: the member still opens
        ("- a list\n", None, []),
    ],
)
def test_facts_read_leniently_from_the_fold_recipe(tmp_path, recipe, root, families):
    member = open_member(make_fold(tmp_path / "fold0", recipe=recipe))
    assert member.data_root == root and member.families == families
    assert member.description == ("/".join(families) or "stores")


def test_a_fold_without_a_test_store_needs_predict(tmp_path):
    run = tmp_path / "run"
    make_fold(run / "fold0")
    (run / "fold1").mkdir()
    (run / "fold1" / "recipe.yaml").write_text("{}")
    with pytest.raises(CompkitError, match="no test store: run `compkit predict` on it first") as info:
        open_member(run)
    assert info.value.path == str(run / "fold1")


def test_folds_that_disagree_are_named(tmp_path):
    run = tmp_path / "run"
    make_fold(run / "fold0")
    make_fold(run / "fold1", classes=["a", "b", "z"])
    with pytest.raises(CompkitError, match="classes differ from .*fold0.* within member") as info:
        open_member(run)
    assert info.value.path == str(run / "fold1" / "test")
    other = tmp_path / "other"
    make_fold(other / "fold0")
    make_fold(other / "fold1", ids=[IDS[0]])
    with pytest.raises(CompkitError, match="images differ"):
        open_member(other)


def test_a_bare_store(tmp_path):
    member = open_member(make_store(tmp_path / "probs", lambda k: 0.25, box=(1, 30, 2, 40)))
    assert member.kind == "stores" and member.name == "probs" and member.families == [] and member.data_root is None
    assert member.box(IDS[1]) == (1, 30, 2, 40) and member.oof_stores == []
    assert member.description == "stores"


def test_an_ensemble_folder(tmp_path):
    folder = tmp_path / "ensembles" / "best"
    make_store(folder / "test", lambda k: 0.5)
    make_store(folder / "oof", lambda k: 0.5, ids=["P9/t.png"])
    write_json(folder / "members.json", {"kind": "stores", "data_root": "/d", "families": ["smp", "ultralytics"]})
    write_json(folder / "thresholds.json", {"a": 0.3, "c": 0.7})
    write_json(folder / "postprocess.json", {"b": {"rule": "largest"}})
    member = open_member(folder)
    assert member.kind == "stores" and member.name == "best" and member.data_root == "/d"
    assert member.families == ["smp", "ultralytics"] and member.description == "smp/ultralytics"
    assert list(member.oof_index()) == ["P9/t.png"]
    assert member.postprocess == {"b": {"rule": "largest"}}
    assert member.threshold_vector().tolist() == pytest.approx([0.3, 0.5, 0.7]), (
        "a class without a tuned threshold: 0.5"
    )
    (folder / "oof" / "index.json").unlink()
    (folder / "thresholds.json").unlink()
    (folder / "postprocess.json").unlink()
    bare = open_member(folder)
    assert bare.oof_stores == [] and bare.thresholds is None and bare.postprocess is None
    assert bare.threshold_vector().tolist() == [0.5, 0.5, 0.5]


def test_csv_members(tmp_path):
    vote = tmp_path / "ens" / "v"
    vote.mkdir(parents=True)
    (vote / "vote.csv").write_text("image_name,class,rle\n")
    write_json(vote / "members.json", {"kind": "csv", "data_root": "/d"})
    member = open_member(vote)
    assert member.kind == "csv" and member.path == vote / "vote.csv" and member.data_root == "/d"
    sub = tmp_path / "team-a.CSV"
    sub.write_text("image_name,class,rle\n")
    member = open_member(sub)
    assert member.kind == "csv" and member.name == "team-a" and member.test_stores == []
    with pytest.raises(
        CompkitError, match="needs probabilities: give a run, fold or ensemble folder, not a CSV"
    ) as info:
        open_stores_member(sub, "pseudo-labelling")
    assert info.value.problem.startswith("pseudo-labelling needs")
    with pytest.raises(CompkitError, match="submission CSV not found"):
        open_member(tmp_path / "none.csv")


def test_what_is_not_a_member(tmp_path):
    with pytest.raises(CompkitError, match=r"not found \(expected a run, fold or ensemble folder"):
        open_member(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompkitError, match="not a run or fold folder"):
        open_member(tmp_path / "empty")
    assert open_stores_member(make_store(tmp_path / "s", lambda k: 0.1), "inspect").kind == "stores"


def test_dataset_root(tmp_path):
    member = open_member(make_fold(tmp_path / "fold0"))
    assert dataset_root(member, None) == "/datasets/hands"
    assert dataset_root(member, tmp_path / "mine") == tmp_path / "mine", "--data wins"
    bare = open_member(make_store(tmp_path / "s", lambda k: 0.1))
    with pytest.raises(CompkitError, match="cannot tell which dataset it predicts: pass --data DATA") as info:
        dataset_root(bare, None)
    assert info.value.path == str(tmp_path / "s")


# Thresholds


@pytest.fixture
def tuned(tmp_path):
    member = open_member(make_store(tmp_path / "s", lambda k: 0.5))
    member.thresholds = {"a": 0.2, "b": 0.4, "c": 0.6}
    return member


@pytest.fixture
def untuned(tmp_path):
    return open_member(make_store(tmp_path / "u", lambda k: 0.5))


def recorded():
    return Console(record=True, width=300)


def test_auto_uses_tuned_thresholds_where_there_are_some(tuned, untuned):
    console = recorded()
    assert resolve_thresholds(tuned, "auto", console).tolist() == pytest.approx([0.2, 0.4, 0.6])
    assert resolve_thresholds(tuned, "tuned", console).tolist() == pytest.approx([0.2, 0.4, 0.6])
    assert resolve_thresholds(untuned, "auto", console).tolist() == [0.5, 0.5, 0.5]
    assert console.export_text() == "", "auto falls back to 0.5 silently"


def test_tuned_without_thresholds_warns(untuned):
    console = recorded()
    thresholds = resolve_thresholds(untuned, "tuned", console)
    assert thresholds.tolist() == [0.5, 0.5, 0.5] and thresholds.dtype == np.float32
    assert f"warning: {untuned.path} has no tuned thresholds" in console.export_text().replace("\n", "")


def test_a_number_overrides_tuned_thresholds(tuned):
    assert resolve_thresholds(tuned, "0.35", quiet()).tolist() == pytest.approx([0.35] * 3)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("half", "must be a number, 'tuned' or 'auto', got 'half'"),
        ("1.5", "between 0 and 1, got 1.5"),
        ("0", "between 0 and 1, got 0.0"),
        ("1", "between 0 and 1"),
    ],
)
def test_bad_thresholds(tuned, value, problem):
    with pytest.raises(CompkitError, match=problem) as info:
        resolve_thresholds(tuned, value, quiet())
    assert info.value.path == "--threshold"


# Reading a member's probabilities


def test_test_probs_average_the_folds(tmp_path):
    a = Store(make_store(tmp_path / "a", lambda k: 0.2 + 0.1 * k))
    b = Store(make_store(tmp_path / "b", lambda k: 0.6))
    member = Member(tmp_path, "stores", [a, b])
    assert np.allclose(member.test_probs(IDS[0]), 0.4, atol=1 / 255)
    assert np.allclose(member.test_probs(IDS[1]), 0.45, atol=1 / 255)
    assert member.test_probs(IDS[0]).shape == (3, 8, 8) and member.test_probs(IDS[0]).dtype == np.float32
    assert member.test_uint8(IDS[0]).dtype == np.uint8 and abs(int(member.test_uint8(IDS[0]).max()) - 102) <= 1
    single = Member(tmp_path, "stores", [a])
    assert np.array_equal(single.test_uint8(IDS[1]), a.read_raw(IDS[1])), "one uint8 store is read as it is"


def test_folds_at_different_resolutions_meet_at_the_largest(tmp_path):
    ramp = np.tile(np.linspace(0.0, 1.0, 4, dtype=np.float32), (3, 4, 1))
    small = Store(make_store(tmp_path / "small", lambda k: ramp, resolution=(4, 4)))
    large = Store(make_store(tmp_path / "large", lambda k: 0.2, resolution=(8, 8)))
    member = Member(tmp_path, "stores", [small, large])
    assert member.resolution == (8, 8)
    expected = (cv2.resize(small.read(IDS[0])[0], (8, 8), interpolation=cv2.INTER_LINEAR) + large.read(IDS[0])[0]) / 2
    probs = member.test_probs(IDS[0])
    assert probs.shape == (3, 8, 8) and np.abs(probs[1] - expected).max() <= 1e-6
    assert probs[0, :, 0].mean() < probs[0, :, -1].mean(), "the ramp survived, left to right"
    assert member.test_probs(IDS[0], (4, 4)).shape == (3, 4, 4), "or at a resolution asked for"
    assert member.test_uint8(IDS[0]).shape == (3, 8, 8)
