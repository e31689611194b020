"""Text files as Windows tools write them: a UTF-8 byte-order mark (Excel's "CSV UTF-8", Notepad) and CRLF line
ends, in label JSONs, splits.json, recipes, dataset.yaml, RLE and meta CSVs, sample submissions, submissions and
classes.txt. Each is read exactly as its plain UTF-8, LF twin."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from compkit.data import open_dataset
from compkit.data.splits import load_splits
from compkit.stages.check_data import check_data
from compkit.training.recipe import load_recipe
from tests.conftest import copy_dataset, quiet
from tests.imperfect import Case, Env
from tests.layouts import drive, kaggle_long

BOM = b"\xef\xbb\xbf"


def windows(path: Path, text: str | None = None) -> Path:
    """Rewrite ``path`` (or write ``text`` to it) with a BOM and CRLF line ends."""
    text = path.read_text(encoding="utf-8") if text is None else text
    path.write_bytes(BOM + text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8"))
    return path


def hand_bones(env: Env) -> Path:
    return copy_dataset(env.fixture("synth_data"), env.tmp / "data")


def masks_of(data: Path, split: str = "train", gt: Path | None = None) -> dict[str, np.ndarray]:
    dataset = open_dataset(data, split, labels=gt)
    return {s.image_id: dataset.read_mask(s) for s in dataset.samples}


def label_json(crlf_indented: bool):
    def check(env: Env) -> None:
        data = hand_bones(env)
        before = masks_of(data)
        label = sorted((data / "train" / "outputs_json").rglob("*.json"))[0]
        content = json.loads(label.read_text(encoding="utf-8"))
        if crlf_indented:
            windows(label, json.dumps(content, indent=2, ensure_ascii=False))
        else:
            label.write_bytes(BOM + label.read_bytes())
        assert label.read_bytes().startswith(BOM)
        after = masks_of(data)
        assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
        assert sum(int(m.any(axis=(1, 2)).sum()) for m in after.values()) == 29 * len(after)  # every bone, every image

    return check


def splits_json(env: Env) -> None:
    data = hand_bones(env)
    env.cli("split", data, "--folds", 2, "--seed", 0)
    before = load_splits(data)
    windows(data / "splits.json")
    assert load_splits(data) == before and len(before["folds"]) == 2


def recipe_yaml(env: Env) -> None:
    path = windows(
        env.tmp / "mine.yaml",
        "# mine: tiny, shorter\nextends: tiny\ntrain:\n  epochs: 2\naug:\n  - {name: VerticalFlip, p: 0.5}\n",
    )
    recipe = load_recipe(path)
    assert recipe.name == "mine" and recipe.train.epochs == 2 and recipe.model.encoder == "tu-regnety_002"
    assert recipe.aug == [{"name": "VerticalFlip", "p": 0.5}]


def dataset_yaml(env: Env) -> None:
    data = drive(env.tmp / "DRIVE", train=2, test=1)
    check_data(data, write=True, console=quiet())
    classes, before = open_dataset(data, "train").classes, masks_of(data)
    windows(data / "dataset.yaml")
    dataset = open_dataset(data, "train")
    assert dataset.format_name == "described" and dataset.classes == classes
    after = masks_of(data)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
    assert all(m.any() for m in after.values())


def rle_csv(env: Env) -> None:
    data = kaggle_long(env.tmp / "comp")
    before = masks_of(data)
    windows(data / "train.csv")
    after = masks_of(data)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)
    assert sum(int(m.sum()) for m in after.values()) > 0


def meta_csv(env: Env) -> None:
    data = hand_bones(env)
    (data / "meta_data.xlsx").unlink()
    windows(data / "meta_data.csv", "ID,나이,성별,체중(몸무게),키(신장)\n1,35,남,70.5,172\n2,41,여,55,160\n")
    dataset = open_dataset(data, "train")
    first = next(s for s in dataset.samples if s.patient == "ID001")
    assert (first.meta["age"], first.meta["sex"], first.meta["weight"]) == (35, "male", 70.5)


def sample_submission(env: Env) -> None:
    data = kaggle_long(env.tmp / "comp")
    gt = env.tmp / "comp_gt"
    with open(data / "sample_submission.csv", newline="", encoding="utf-8") as f:
        sample = list(csv.reader(f))
    windows(data / "sample_submission.csv")
    env.cli("encode-labels", data, "--gt", gt, "--out", env.tmp / "labels.csv")
    with open(env.tmp / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "class", "predicted"] and [r[:2] for r in rows[1:]] == [
        r[:2] for r in sample[1:]
    ]  # class by class
    assert "mean dice: 1.0000" in env.cli("score", env.tmp / "labels.csv", "--data", data, "--gt", gt).output


def scored_submission(env: Env) -> None:
    data = env.fixture("synth_data")
    env.cli("encode-labels", data, "--out", env.tmp / "labels.csv")
    with open(env.tmp / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)  # as R's write.csv quotes every field
    windows(env.tmp / "windows.csv", text.getvalue())
    assert env.tmp.joinpath("windows.csv").read_bytes().startswith(BOM + b'"image_name"')
    assert "mean dice: 1.0000" in env.cli("score", env.tmp / "windows.csv", "--data", data).output


def classes_txt(env: Env) -> None:
    data = copy_dataset(env.fixture("fundus_data"), env.tmp / "fundus")
    before = open_dataset(data, "train")
    order = list(reversed(before.classes))
    windows(data / "classes.txt", "\n".join(order) + "\n")
    after = open_dataset(data, "train")
    assert list(after.classes) == order
    sample = before.samples[0]
    old, new = before.read_mask(sample), after.read_mask(after.sample(sample.image_id))
    for c, name in enumerate(order):
        np.testing.assert_array_equal(new[c], old[before.classes.index(name)])


CASES = [
    Case("label-json-with-bom", label_json(crlf_indented=False)),
    Case("label-json-with-bom-and-crlf", label_json(crlf_indented=True)),
    Case("splits-json-with-bom-and-crlf", splits_json),
    Case("recipe-yaml-with-bom-and-crlf", recipe_yaml),
    Case("dataset-yaml-with-bom-and-crlf", dataset_yaml),
    Case("rle-train-csv-with-bom-and-crlf", rle_csv),
    Case("meta-csv-with-bom-and-crlf", meta_csv),
    Case("sample-submission-with-bom-and-crlf", sample_submission),
    Case("submission-csv-with-bom-quoted-and-crlf-scored", scored_submission),
    Case("classes-txt-with-bom-and-crlf", classes_txt),
]
