"""The preprocessing cache is never stale: a file changed after a first build (a corrected mask, a same-size rewrite
whose mtime was set back, a labels-CSV row, a field-of-view mask, the meta table) is what the next build holds; a
damaged cache is rebuilt with one line. Each case asserts what the cache holds against the files as they are now."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml
from rich.console import Console

from compkit.data import open_dataset
from compkit.data.cache import SampleCache, build_cache, load_ignore, load_sample
from compkit.submission import rle
from tests.conftest import FAST, copy_dataset, quiet
from tests.imperfect import Case, Env
from tests.layouts import drive, kaggle_long, write_gif

ONE_EPOCH = [a for o in [*FAST, "train.epochs=1"] for a in ("--set", o)]


def train_args(env: Env, data: Path, name: str) -> list:
    return [
        "train",
        "--recipe",
        "tiny",
        "--data",
        data,
        "--fold",
        "0",
        "--name",
        name,
        "--runs-dir",
        env.tmp / "runs",
        *ONE_EPOCH,
    ]


def recording() -> Console:
    """A console that keeps what it printed (wide: each note on one line)."""
    return Console(record=True, width=400, file=io.StringIO())


def notes(console: Console) -> list[str]:
    return [line for line in console.export_text().splitlines() if line.startswith("cache: ")]


def assert_holds_the_files(cache: SampleCache, dataset, size: int) -> None:
    """Every cached image, mask and ignore mask equals the one decoded from the files now."""
    for i, sample in enumerate(dataset.samples):
        image, mask, box = load_sample(dataset, sample, size)
        assert np.array_equal(cache.image(i), image), f"{sample.image_id}: cached image is stale"
        if mask is not None:
            assert np.array_equal(cache.mask(i), mask), f"{sample.image_id}: cached mask is stale"
        ignore = load_ignore(dataset, sample, size, box)
        if ignore is not None:
            assert np.array_equal(cache.ignore(i), ignore), f"{sample.image_id}: cached ignore mask is stale"


def the_cache(data: Path, prefix: str) -> SampleCache:
    [folder] = (data / ".compkit-cache").glob(f"{prefix}-*")  # one folder per settings: rebuilt in place
    return SampleCache(folder)


def fgadr_mask_corrected_after_training(env: Env) -> None:
    """The issue's case: a corrected HardExudate mask after a first `compkit train`; the second trains on it."""
    data = copy_dataset(env.fixture("fundus_data"), env.tmp / "fundus")
    env.cli("split", data, "--folds", "2", "--seed", "0")
    env.cli(*train_args(env, data, "first"))
    target = data / "train" / "HardExudate_Masks" / "0001_1.png"
    corrected = np.zeros((128, 128), np.uint8)
    cv2.circle(corrected, (64, 64), 40, 255, -1)  # far more than the synthetic lesions
    cv2.imwrite(str(target), corrected)
    result = env.cli(*train_args(env, data, "second"))
    dataset = open_dataset(data)
    assert f"cache: 1 of {len(dataset)} images changed since it was built: re-read" in result.output
    cache = the_cache(data, "train-64px")
    c = dataset.classes.index("HardExudate")
    _, mask, _ = load_sample(dataset, dataset.sample("0001_1.png"), 64)
    held = cache.mask(cache.position["0001_1.png"])[c]
    assert np.array_equal(held, mask[c]) and held.sum() > 0.25 * 64 * 64, (
        "the second training's cache holds the new mask"
    )
    assert_holds_the_files(cache, dataset, 64)


def same_size_rewrite_with_mtime_restored(env: Env) -> None:
    """A hand-bone label JSON rewritten with the same byte count and its mtime set back (an archive re-extracted with
    its stored times): one polygon now names another bone."""
    data = copy_dataset(env.fixture("synth_data"), env.tmp / "data")
    dataset = open_dataset(data)
    first = build_cache(dataset, 48, console=quiet())
    label = dataset.samples[0].label_path
    stat = label.stat()
    text = label.read_text()
    assert '"label": "finger-1"' in text
    label.write_text(text.replace('"label": "finger-1"', '"label": "finger-2"', 1))
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (label.stat().st_size, label.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    dataset = open_dataset(data)
    cache = build_cache(dataset, 48, console=quiet())
    assert not np.array_equal(cache.mask(0), first.mask(0))
    assert_holds_the_files(cache, dataset, 48)


def truncated_images_npy_then_train(env: Env) -> None:
    """``images.npy`` cut in half (a full disk, a copy interrupted): `compkit train` rebuilds it, saying so once."""
    data = copy_dataset(env.fixture("synth_data"), env.tmp / "data")
    env.cli("split", data, "--folds", "2", "--seed", "0")
    built = build_cache(open_dataset(data), 64, console=quiet())  # what `tiny` at 64 px opens
    path = built.folder / "images.npy"
    del built
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = env.cli(*train_args(env, data, "t"))
    said = [line for line in result.output.splitlines() if line.startswith("cache: ")]
    assert len(said) == 1 and "images.npy: unreadable (mmap length is greater than file size): rebuilt" in said[0], (
        result.output
    )
    assert "Traceback" not in result.output
    assert_holds_the_files(the_cache(data, "train-64px"), open_dataset(data), 64)


def corrupt_index_json(env: Env) -> None:
    data = copy_dataset(env.fixture("synth_data"), env.tmp / "data")
    first = build_cache(open_dataset(data), 48, console=quiet())
    (first.folder / "index.json").write_text('{"image_ids": ["a"], "classes": 7')
    console = recording()
    cache = build_cache(open_dataset(data), 48, console=console)
    [line] = notes(console)
    assert "index.json: not valid JSON" in line and line.endswith(": rebuilt")
    assert cache.folder == first.folder
    assert_holds_the_files(cache, open_dataset(data), 48)


def labels_csv_row_changed(env: Env) -> None:
    """A Kaggle ``train.csv`` row corrected in a copy re-extracted with the archive's times (same size, same mtime):
    the image's cached mask is the new run-length encoding."""
    data = kaggle_long(env.tmp / "kaggle")
    dataset = open_dataset(data)
    assert dataset.format_name == "rlecsv"
    build_cache(dataset, 64, console=quiet())
    table = data / "train.csv"
    stat = table.stat()
    with open(table, newline="") as f:
        rows = list(csv.reader(f))
    row = next(r for r in rows[1:] if r[2])
    runs = row[2].split()
    length = int(runs[1])
    runs[1] = str(
        length - 1 if len(str(length - 1)) == len(runs[1]) else length + 1
    )  # the first run one pixel shorter or longer
    row[2] = " ".join(runs)
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (table.stat().st_size, table.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    dataset = open_dataset(data)
    cache = build_cache(dataset, 64, console=quiet())
    i = next(k for k, s in enumerate(dataset.samples) if s.image_path.stem == row[0])
    shape = dataset.image_shape(dataset.samples[i])
    expected = cv2.resize(rle.decode(row[2], shape, dataset.rle_order), (64, 64), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(cache.mask(i)[dataset.classes.index(row[1])], expected)
    assert_holds_the_files(cache, dataset, 64)


def hand_bone_label_json_changed(env: Env) -> None:
    """A label JSON with a bone removed (a corrected annotation): only that image is decoded again."""
    data = copy_dataset(env.fixture("synth_data"), env.tmp / "data")
    dataset = open_dataset(data)
    build_cache(dataset, 48, console=quiet())
    sample = dataset.samples[2]
    label = json.loads(sample.label_path.read_text())
    removed = label["annotations"].pop(0)["label"]
    sample.label_path.write_text(json.dumps(label))
    dataset = open_dataset(data)
    console = recording()
    cache = build_cache(dataset, 48, console=console)
    assert notes(console) == [f"cache: 1 of {len(dataset)} images changed since it was built: re-read"]
    assert not cache.mask(2)[dataset.classes.index(removed)].any()
    assert_holds_the_files(cache, dataset, 48)


def field_of_view_mask_changed(env: Env) -> None:
    """A described dataset's field-of-view mask (``ignore: {outside: ...}``) redrawn: the cached ignore mask follows."""
    data = drive(env.tmp / "DRIVE")
    description = {
        "splits": {"train": "training/images/*.tif", "test": "test/images/*.tif"},
        "id": r"^(\d+)",
        "labels": {"vessel": "../1st_manual/{id}_manual1.gif"},
        "ignore": {"outside": "../mask/{stem}_mask.gif"},
    }
    (data / "dataset.yaml").write_text(yaml.safe_dump(description))
    dataset = open_dataset(data)
    first = build_cache(dataset, 32, console=quiet())
    fov = np.zeros((72, 64), np.uint8)
    fov[:, :32] = 1  # the left half is the field of view now
    write_gif(data / "training" / "mask" / "21_training_mask.gif", fov)
    dataset = open_dataset(data)
    cache = build_cache(dataset, 32, console=quiet())
    assert cache.ignore(0)[0][:, 16:].all() and not cache.ignore(0)[0][:, :16].any()
    assert not np.array_equal(first.ignore(0), cache.ignore(0))
    assert_holds_the_files(cache, dataset, 32)


def ignore_file_of_pseudo_labels_changed(env: Env) -> None:
    """``<root>/ignore/<id>.npy`` (soft pseudo-labels' uncertain pixels) rewritten in place."""
    data = copy_dataset(env.fixture("fundus_data"), env.tmp / "fundus")
    dataset = open_dataset(data)
    classes = len(dataset.classes)
    path = data / "ignore" / "0001_2.png.npy"  # <root>/ignore/<image id>.npy
    assert dataset.samples[1].image_id == "0001_2.png"
    path.parent.mkdir()
    ignore = np.zeros((classes, 128, 128), np.uint8)
    ignore[:, :10] = 1
    np.save(path, np.packbits(ignore.reshape(classes, -1), axis=-1))
    build_cache(dataset, 64, console=quiet())
    ignore[:] = 0
    ignore[:, 64:] = 1
    np.save(path, np.packbits(ignore.reshape(classes, -1), axis=-1))
    dataset = open_dataset(data)
    cache = build_cache(dataset, 64, console=quiet())
    assert cache.ignore(1)[:, 32:].all() and not cache.ignore(1)[:, :32].any()
    assert_holds_the_files(cache, dataset, 64)


def meta_table_changed(env: Env) -> None:
    """``meta_data.xlsx`` rewritten (an age corrected): every sample is read through it, so all are re-read."""
    import pandas as pd

    data = copy_dataset(env.fixture("synth_data"), env.tmp / "data")
    dataset = open_dataset(data)
    build_cache(dataset, 48, console=quiet())
    frame = pd.read_excel(data / "meta_data.xlsx", engine="openpyxl")
    frame.iloc[0, 1] = 99
    frame.to_excel(data / "meta_data.xlsx", index=False, engine="openpyxl")
    console = recording()
    build_cache(open_dataset(data), 48, console=console)
    assert notes(console) == [f"cache: meta_data.xlsx changed since it was built: all {len(dataset)} images re-read"]


BUILD = """
import sys
from rich.console import Console
from compkit.data import open_dataset
from compkit.data.cache import build_cache
cache = build_cache(open_dataset(sys.argv[1]), 64, console=Console(quiet=True))
print(int(cache.mask(cache.position["0001_1.png"]).sum()))
"""


def two_processes_rebuild_at_once(env: Env) -> None:
    """Two trainings open a cache whose mask changed at the same moment: both get the new mask, the folder is whole,
    and a reader of the old cache keeps reading it."""
    data = copy_dataset(env.fixture("fundus_data"), env.tmp / "fundus")
    old = build_cache(open_dataset(data), 64, console=quiet())
    before = old.mask(0).copy()
    cv2.imwrite(str(data / "train" / "HardExudate_Masks" / "0001_1.png"), np.full((128, 128), 255, np.uint8))
    env_vars = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD, str(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_vars,
        )
        for _ in range(2)
    ]
    outputs = [r.communicate(timeout=120) for r in runs]
    assert all(r.returncode == 0 for r in runs), outputs
    dataset = open_dataset(data)
    cache = the_cache(data, "train-64px")
    expected = int(cache.mask(cache.position["0001_1.png"]).sum())
    assert [int(out.strip()) for out, _ in outputs] == [expected, expected]
    assert_holds_the_files(cache, dataset, 64)
    assert np.array_equal(old.mask(0), before), "the old memory maps still read"
    assert not [p for p in (data / ".compkit-cache").iterdir() if p.name.startswith(".")], "no staging folder left"


CASES = [
    Case("cache-fgadr-mask-corrected-after-train", fgadr_mask_corrected_after_training),
    Case("cache-same-size-rewrite-mtime-restored", same_size_rewrite_with_mtime_restored),
    Case("cache-truncated-images-npy-train-rebuilds", truncated_images_npy_then_train),
    Case("cache-corrupt-index-json", corrupt_index_json),
    Case("cache-rlecsv-row-changed", labels_csv_row_changed),
    Case("cache-handbone-label-json-changed", hand_bone_label_json_changed),
    Case("cache-field-of-view-mask-changed", field_of_view_mask_changed),
    Case("cache-ignore-npy-changed", ignore_file_of_pseudo_labels_changed),
    Case("cache-meta-table-changed", meta_table_changed),
    Case("cache-two-processes-rebuild-at-once", two_processes_rebuild_at_once),
]
