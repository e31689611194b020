from __future__ import annotations

import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from compkit.data import open_dataset
from compkit.data.labelled import open_labelled
from compkit.stages.encode_labels import encode_labels
from compkit.stages.ensemble import ensemble
from compkit.stages.score import score
from compkit.stages.submit import submit
from compkit.stores.probabilities import Store, StoreWriter
from compkit.util.errors import CompkitError
from compkit.util.fileio import read_json
from tests.conftest import csv_dicts, csv_rows, quiet


def make_store(folder, dataset, probs_for, resolution=(96, 96), classes=None):
    with StoreWriter(folder, classes or dataset.classes, resolution) as w:
        for s in dataset.samples:
            w.write(s.image_id, probs_for(s), dataset.image_shape(s))
    return folder


def constant(value, c=29, res=(96, 96)):
    return lambda s: np.full((c, *res), value, np.float32)


@pytest.fixture(scope="module")
def test_set(synth_data):
    return open_dataset(synth_data, "test")


def test_soft_weighted_mean(tmp_path, synth_data, test_set):
    a = make_store(tmp_path / "a", test_set, constant(0.2))
    b = make_store(tmp_path / "b", test_set, constant(0.8))
    out = ensemble([a, b], weights=[3, 1], name="e", data=synth_data, out=tmp_path / "ens", console=quiet())
    store = Store(out / "test")
    value = store.read(test_set.samples[0].image_id)
    assert np.allclose(value, 0.75 * 0.2 + 0.25 * 0.8, atol=1 / 255)
    info = read_json(out / "members.json")
    assert info["method"] == "soft" and [m["weight"] for m in info["members"]] == [3, 1]


def test_hard_vote_arithmetic(tmp_path, synth_data, test_set):
    stores = [make_store(tmp_path / n, test_set, constant(v)) for n, v in (("a", 0.9), ("b", 0.6), ("c", 0.1))]
    out = ensemble(stores, method="hard", name="h", data=synth_data, out=tmp_path / "ens", console=quiet())
    fraction = Store(out / "test").read(test_set.samples[0].image_id)
    assert np.allclose(fraction, 2 / 3, atol=1e-3)  # two of three members above 0.5
    thresholds = read_json(out / "thresholds.json")
    assert all(abs(t - (2 - 0.5) / 3) < 1e-6 for t in thresholds.values())  # majority: 2 votes
    out3 = ensemble(stores, method="hard", votes=3, name="h3", data=synth_data, out=tmp_path / "ens", console=quiet())
    assert all(abs(t - (3 - 0.5) / 3) < 1e-6 for t in read_json(out3 / "thresholds.json").values())


def test_members_at_different_resolutions_meet_at_the_largest(tmp_path, synth_data, test_set):
    """A 96 px member and a 48 px member (a left-right ramp): the 48 px one is resampled image by image."""
    ramp = np.tile(np.linspace(0.0, 1.0, 48, dtype=np.float32), (29, 48, 1))
    a = make_store(tmp_path / "a", test_set, constant(0.2))
    b = make_store(tmp_path / "b", test_set, lambda s: ramp, resolution=(48, 48))
    out = ensemble([a, b], name="mixed", data=synth_data, out=tmp_path / "ens", console=quiet())
    store = Store(out / "test")
    assert store.resolution == (96, 96)
    value = store.read(test_set.samples[0].image_id)
    expected = 0.5 * 0.2 + 0.5 * cv2.resize(ramp[0], (96, 96), interpolation=cv2.INTER_LINEAR)
    assert np.abs(value[3] - expected).max() <= 1 / 255 + 1e-6
    assert value[3, :, 0].mean() < 0.12 and value[3, :, -1].mean() > 0.58  # the ramp survived, left to right
    info = read_json(out / "members.json")
    assert info["resolution"] == [96, 96] and info["member_resolutions"] == [[96, 96], [48, 48]]
    small = ensemble([a, b], name="small", data=synth_data, out=tmp_path / "ens", resolution=48, console=quiet())
    assert Store(small / "test").resolution == (48, 48)
    hard = ensemble([a, b], method="hard", name="hard", data=synth_data, out=tmp_path / "ens", console=quiet())
    votes = Store(hard / "test").read(test_set.samples[0].image_id)
    assert votes.shape == (29, 96, 96) and set(np.unique(np.round(votes * 2))) <= {0.0, 1.0}


def test_mismatched_members_are_named(tmp_path, synth_data, test_set):
    a = make_store(tmp_path / "a", test_set, constant(0.5))
    c = make_store(tmp_path / "c", test_set, constant(0.5, c=2), classes=["x", "y"])
    with pytest.raises(CompkitError, match="classes"):
        ensemble([a, c], data=synth_data, out=tmp_path / "ens", console=quiet())
    d = tmp_path / "d"
    with StoreWriter(d, test_set.classes, (96, 96)) as w:
        w.write(test_set.samples[0].image_id, np.zeros((29, 96, 96)), (96, 96))
    with pytest.raises(CompkitError, match="test images differ"):
        ensemble([a, d], data=synth_data, out=tmp_path / "ens", console=quiet())
    with pytest.raises(CompkitError, match="2 weights for 1 members"):
        ensemble([a], weights=[1, 2], data=synth_data, out=tmp_path / "ens", console=quiet())
    assert not (tmp_path / "ens").exists() or not any((tmp_path / "ens").iterdir()), "nothing half-written"


def test_streams_one_image_at_a_time(tmp_path, synth_data, test_set, monkeypatch):
    stores = [make_store(tmp_path / n, test_set, constant(0.5)) for n in "abc"]
    reads = []
    original = Store.read

    def spy(self, image_id, resolution=None):
        reads.append(image_id)
        return original(self, image_id, resolution)

    monkeypatch.setattr(Store, "read", spy)
    ensemble(stores, data=synth_data, out=tmp_path / "ens", console=quiet())
    ids = [s.image_id for s in test_set.samples]
    assert reads == [i for i in ids for _ in range(3)], "each image read from every member before the next image"


def test_perfect_stores_submit_and_score_one(tmp_path, synth_data):
    labelled = open_labelled(synth_data, "test")
    perfect = make_store(tmp_path / "perfect", labelled, lambda s: labelled.read_mask(s).astype(np.float32))
    noisy = make_store(tmp_path / "noisy", labelled, lambda s: 0.3 + 0.4 * labelled.read_mask(s).astype(np.float32))
    ens = ensemble([perfect, noisy], name="p", data=synth_data, out=tmp_path / "ens", console=quiet())
    out = submit(ens, out=tmp_path / "sub.csv", console=quiet())
    assert score(out, synth_data, console=quiet()) == pytest.approx(1.0)
    # The newest ensemble is the default source.
    again = submit(out=tmp_path / "again.csv", ensembles_dir=tmp_path / "ens", console=quiet())
    assert again.read_text() == out.read_text()


def test_csv_hard_vote(tmp_path, synth_data):
    good = encode_labels(synth_data, tmp_path / "good.csv", console=quiet())
    rows = csv_rows(good)
    empty = tmp_path / "empty.csv"
    with open(empty, "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [[r[0], r[1], ""] for r in rows[1:]])
    ens = ensemble([good, good, empty], name="v", out=tmp_path / "ens", data=synth_data, console=quiet())
    out = submit(ens, out=tmp_path / "voted.csv", console=quiet())
    assert score(out, synth_data, console=quiet()) == pytest.approx(1.0)
    ens = ensemble([good, empty, empty], name="v2", out=tmp_path / "ens", data=synth_data, console=quiet())
    assert score(submit(ens, out=tmp_path / "v2.csv", console=quiet()), synth_data, console=quiet()) < 0.01


def test_oof_table_labels_in_sample_and_keeps_only_what_cross_validation_confirms(tmp_path, trained_tiny_run):
    from rich.console import Console

    console = Console(record=True, width=240, file=open("/dev/null", "w"))  # noqa: SIM115
    out = ensemble([trained_tiny_run.run], name="cv", data=trained_tiny_run.data, out=tmp_path / "ens", console=console)
    text = " ".join(console.export_text().split())
    for column in ("tuned (in-sample)", "tuned (cross-validated)", "kept (cross-validated)"):
        assert column in text
    assert "cross-validated over 2 folds" in text
    info = read_json(out / "members.json")
    in_sample, tuned_cross = info["oof_dice_in_sample"], info["oof_dice_tuned_cross_validated"]
    kept, at_half = info["oof_dice_cross_validated"], info["oof_dice_at_0.5"]
    assert f"{in_sample:.4f}" in text and f"{kept:.4f}" in text
    # Each class keeps the best cross-validated of: 0.5, a rule, the tuned threshold, both; 0.5 is one of them.
    assert kept >= at_half - 1e-9 and kept >= tuned_cross - 1e-9
    # The ensemble's last lines lead with the cross-validated figure.
    assert f"OOF dice {kept:.4f} cross-validated" in text
    thresholds = read_json(out / "thresholds.json")
    classes = open_dataset(trained_tiny_run.data, "train").classes
    assert set(thresholds) == set(classes)
    # oof_dice.csv: the table's figures per class and the mean, as members.json records the means.
    rows = csv_dicts(out / "oof_dice.csv")
    assert [r["class"] for r in rows] == [*classes, "mean"]
    mean = rows[-1]
    assert float(mean["dice_kept_cross_validated"]) == pytest.approx(kept, abs=1e-6)
    assert float(mean["dice_tuned_in_sample"]) == pytest.approx(in_sample, abs=1e-6)
    assert float(mean["dice_at_base"]) == pytest.approx(at_half, abs=1e-6)
    for row in rows[:-1]:
        assert float(row["kept_threshold"]) == pytest.approx(thresholds[row["class"]], abs=1e-4)

    # Thresholds only: no postprocessing rule is even considered.
    plain = ensemble(
        [trained_tiny_run.run],
        name="thresholds-only",
        data=trained_tiny_run.data,
        out=tmp_path / "ens",
        postprocess="none",
        console=quiet(),
    )
    assert read_json(plain / "postprocess.json") == {}
    assert read_json(plain / "members.json")["postprocess_choice"] == "none"

    # submit says where its thresholds come from and the cross-validated figure they were kept by.
    console = Console(record=True, width=240, file=open("/dev/null", "w"))  # noqa: SIM115
    submit(out, out=tmp_path / "cv.csv", console=console)
    assert f"OOF dice {kept:.4f} cross-validated" in " ".join(console.export_text().split())
    with pytest.raises(CompkitError, match="--postprocess"):
        submit(out, out=tmp_path / "bad.csv", postprocess="in-sample", console=quiet())


def test_piped_output_keeps_every_column_and_sentence_whole(tmp_path, trained_tiny_run):
    """`compkit ensemble ... > ens.log`: no column cut ("…"), no colour codes, the closing figure on one line."""
    out = tmp_path / "ens"
    done = subprocess.run(
        [sys.executable, "-m", "compkit", "ensemble", str(trained_tiny_run.run), "--data", str(trained_tiny_run.data)]
        + ["--out", str(out), "--name", "piped"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    log = done.stdout
    assert "\u2026" not in log and "\x1b[" not in log
    for heading in ("tuned (cross-validated)", "kept (cross-validated)", "kept postprocess"):
        assert heading in log
    for name in open_dataset(trained_tiny_run.data, "train").classes:
        assert f"\u2502 {name} " in log, name  # a whole cell of the class column
    kept = read_json(out / "piped" / "members.json")["oof_dice_cross_validated"]
    assert any(
        line.startswith(f"OOF dice {kept:.4f} cross-validated") and "in-sample" in line for line in log.splitlines()
    )


def test_a_fold_without_its_out_of_fold_store_is_named_not_ensembled_at_half(tmp_path, trained_tiny_run):
    import shutil

    from tests.conftest import copy_run

    run = copy_run(trained_tiny_run.run, tmp_path / "runs" / "tiny")
    shutil.rmtree(run / "fold1" / "oof")
    with pytest.raises(CompkitError, match="tuned on every fold's out-of-fold store") as error:
        ensemble([run], name="e", data=trained_tiny_run.data, out=tmp_path / "ens", console=quiet())
    assert error.value.path == str(run / "fold1" / "oof") and "--no-tune" in str(error.value)
    assert not (tmp_path / "ens" / "e").exists()  # refused before anything was written
    out = ensemble([run], name="e", data=trained_tiny_run.data, out=tmp_path / "ens", tune=False, console=quiet())
    info = read_json(out / "members.json")
    assert info["untuned"] == "--no-tune" and not (out / "thresholds.json").exists()


def test_folds_not_trained_leave_the_ensemble_untuned_and_say_how_much_was_covered(tmp_path, trained_tiny_run):
    from tests.conftest import copy_run

    fold = copy_run(trained_tiny_run.run / "fold0", tmp_path / "runs" / "tiny" / "fold0")
    out = ensemble([fold.parent], name="one", data=trained_tiny_run.data, out=tmp_path / "ens", console=quiet())
    untuned = read_json(out / "members.json")["untuned"]
    train_images = len(open_dataset(trained_tiny_run.data, "train").samples)
    val_images = len(Store(fold / "oof").image_ids)
    assert f"cover {val_images} of {train_images} training images" in untuned and "--fold all" in untuned
