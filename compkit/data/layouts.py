"""Working out how a folder is laid out, without a ``dataset.yaml``: the readings ``compkit check-data`` proposes and
the two auto-detected formats read.

- ``pairs``: images with masks found by name: ``images/`` + ``masks/`` (or ``labels/``) with the same stems; masks
  with a ``_mask``, ``_seg``, ``_segmentation``, ``_label`` (``_gt``) suffix next to or parallel to the images;
  nested one-folder-per-case sets (``IMD002/IMD002_Dermoscopic_Image/IMD002.bmp`` +
  ``IMD002/IMD002_lesion/IMD002_lesion.bmp``). Layouts that need more than the file stem to pair files (a number
  shared by ``21_training.tif`` and ``21_manual1.gif``), field-of-view masks, or that can be read two ways are
  *unsure*: they are not opened without a ``dataset.yaml``, which ``compkit check-data --write`` proposes.
- ``rlecsv``: a Kaggle competition: image folders (``train/``, ``train_images/``, ``test/``) and a ``train.csv`` of
  run-length encodings (see :mod:`compkit.data.rlecsv`), plus a ``sample_submission.csv`` the submission follows.

How a reading is found: files are grouped by their path with the file's own name (or id) replaced by ``*``
(``training/images/*.tif``, ``*/*_Dermoscopic_Image/*.bmp``); groups of photographs or scans are image groups,
groups of two-valued files mask groups. For each image, the mask files sharing its stem (or its leading token)
give templates relative to the image's folder (``../1st_manual/{id}_manual1.gif``); templates that hold for most
images are its labels, or its field of view when the masks are large and the same disk in every image.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from compkit.data.described import DescribedDataset, spec_to_yaml, validate_spec
from compkit.data.formats import register_format
from compkit.data.masks import binary_foreground
from compkit.data.rlecsv import find_rle_csv, read_rle_table
from compkit.util.errors import CompkitError
from compkit.util.imageio import IMAGE_SUFFIXES, LOSSY_SUFFIXES, is_dicom, read_label, read_label_image

TRAIN_DIRS = ("train", "training", "trainval", "train_images", "train_data", "training_set")
TEST_DIRS = ("test", "testing", "test_images", "test_data", "test_set")
SKIP_DIRS = ("ignore", "__macosx")
MASK_SUFFIXES = ("_segmentation", "_mask", "_masks", "_seg", "_label", "_labels", "_gt")
GENERIC_NAMES = {
    "mask",
    "masks",
    "label",
    "labels",
    "gt",
    "groundtruth",
    "ground_truth",
    "annotation",
    "annotations",
    "seg",
    "segmentation",
    "segmentations",
    "manual",
    "target",
    "targets",
    "y",
}
SEPARATORS = "_-. "
LEAD = re.compile(r"^([^_\-. ]+)")
COVERAGE = 0.6  # share of images a template must pair with
SURE_COVERAGE = 0.95
FOV_AREA, FOV_IOU = 0.3, 0.8
MINE_IMAGES = 40  # images of a group mined for templates
PROBE_FILES = 6  # files read to tell masks from images
MAX_FILES = 50_000


@dataclass
class Reading:
    """One way to read a folder: a ``dataset.yaml`` mapping, what it found, and whether it is sure."""

    spec: dict[str, Any]
    format: str  # the auto format that reads it: pairs or rlecsv
    summary: str
    confident: bool
    doubts: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        return spec_to_yaml(self.spec)


def _lead(stem: str) -> str:
    match = LEAD.match(stem)
    return match.group(1) if match else stem


def _token(text: str, token: str) -> re.Pattern:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(token)}(?![A-Za-z0-9])")


def _substitute(text: str, token: str, placeholder: str) -> tuple[str, bool]:
    if not token:
        return text, False
    result, count = _token(text, token).subn(placeholder.replace("\\", "\\\\"), text)
    return result, bool(count)


def split_roots(root: Path) -> tuple[Path, Path | None, list[str]]:
    """(train root, test root or None, notes): ``train/``-like and ``test/``-like folders, else the root itself."""
    children = (
        {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if root.is_dir()
        else {}
    )
    train = next((children[n] for n in TRAIN_DIRS if n in children), root)
    test = next((children[n] for n in TEST_DIRS if n in children), None)
    notes = [
        f"folder {p.name}/ is neither a train nor a test split: not used"
        for n, p in children.items()
        if n in ("val", "valid", "validation")
    ]
    return train, test, notes


def list_images(base: Path, root: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """Image files under ``base`` (hidden folders, the cache, pseudo-label ``ignore/`` and ``exclude`` left out)."""
    found = []
    for folder, dirs, files in os.walk(base):
        here = Path(folder)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and d.lower() not in SKIP_DIRS and here / d not in exclude
        )
        found += [here / f for f in sorted(files) if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")]
        if len(found) > MAX_FILES:
            break
    return found


def _group_key(path: Path, base: Path, stems_by_folder: dict[Path, set[str]]) -> str:
    """A file's path relative to ``base`` with its name (or id) replaced by ``*``: its group."""
    rel = path.relative_to(base)
    stem, lead = path.stem, _lead(path.stem)
    suffix = next(
        (s for s in MASK_SUFFIXES if stem.lower().endswith(s) and stem[: -len(s)] in stems_by_folder[path.parent]), None
    )
    name = f"*{stem[-len(suffix) :]}{path.suffix}" if suffix else f"*{path.suffix}"
    parts = []
    for part in rel.parts[:-1]:
        replaced, hit = _substitute(part, stem, "*")
        if not hit:
            replaced, _ = _substitute(part, lead, "*")
        parts.append(replaced)
    return "/".join([*parts, name])


def mask_kind(path: Path) -> str:
    """``binary`` (two values, maybe with JPEG noise), ``index`` (a few small values) or ``image``."""
    if is_dicom(path):
        return "image"
    try:
        values = read_label_image(path)
    except CompkitError:
        return "unreadable"
    grey = values if values.ndim == 2 else cv2.cvtColor(values, cv2.COLOR_BGR2GRAY)
    if grey.dtype != np.uint8:  # 16-bit: values past 255 judged at the same share of the range
        grey = (grey >> 8 if grey.max() > 255 else grey).astype(np.uint8)
    middle = np.count_nonzero((grey > 12) & (grey < 243)) / grey.size
    distinct = np.unique(grey)
    if middle < 0.03 and (len(distinct) <= 2 or distinct.max() > 128):
        return "binary"
    if grey.max() < 64 and len(distinct) <= 32:
        return "index" if len(distinct) > 2 else "binary"
    return "image"


def _probe(paths: list[Path]) -> str:
    kinds = Counter(mask_kind(p) for p in paths[:: max(1, len(paths) // PROBE_FILES)][:PROBE_FILES])
    return kinds.most_common(1)[0][0] if kinds else "image"


def _foreground(path: Path) -> np.ndarray:
    foreground = binary_foreground(read_label(path)).astype(np.uint8)
    return cv2.resize(foreground, (32, 32), interpolation=cv2.INTER_NEAREST).astype(bool)


def _is_field_of_view(paths: list[Path]) -> bool:
    """Large masks, the same in every image: a field of view (the eye disk), not a label."""
    masks = [_foreground(p) for p in paths[:PROBE_FILES]]
    if len(masks) < 2:
        return False
    area = float(np.mean([m.mean() for m in masks]))
    ious = [float((a & b).sum() / max(1, (a | b).sum())) for i, a in enumerate(masks) for b in masks[i + 1 :]]
    return area > FOV_AREA and float(np.mean(ious)) > FOV_IOU


def class_name(template: str) -> str:
    """A class name from a label template: its folder or file-name remainder (``../1st_manual/{id}_manual1.gif`` ->
    ``1st_manual``, ``../{stem}_lesion/...`` -> ``lesion``, ``../Hemohedge_Masks/{stem}.png`` -> ``Hemohedge``)."""
    parts = [p for p in Path(template).parts if p != ".."]
    candidates = [*parts[:-1], Path(parts[-1]).stem] if parts else []
    for candidate in candidates:
        text = re.sub(r"\{[a-z]+\}", "", candidate).strip(SEPARATORS)
        for suffix in MASK_SUFFIXES:
            if text.lower().endswith(suffix) and len(text) > len(suffix):
                text = text[: -len(suffix)].strip(SEPARATORS)
        if (
            text
            and text.lower() not in GENERIC_NAMES
            and not text.lower().startswith(tuple(f"{g}_" for g in GENERIC_NAMES))
        ):
            return text
    return "foreground"


def _mine(images: list[Path], index: dict[str, list[Path]], mask_groups: dict[Path, str]) -> dict[str, tuple[str, str]]:
    """Templates (relative to each image's folder) that pair most sampled images with a mask file:
    {template: (the masks' group, 'stem' or 'id')}."""
    sample = images[:: max(1, len(images) // MINE_IMAGES)][:MINE_IMAGES]
    counts: Counter = Counter()
    meta: dict[str, tuple[str, str]] = {}
    for image in sample:
        stem, lead = image.stem, _lead(image.stem)
        seen = set()
        for other in {*index.get(stem, []), *index.get(lead, [])}:
            if other == image or other not in mask_groups:
                continue
            rel = os.path.relpath(other, image.parent)
            template, hit = _substitute(rel, stem, "{stem}")
            kind = "stem"
            if not hit:
                template, hit = _substitute(rel, lead, "{id}")
                kind = "id"
            if hit and template not in seen:
                seen.add(template)
                counts[template] += 1
                meta[template] = (mask_groups[other], kind)
    return {t: meta[t] for t, n in counts.items() if n >= COVERAGE * len(sample)}


def _digits_only_differ(a: str, b: str) -> bool:
    return re.sub(r"\d+", "#", a) == re.sub(r"\d+", "#", b) or re.sub(r"\d+(st|nd|rd|th)?", "#", a) == re.sub(
        r"\d+(st|nd|rd|th)?", "#", b
    )


def _patient_regex(stems: list[str]) -> str | None:
    """``^([^_]+)``-style grouping when the ids' leading tokens repeat (``case12_day3_slice_0004``)."""
    leads = [_lead(s) for s in stems]
    distinct = set(leads)
    if (
        len(stems) >= 4
        and 2 <= len(distinct) <= 0.7 * len(stems)
        and all(lead != s for lead, s in zip(leads, stems, strict=True))
    ):
        return r"^([^_\-. ]+)"
    return None


def _id_regex(stems: list[str]) -> str:
    return r"^(\d+)" if all(_lead(s).isdigit() for s in stems) else r"^([^_\-. ]+)"


def _posix(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return "" if rel == "." else rel


class _Split:
    """The files of one split root, grouped, with masks told from images."""

    def __init__(self, base: Path, root: Path, exclude: tuple[Path, ...]):
        self.base = base
        files = list_images(base, root, exclude)
        stems_by_folder: dict[Path, set[str]] = defaultdict(set)
        for f in files:
            stems_by_folder[f.parent].add(f.stem)
        self.groups: dict[str, list[Path]] = defaultdict(list)
        for f in files:
            self.groups[_group_key(f, base, stems_by_folder)].append(f)
        self.kinds = {key: _probe(paths) for key, paths in self.groups.items()}
        self.index: dict[str, list[Path]] = defaultdict(list)
        self.mask_group: dict[Path, str] = {}
        for key, paths in self.groups.items():
            if self.kinds[key] in ("binary", "index"):
                for p in paths:
                    self.mask_group[p] = key
                    for token in {p.stem, _lead(p.stem)}:
                        self.index[token].append(p)

    def image_groups(self) -> list[str]:
        return [k for k, kind in self.kinds.items() if kind == "image"]


def _pair_readings(root: Path) -> list[Reading]:
    train_base, test_base, notes = split_roots(root)
    exclude = tuple(p for p in (test_base,) if p is not None)
    exclude += (
        tuple(p for p in root.iterdir() if p.is_dir() and p.name.lower() in ("val", "valid", "validation"))
        if root.is_dir()
        else ()
    )
    train = _Split(train_base, root, exclude)
    test = _Split(test_base, root, ()) if test_base is not None else None
    readings = []
    for group in train.image_groups():
        reading = _group_reading(group, (train_base, train), (test_base, test), root, notes)
        if reading is not None:
            readings.append(reading)
    if len(readings) > 1:
        for r in readings:
            r.confident = False
            r.doubts.append(f"{len(readings)} image folders have masks: which one is the dataset?")
    return readings


def _mask_templates(images: list[Path], train: _Split) -> dict[str, tuple[str, str]]:
    """The mask templates that pair with ``images``: template -> (mask group, how it pairs); a lossy copy of a
    lossless mask (PH2's IMD002_lesion.jpg beside IMD002_lesion.bmp) is left out."""
    templates = _mine(images, train.index, train.mask_group)
    stems = {os.path.splitext(t)[0] for t in templates if Path(t).suffix.lower() not in LOSSY_SUFFIXES}
    return {
        t: v
        for t, v in templates.items()
        if not (Path(t).suffix.lower() in LOSSY_SUFFIXES and os.path.splitext(t)[0] in stems)
    }


def _class_names(labels: dict[str, str]) -> dict[str, str]:
    """Class name -> template, each name made unique."""
    names: dict[str, str] = {}
    for template in labels:
        name = class_name(template)
        while name in names:
            name += "_2"
        names[name] = template
    return names


def _coverage(images: list[Path], labels: dict[str, str]) -> float:
    """The share of images that have a mask, for the least covered template."""
    return min(
        sum(
            os.path.isfile(os.path.normpath(img.parent / t.format(stem=img.stem, id=_lead(img.stem)))) for img in images
        )
        / len(images)
        for t in labels
    )


def _matching_test_group(group: str, test_base: Path, test: _Split, root: Path) -> str | None:
    """The test image folder that mirrors the training folder ``group`` (the longest common tail, then the largest)."""
    tail = group.split("/")
    matches = sorted(
        test.image_groups(),
        key=lambda g: (-len(os.path.commonprefix([g.split("/")[::-1], tail[::-1]])), -len(test.groups[g])),
    )
    return "/".join(p for p in (_posix(test_base, root), matches[0]) if p) if matches else None


def _group_reading(group: str, train_split: tuple, test_split: tuple, root: Path, notes: list[str]) -> Reading | None:
    """How the images of one training folder pair with masks, as a description with its doubts (None: they do not)."""
    (train_base, train), (test_base, test) = train_split, test_split
    images = train.groups[group]
    templates = _mask_templates(images, train)
    if not templates:
        return None
    doubts = list(notes)
    labels, fov = {}, None
    kinds = set()
    for template, (mask_group, kind) in sorted(templates.items()):
        kinds.add(kind)
        paths = train.groups[mask_group]
        if _is_field_of_view(paths) and len(templates) > 1 and fov is None:
            fov = template
            continue
        labels[template] = train.kinds[mask_group]
    if not labels:
        return None
    names = _class_names(labels)
    coverage = _coverage(images, labels)
    spec: dict[str, Any] = {"splits": {"train": "/".join(p for p in (_posix(train_base, root), group) if p)}}
    if test is not None and (test_group := _matching_test_group(group, test_base, test, root)) is not None:
        spec["splits"]["test"] = test_group
    stems_all = [p.stem for p in images]
    if "id" in kinds:
        spec["id"] = _id_regex(stems_all)
        doubts.append("files pair by a leading number or token, not by the whole name")
    index_labels = [t for t, kind in labels.items() if kind == "index"]
    if index_labels:
        template = index_labels[0]
        values = sorted({int(v) for img in images[:PROBE_FILES] for v in np.unique(_label_values(img, template))})
        spec["label"] = template
        spec["values"] = {v: ("background" if v == 0 else f"class_{v}") for v in values}
        doubts.append(f"{template} holds label values {values}: name their classes in values:")
    else:
        spec["labels"] = names
    if fov is not None:
        spec["ignore"] = {"outside": fov}
        doubts.append(
            f"{fov} looks like a field-of-view mask (large, the same disk in every image): pixels outside it are ignored"
        )
    patient = _patient_regex(stems_all)
    if patient:
        spec["patient"] = patient
    templates_list = list(labels)
    if any(_digits_only_differ(a, b) for i, a in enumerate(templates_list) for b in templates_list[i + 1 :]):
        doubts.append(
            f"{' and '.join(templates_list)} look like two annotators of the same class, read here as two classes"
        )
    if coverage < SURE_COVERAGE:
        doubts.append(f"only {coverage:.0%} of the images have a mask at {', '.join(labels)}")
    summary = f"{spec['splits']['train']} ({len(images)} images) with " + ", ".join(
        f"{n}: {t}" for n, t in names.items()
    )
    if fov:
        summary += f", field of view {fov}"
    confident = not [d for d in doubts if d not in notes]
    return Reading(spec, "pairs", summary, confident, doubts)


def _label_values(image: Path, template: str) -> np.ndarray:
    path = os.path.normpath(image.parent / template.format(stem=image.stem, id=_lead(image.stem)))
    try:
        return np.unique(read_label_image(Path(path)))
    except CompkitError:
        return np.array([], np.int64)


def _rle_readings(root: Path) -> list[Reading]:
    csv_path = find_rle_csv(root)
    if csv_path is None:
        return []
    try:
        table = read_rle_table(csv_path)
    except CompkitError as e:
        return [Reading({}, "rlecsv", f"{csv_path.name}: {e.problem}", False, [e.problem])]
    keys = set(table.entries)
    best: tuple[int, Path, str] | None = None
    for folder in [root, *(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        files = (
            list_images(folder, root)
            if folder != root
            else [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        )
        if not files:
            continue
        hits = sum(
            any(
                k in keys
                for k in (
                    p.stem,
                    p.name,
                    p.relative_to(folder).as_posix(),
                    p.relative_to(folder).with_suffix("").as_posix(),
                )
            )
            for p in files
        )
        suffix = Counter(p.suffix for p in files).most_common(1)[0][0]
        if hits and (best is None or hits > best[0]):
            nested = any(len(p.relative_to(folder).parts) > 1 for p in files)
            best = (hits, folder, f"{'**/' if nested else ''}*{suffix}")
    if best is None:
        return [
            Reading(
                {},
                "rlecsv",
                f"{csv_path.name} names no image found under {root}",
                False,
                ["no images match the CSV's ids"],
            )
        ]
    hits, folder, pattern = best
    spec: dict[str, Any] = {
        "splits": {"train": "/".join(p for p in (_posix(folder, root), pattern) if p)},
        "rle": {"file": csv_path.name},
    }
    doubts = []
    for name in TEST_DIRS:
        candidate = next((p for p in root.iterdir() if p.is_dir() and p.name.lower() == name), None)
        if candidate is not None and candidate != folder and list_images(candidate, root):
            spec["splits"]["test"] = f"{candidate.name}/{pattern}"
            break
    patient = _patient_regex(sorted(keys))
    if patient:
        spec["patient"] = patient
    share = hits / max(1, len(keys))
    if share < 0.9:
        doubts.append(f"only {hits} of the {len(keys)} ids in {csv_path.name} have an image in {folder.name}/")
    summary = (
        f"{spec['splits']['train']} ({hits} images) with run-length encodings in {csv_path.name} ({table.layout} "
        f"format, classes {', '.join(table.classes)})"
    )
    return [Reading(spec, "rlecsv", summary, not doubts, doubts)]


_CACHE: dict[tuple, list[Reading]] = {}


def infer_readings(root: str | Path) -> list[Reading]:
    """Every way compkit sees to read ``root`` (Kaggle RLE CSV first, then image/mask pairs); cached per folder state."""
    root = Path(root)
    if not root.is_dir():
        return []
    # Keyed by the folder's and its sub-folders' times: a file added or removed there is seen.
    key = (
        str(root.resolve()),
        root.stat().st_mtime_ns,
        tuple(p.stat().st_mtime_ns for p in sorted(root.iterdir()) if p.is_dir()),
    )
    if key not in _CACHE:
        _CACHE[key] = _rle_readings(root) + _pair_readings(root)
    return _CACHE[key]


def _open_reading(cls, root: Path, fmt: str, split: str, labels, classes):
    readings = [r for r in infer_readings(root) if r.format == fmt]
    if not readings:
        raise CompkitError(root, f"no {fmt} layout found")
    if len(readings) > 1 or not readings[0].confident:
        shown = "; ".join(f"{r.summary} ({'; '.join(r.doubts)})" for r in readings)
        raise CompkitError(
            root,
            f"compkit is not sure how to read this folder: {shown}. Write a dataset.yaml: `compkit check-data {root} --write` proposes one",
        )
    spec = validate_spec(readings[0].spec, root)
    return cls.from_spec(root, spec, split, labels, classes, source=root)


@register_format
class RleCsvDataset(DescribedDataset):
    """A Kaggle competition: image folders + ``train.csv`` of run-length encodings (+ ``sample_submission.csv``)."""

    format_name = "rlecsv"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return find_rle_csv(root) is not None

    @classmethod
    def open(cls, root: Path, split: str = "train", labels=None, classes=None):
        return _open_reading(cls, root, cls.format_name, split, labels, classes)


@register_format
class PairsDataset(DescribedDataset):
    """Images with their masks found by name (same stems, mask suffixes, nested case folders)."""

    format_name = "pairs"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(r.format == cls.format_name for r in infer_readings(root))

    @classmethod
    def open(cls, root: Path, split: str = "train", labels=None, classes=None):
        return _open_reading(cls, root, cls.format_name, split, labels, classes)


@dataclass
class Survey:
    """How compkit reads a folder: the format, whether it is sure, the readings it considered and the description
    it proposes (for a registered layout: ``format: NAME``)."""

    root: Path
    format: str | None
    sure: bool
    readings: list[Reading]
    description: Path | None = None  # the dataset.yaml in use
    others: list[str] = field(default_factory=list)  # other formats that also match

    @property
    def proposal(self) -> Reading | None:
        return self.readings[0] if self.readings else None

    @property
    def spec(self) -> dict[str, Any] | None:
        """The description the folder is (or would be) read through; None for a registered fixed layout."""
        if self.description is not None:
            from compkit.data.described import read_spec_file

            data = read_spec_file(self.description)
            return None if data.get("format") else {k: v for k, v in data.items() if k != "root"}
        if self.format is not None and self.proposal is not None and self.format == self.proposal.format:
            return self.proposal.spec
        return None


def survey(data: str | Path) -> Survey:
    """Which format reads ``data`` (a folder or a ``dataset.yaml``), and what it would propose where it is unsure."""
    from compkit.data.formats import DATASET_FORMATS, description_file, detected_formats

    data = Path(data)
    description = description_file(data)
    if description is not None and description.is_file():
        return Survey(DescribedDataset.root_of(description), DescribedDataset.format_name, True, [], description)
    if not data.is_dir():
        raise CompkitError(data, "dataset folder not found")
    found = detected_formats(data)
    fixed = [f for f in found if not issubclass(DATASET_FORMATS[f], DescribedDataset)]
    readings = infer_readings(data)
    if fixed:
        return Survey(data, fixed[0], True, readings, others=found[1:])
    sure = len(readings) == 1 and readings[0].confident
    return Survey(
        data, readings[0].format if readings else None, sure, readings, others=[r.format for r in readings[1:]]
    )
