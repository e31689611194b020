"""compkit submit: a member's test probabilities -> upsampled, thresholded, postprocessed, validated submission CSV."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from compkit.data import open_dataset
from compkit.data.cache import foreground_box
from compkit.evaluation.postprocess import upsample_mask
from compkit.stages.encode_labels import encode_labels
from compkit.stages.submit import newest_ensemble, submit
from compkit.stores.probabilities import StoreWriter
from compkit.submission import rle
from compkit.util.errors import CompkitError
from compkit.util.fileio import write_json
from tests.conftest import csv_rows, quiet
from tests.stages.test_ensemble import constant, make_store


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def test_set(synth_data):
    return open_dataset(synth_data, "test")


# upsample_mask


def test_upsample_mask_thresholds_strictly_above():
    q = np.array([[0, 127], [128, 255]], np.uint8)
    assert upsample_mask(q, (2, 2), 0.5).tolist() == [[False, False], [True, True]], "p > t: 127/255 < 0.5 < 128/255"
    assert upsample_mask(q, (2, 2), 128 / 255).tolist() == [[False, False], [False, True]], (
        "a pixel at the threshold is out"
    )
    assert upsample_mask(q, (2, 2), 0.01).tolist() == [[False, True], [True, True]]


def test_upsample_mask_is_bilinear_on_uint8():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    expected = cv2.resize(q, (20, 15), interpolation=cv2.INTER_LINEAR) > 0.4 * 255
    out = np.zeros((15, 20), np.bool_)
    result = upsample_mask(q, (15, 20), 0.4, out=out)
    assert result is out and np.array_equal(out, expected), "written into the buffer given"
    assert upsample_mask(q, (15, 20), 0.4).shape == (15, 20)


# Choosing the source and checking against a sample submission


def test_newest_ensemble_is_the_default_source(tmp_path):
    for name, mtime in (("old", 1_000_000), ("new", 2_000_000), ("middle", 1_500_000)):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "members.json", {})
        os.utime(tmp_path / name / "members.json", (mtime, mtime))
    (tmp_path / "not-an-ensemble").mkdir()
    assert newest_ensemble(tmp_path) == tmp_path / "new"
    with pytest.raises(CompkitError, match="no ensemble found"):
        newest_ensemble(tmp_path / "not-an-ensemble")


def test_submit_threshold_and_sample_checks(tmp_path, synth_data, test_set):
    store = make_store(tmp_path / "s", test_set, constant(0.4))
    warned = Console(file=io.StringIO(), width=200)
    submit(store, out=tmp_path / "a.csv", threshold="tuned", data=synth_data, console=warned)
    assert "no tuned thresholds" in warned.file.getvalue()
    low = submit(store, out=tmp_path / "low.csv", threshold="0.3", data=synth_data, console=quiet())
    assert all(r[2] == "1 9216" for r in csv_rows(low)[1:])
    sample = tmp_path / "sample.csv"
    rows = csv_rows(low)
    rows[5][1] = "Ulna"
    with open(sample, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(CompkitError, match=r"line 30: sample has .* / Ulna twice \(first on line 6\)"):
        submit(store, out=tmp_path / "b.csv", sample=sample, data=synth_data, console=quiet())
    assert not (tmp_path / "b.csv").exists()
    with pytest.raises(CompkitError, match="no ensemble found"):
        submit(ensembles_dir=tmp_path / "none", console=quiet())


# Thresholds and postprocessing of an ensemble folder


def ensemble_folder(folder, dataset, probs_for, data_root, thresholds=None, postprocess=None):
    make_store(folder / "test", dataset, probs_for)
    write_json(folder / "members.json", {"kind": "stores", "data_root": str(data_root), "families": []})
    if thresholds is not None:
        write_json(folder / "thresholds.json", thresholds)
    if postprocess is not None:
        write_json(folder / "postprocess.json", postprocess)
    return folder


def test_tuned_thresholds_per_class(tmp_path, synth_data, test_set):
    folder = ensemble_folder(tmp_path / "ens" / "t", test_set, constant(0.6), synth_data, thresholds={"finger-1": 0.7})
    rows = read_csv(submit(folder, out=tmp_path / "t.csv", console=quiet()))  # 'auto': the tuned ones
    assert all((r[2] == "") == (r[1] == "finger-1") for r in rows[1:]), "only finger-1's threshold is above 0.6"
    rows = read_csv(submit(folder, out=tmp_path / "n.csv", threshold="0.5", console=quiet()))
    assert all(r[2] == "1 9216" for r in rows[1:]), "a number overrides the tuned thresholds"


def test_postprocessing_rules_are_applied(tmp_path, synth_data, test_set):
    def blobs(sample):
        probs = np.zeros((29, 96, 96), np.float32)
        probs[0, 10:40, 10:40] = 1.0  # 900 px
        probs[0, 70:75, 70:75] = 1.0  # 25 px
        return probs

    big = np.zeros((96, 96), np.uint8)
    big[10:40, 10:40] = 1
    plain = ensemble_folder(tmp_path / "ens" / "plain", test_set, blobs, synth_data)
    kept = ensemble_folder(
        tmp_path / "ens" / "kept", test_set, blobs, synth_data, postprocess={"finger-1": {"rule": "largest"}}
    )
    both = read_csv(submit(plain, out=tmp_path / "plain.csv", console=quiet()))
    largest = read_csv(submit(kept, out=tmp_path / "kept.csv", console=quiet()))
    for a, b in zip(both[1:], largest[1:], strict=True):
        if a[1] == "finger-1":
            assert rle.decode(a[2], (96, 96)).sum() == 925
            assert np.array_equal(rle.decode(b[2], (96, 96)), big)
        else:
            assert a == b, "the other classes have no rule"


# Sources


def test_a_trained_run_submits_on_its_own_dataset(trained_tiny_run, tmp_path, monkeypatch):
    """A run folder: its folds averaged, the dataset read from the recipe, named after the run."""
    monkeypatch.chdir(tmp_path)
    out = submit(trained_tiny_run.run, console=quiet())
    assert out == Path("submissions") / "tiny.csv" and (tmp_path / out).is_file()
    rows = read_csv(out)
    assert rows[0] == ["image_name", "class", "rle"] and len(rows) == 1 + 4 * 29


def test_a_csv_vote_is_submitted_as_it_is(tmp_path, synth_data, monkeypatch):
    folder = tmp_path / "ens" / "v"
    folder.mkdir(parents=True)
    encode_labels(synth_data, folder / "vote.csv", console=quiet())
    write_json(folder / "members.json", {"kind": "csv", "data_root": str(synth_data)})
    monkeypatch.chdir(tmp_path)
    out = submit(folder, console=quiet())
    assert out == Path("submissions") / "v.csv", "named after the ensemble, not vote.csv"
    assert out.read_bytes() == (folder / "vote.csv").read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["v.csv"], "no temp file left behind"


def test_stores_that_do_not_fit_the_dataset(tmp_path, synth_data, test_set):
    three = make_store(tmp_path / "three", test_set, constant(0.5, c=3), classes=["x", "y", "z"])
    with pytest.raises(CompkitError, match="the store's classes differ from the dataset's"):
        submit(three, out=tmp_path / "a.csv", data=synth_data, console=quiet())
    with StoreWriter(tmp_path / "short", test_set.classes, (96, 96)) as w:
        w.write(test_set.samples[0].image_id, np.zeros((29, 96, 96), np.float32), (96, 96))
    with pytest.raises(CompkitError, match=r"no probabilities for 3 test images \(first: .*\); predict again"):
        submit(tmp_path / "short", out=tmp_path / "b.csv", data=synth_data, console=quiet())
    with pytest.raises(CompkitError, match="cannot tell which dataset it predicts"):
        submit(three, out=tmp_path / "c.csv", console=quiet())
    assert not any(p.suffix == ".csv" for p in tmp_path.iterdir())


def test_submit_pastes_cropped_probabilities_back(fundus_data, tmp_path):
    """data.crop_border stores cover the eye disk only: submit pastes them back into the full image."""
    fundus = fundus_data
    test = open_dataset(fundus, "test")
    boxes = {}
    with StoreWriter(tmp_path / "store", test.classes, (64, 64)) as w:
        for s in test.samples:
            boxes[s.image_id] = foreground_box(test.read_image(s))
            probs = np.zeros((len(test.classes), 64, 64), np.float32)
            probs[0] = 1.0  # class 0 everywhere inside the crop
            w.write(s.image_id, probs, (128, 128), boxes[s.image_id])
    out = submit(tmp_path / "store", out=tmp_path / "sub.csv", data=fundus, console=quiet())
    rows = csv_rows(out)[1:]
    for k, s in enumerate(test.samples):
        y0, y1, x0, x1 = boxes[s.image_id]
        expected = np.zeros((128, 128), np.uint8)
        expected[y0:y1, x0:x1] = 1
        assert np.array_equal(rle.decode(rows[k * len(test.classes)][2], (128, 128), test.rle_order), expected)
        assert rows[k * len(test.classes) + 1][2] == ""


def test_submit_says_which_ensemble_thresholds_and_postprocessing_it_used(tmp_path, synth_data):
    from rich.console import Console

    from compkit.data.labelled import open_labelled
    from compkit.stages.ensemble import ensemble
    from tests.stages.test_ensemble import make_store

    labelled = open_labelled(synth_data, "test")
    store = make_store(tmp_path / "perfect", labelled, lambda s: labelled.read_mask(s).astype(np.float32))
    ensemble([store], name="p", data=synth_data, out=tmp_path / "ens", console=quiet())
    console = Console(record=True, width=300, file=open("/dev/null", "w"))  # noqa: SIM115
    out = submit(out=tmp_path / "sub.csv", ensembles_dir=tmp_path / "ens", console=console)
    text = console.export_text()
    assert f"using {tmp_path / 'ens' / 'p'}: the newest ensemble in {tmp_path / 'ens'}" in text
    assert "thresholds: 0.5 (not tuned: perfect has no out-of-fold predictions), 0.500 for every class" in text
    assert "postprocessing: none" in text
    assert "validated: header, rows, ids and run-length encodings" in text
    assert f"next: compkit score {out} --data" in text


def test_tuning_from_applies_another_ensembles_thresholds_and_postprocessing(tmp_path, trained_tiny_run):
    """The notebook's path: its ensemble cannot tune (no out-of-fold stores there), the local one's tuning is
    uploaded and applied, and the CSV equals the local submission."""
    import shutil

    from rich.console import Console

    from compkit.stages.ensemble import ensemble
    from compkit.util.fileio import read_json
    from tests.conftest import copy_run

    data = trained_tiny_run.data
    local = ensemble([trained_tiny_run.run], name="local", data=data, out=tmp_path / "ens", console=quiet())
    assert (local / "thresholds.json").is_file() and "untuned" not in read_json(local / "members.json")
    expected = submit(local, out=tmp_path / "local.csv", console=quiet())
    run = copy_run(trained_tiny_run.run, tmp_path / "notebook" / "tiny")
    for fold in run.glob("fold*"):
        shutil.rmtree(fold / "oof")
    there = ensemble([run], name="there", data=data, out=tmp_path / "ens", tune=False, console=quiet())
    console = Console(record=True, width=300, file=open("/dev/null", "w"))  # noqa: SIM115
    untuned = submit(there, out=tmp_path / "untuned.csv", console=console)
    assert "thresholds: 0.5 (not tuned: --no-tune)" in console.export_text()
    console = Console(record=True, width=300, file=open("/dev/null", "w"))  # noqa: SIM115
    got = submit(there, out=tmp_path / "there.csv", tuning_from=local, console=console)
    assert f"thresholds: from {local}" in console.export_text()
    assert csv_rows(got) == csv_rows(expected)
    assert csv_rows(untuned) != csv_rows(expected)  # else the test would not show the tuning mattered
    with pytest.raises(CompkitError, match="drop --threshold 0.4"):
        submit(there, out=tmp_path / "x.csv", threshold="0.4", tuning_from=local, console=quiet())
    with pytest.raises(CompkitError, match="no thresholds.json"):
        submit(there, out=tmp_path / "x.csv", tuning_from=run / "fold0", console=quiet())
    assert not (tmp_path / "x.csv").exists()
