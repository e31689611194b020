"""Datasets described by a ``dataset.yaml`` (at the data root, or passed as ``--data path/to/dataset.yaml``).

A short file maps any folder layout onto compkit's model of a dataset, in the spirit of ultralytics' data yaml
and fastai's DataBlock. The retinal-vessel layout (``training/images/21_training.tif``,
``training/1st_manual/21_manual1.gif``, ``training/mask/21_training_mask.gif``, ``test/...`` alike)::

    splits:
      train: training/images/*.tif          # globs relative to the data root (** recurses)
      test: test/images/*.tif
    id: '^(\\d+)_'                          # {id}: the first group of this regex on the file stem (default: the stem)
    labels:
      vessel: ../1st_manual/{id}_manual1.gif    # per class: a path from the image's folder
    ignore: {outside: ../mask/{stem}_mask.gif}  # a field-of-view mask: pixels outside it are ignored

Fields of a template: ``{id}``, ``{stem}`` (file name without extension), ``{name}``, ``{ext}``, ``{split}``,
``{parent}`` (the image's folder name); a template is a path from the image's folder (``..`` goes up).

Labels are one of: ``labels`` (per class, binary mask files, foreground where the grey value is at least
``threshold``, 128 by default, so anti-aliased and JPEG masks work), ``label`` + ``values`` (one label-index or
palette mask per image: ``{1: liver, 2: tumour, 255: ignore}`` or ``{'255,0,0': tumour}`` as R,G,B), or ``rle``
(run-length encodings in a CSV, see :mod:`compkit.data.rlecsv`). Also: ``patient`` (a regex on the id, or
``{column: NAME}`` of the meta table) groups images into folds; ``meta`` (a CSV of image-level values: ``{file,
key}``); ``intensity`` (16-bit and DICOM images, see :mod:`compkit.util.imageio`); ``missing`` (training images
without labels: ``error``, ``empty`` or ``skip``); ``submission`` (``rle_order``, ``image_name``, ``header``,
``empty``, ``wide``, ``sample``); ``format: NAME`` reads a registered layout as it is (``format: handbone``).

Test labels found the same way (``test/1st_manual``) are what ``compkit score`` compares with.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from compkit.data.formats import (
    DESCRIBED_FORMAT,
    DESCRIPTION_FILE,
    SegmentationDataset,
    SubmissionConventions,
    open_dataset,
    register_format,
)
from compkit.data.masks import MASK_THRESHOLD, parse_number, read_binary_mask, read_image_table
from compkit.data.rlecsv import RleSpec, RleTable, decide_order, read_rle_table
from compkit.data.sample import Sample
from compkit.training.recipe import Section, describe_validation_error
from compkit.util.errors import CompkitError
from compkit.util.fileio import read_yaml
from compkit.util.imageio import IMAGE_SUFFIXES, INTENSITY_RULES, read_label
from compkit.util.registry import did_you_mean

TEMPLATE_FIELDS = ("id", "stem", "name", "ext", "split", "parent")
NAME_FORMS = ("name", "stem", "path", "path_stem", "id")
SPLIT_NAMES = ("train", "test")
IGNORE_CLASS = "ignore"
BACKGROUND = "background"
GLOB_CHARS = re.compile(r"[*?\[]")


def _check_template(template: str) -> str:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"bad template {template!r} ({e})") from None
    for f in fields:
        if f not in TEMPLATE_FIELDS:
            raise ValueError(
                f"unknown template field {{{f}}} in {template!r}{did_you_mean(f, TEMPLATE_FIELDS)} (fields: {', '.join(TEMPLATE_FIELDS)})"
            )
    if os.path.isabs(template):
        raise ValueError(f"template {template!r} must be a path from the image's folder, not an absolute path")
    return template


class SplitSpec(Section):
    images: str | list[str]  # glob(s) relative to the data root


class MetaSpec(Section):
    file: str  # CSV relative to the data root
    key: str | None = None  # the column naming the image (its id, stem, file name or path); default: the first


class PatientSpec(Section):
    regex: str | None = None  # on the image's id; the first group (or the group named 'patient')
    column: str | None = None  # a meta column

    @model_validator(mode="after")
    def _one(self) -> PatientSpec:
        if (self.regex is None) == (self.column is None):
            raise ValueError("give either regex or column")
        if self.regex is not None:
            _compile(self.regex)
        return self


class IgnoreSpec(Section):
    outside: str | None = None  # a field-of-view mask: pixels outside it (below threshold) are ignored
    inside: str | None = None  # a mask of pixels to ignore
    threshold: int = Field(MASK_THRESHOLD, ge=1)

    @model_validator(mode="after")
    def _one(self) -> IgnoreSpec:
        if (self.outside is None) == (self.inside is None):
            raise ValueError("give either outside (a field-of-view mask) or inside (a mask of pixels to ignore)")
        _check_template(self.outside or self.inside or "")
        return self


class SubmissionSpec(Section):
    rle_order: Literal["C", "F"] | None = None  # default: the labels' CSV order, else F (most Kaggle competitions)
    image_name: Literal["name", "stem", "path", "path_stem", "id"] | None = (
        None  # default: file name (or the sample's form)
    )
    header: list[str] | None = None
    empty: str = ""  # the empty-mask token ('' or '-1')
    wide: bool = False  # one row per image, one RLE column per class
    sample: str | None = None  # a sample submission (default: sample_submission.csv at the root, when present)


def _compile(regex: str) -> re.Pattern:
    try:
        return re.compile(regex)
    except re.error as e:
        raise ValueError(f"bad regex {regex!r} ({e})") from None


class DatasetSpec(Section):
    root: str | None = None  # the data root, relative to this file (default: its folder)
    format: str | None = None  # read a registered layout as it is (handbone, masks, isic, coco, ...)
    classes: list[str] | None = None
    splits: dict[str, str | list[str] | SplitSpec] | None = None
    id: str | None = None
    labels: dict[str, str] | None = None
    label: str | None = None
    values: dict[int | str, str] | None = None
    rle: RleSpec | None = None
    threshold: int = Field(MASK_THRESHOLD, ge=1)
    ignore: IgnoreSpec | None = None
    patient: str | PatientSpec | None = None
    meta: str | MetaSpec | None = None
    intensity: str = "auto"
    missing: Literal["error", "empty", "skip"] = "error"
    submission: SubmissionSpec = Field(default_factory=SubmissionSpec)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        if v is not None:
            _compile(v)
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for template in (v or {}).values():
            _check_template(template)
        return v

    @field_validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        return _check_template(v) if v is not None else v

    @field_validator("patient")
    @classmethod
    def _patient(cls, v):
        return PatientSpec(regex=v) if isinstance(v, str) else v

    @field_validator("meta")
    @classmethod
    def _meta(cls, v):
        return MetaSpec(file=v) if isinstance(v, str) else v

    @field_validator("intensity")
    @classmethod
    def _intensity(cls, v: str) -> str:
        if v not in INTENSITY_RULES:
            raise ValueError(
                f"unknown intensity rule {v!r}{did_you_mean(v, INTENSITY_RULES)} (known: {', '.join(INTENSITY_RULES)})"
            )
        return v

    @model_validator(mode="after")
    def _complete(self) -> DatasetSpec:
        if self.format is not None:
            return self
        if not self.splits or "train" not in self.splits:
            raise ValueError("splits needs a train entry: a glob of the training images, e.g. {train: images/*.png}")
        unknown = [s for s in self.splits if s not in SPLIT_NAMES]
        if unknown:
            raise ValueError(
                f"unknown split {unknown[0]!r}{did_you_mean(unknown[0], SPLIT_NAMES)} (splits: train, test)"
            )
        given = [k for k in ("labels", "label", "rle") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of labels (a mask per class), label (+ values: one index mask per image) or rle (a CSV)"
            )
        if self.label is not None and not self.values:
            raise ValueError("label needs values: {pixel value: class}, e.g. {1: liver, 2: tumour}")
        if self.values:
            for key in self.values:
                _value_key(key)
        return self

    def class_list(self) -> list[str] | None:
        """The classes named by the description itself (None: they come from the CSV)."""
        if self.classes:
            return list(self.classes)
        if self.labels:
            return list(self.labels)
        if self.values:
            return list(dict.fromkeys(c for c in self.values.values() if c not in (BACKGROUND, IGNORE_CLASS)))
        return None

    def split_globs(self, split: str) -> list[str]:
        entry = (self.splits or {}).get(split)
        if entry is None:
            return []
        images = entry.images if isinstance(entry, SplitSpec) else entry
        return [images] if isinstance(images, str) else list(images)


def _value_key(key: int | str) -> int | tuple[int, int, int]:
    """A ``values`` key: a grey value, or an ``R,G,B`` colour (returned as B, G, R as OpenCV stores it)."""
    if isinstance(key, int):
        return key
    parts = [p.strip() for p in str(key).split(",")]
    if len(parts) == 1 and parts[0].isdigit():
        return int(parts[0])
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        r, g, b = (int(p) for p in parts)
        return (b, g, r)
    raise ValueError(f"values key {key!r} is neither a grey value (1) nor an R,G,B colour ('255,0,0')")


def read_spec_file(path: Path) -> dict[str, Any]:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise CompkitError(path, "a dataset description must be a mapping (splits, labels, ...)")
    return data


def validate_spec(data: dict[str, Any], source: str | Path) -> DatasetSpec:
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as e:
        raise CompkitError(source, f"bad dataset description: {describe_validation_error(e, DatasetSpec)}") from None


def load_spec(path: str | Path) -> DatasetSpec:
    path = Path(path)
    return validate_spec(read_spec_file(path), path)


def spec_to_yaml(spec: DatasetSpec | dict[str, Any]) -> str:
    """A description as YAML, only what differs from the defaults, in the schema's key order."""
    data = spec.model_dump(mode="json", exclude_defaults=True) if isinstance(spec, DatasetSpec) else spec
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)


def glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (image ids are paths relative to it)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if GLOB_CHARS.search(part):
            break
        fixed.append(part)
    return Path(*fixed).as_posix() if fixed else ""


def _usable(path: Path, root: Path) -> bool:
    rel = path.relative_to(root).parts
    return path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in rel) and path.is_file()


class DescribedDataset(SegmentationDataset):
    """A split of a dataset read through a :class:`DatasetSpec` (from a ``dataset.yaml``, or worked out by an
    auto-detecting format of :mod:`compkit.data.layouts`)."""

    format_name = DESCRIBED_FORMAT
    rle_order = "F"

    def __init__(
        self,
        root: Path,
        split: str,
        classes,
        samples,
        spec: DatasetSpec,
        files: dict[str, dict[str, Any]],
        table: RleTable | None,
    ):
        super().__init__(root, split, classes, samples)
        self.spec = spec
        self.files = files  # image id -> {"labels": {class index: Path}, "label": Path, "ignore": Path, "key": csv key}
        self.table = table
        self.intensity = spec.intensity
        self.unmatched: list[str] = []

    # --- opening -----------------------------------------------------------------------------------------------

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / DESCRIPTION_FILE).is_file()

    @classmethod
    def root_of(cls, path: Path) -> Path:
        """The data root a ``dataset.yaml`` describes (its ``root:``, relative to the file; default: its folder)."""
        data = read_spec_file(path)
        root = data.get("root")
        return (path.parent / str(root)) if root else path.parent

    @classmethod
    def open(cls, root: Path, split: str = "train", labels=None, classes: Sequence[str] | None = None):
        return cls.open_description(root / DESCRIPTION_FILE, split, labels, classes)

    @classmethod
    def open_description(
        cls, path: Path, split: str = "train", labels=None, classes: Sequence[str] | None = None
    ) -> SegmentationDataset:
        spec = load_spec(path)
        root = cls.root_of(path)
        if not root.is_dir():
            raise CompkitError(path, f"root {root} is not a folder")
        if spec.format is not None:
            if spec.format == DESCRIBED_FORMAT:
                raise CompkitError(
                    path, f"format: {DESCRIBED_FORMAT} would read this file again; name a layout or leave format out"
                )
            dataset = open_dataset(root, split, spec.format, labels=labels, classes=classes or spec.classes)
        else:
            dataset = cls.from_spec(root, spec, split, labels, classes, source=path)
        dataset.description = path
        return dataset

    @classmethod
    def from_spec(
        cls,
        root: Path,
        spec: DatasetSpec,
        split: str = "train",
        labels: str | Path | None = None,
        classes: Sequence[str] | None = None,
        source: Path | None = None,
        lenient: bool = False,
    ) -> DescribedDataset:
        """Read a split through ``spec``. ``lenient`` (for `compkit check-data`): training images without labels
        are kept as unlabelled samples whatever ``missing`` says, so that they can be listed."""
        source = source or root / DESCRIPTION_FILE
        globs = spec.split_globs(split)
        if not globs:
            raise CompkitError(source, f"missing {split} split (splits: {', '.join(spec.splits or {})})")
        label_root = Path(labels) if labels is not None else None
        table = None
        if spec.rle is not None:
            csv_path = (label_root or root) / spec.rle.file
            if split == "train" or csv_path.is_file():
                table = read_rle_table(csv_path, spec.rle)
        names = list(classes or spec.class_list() or (table.classes if table else ()))
        if not names:
            raise CompkitError(source, "no classes: name them with classes: [...]")
        candidates: list[tuple[Path, str]] = []
        for pattern in globs:
            base = glob_base(pattern)
            found = sorted(p for p in root.glob(pattern) if _usable(p, root))
            candidates += [(p, p.relative_to(root / base).as_posix()) for p in found]
        id_regex = re.compile(spec.id) if spec.id else None
        dataset = cls(root, split, names, [], spec, {}, table)
        meta = dataset._read_meta()
        infos = []
        for path, image_id in dict.fromkeys(candidates):
            fields = dataset._fields(path, split, id_regex, source)
            infos.append((path, image_id, fields, dataset._find_labels(path, fields, label_root)))
        claimed = {p for *_, files in infos for p in files["paths"]}
        infos = [i for i in infos if i[0] not in claimed]  # label files caught by the images' glob
        if not infos:
            raise CompkitError(source, f"no {split} images match {', '.join(globs)} under {root}")
        if table is not None:
            dataset._match_csv(infos, source)
        if split == "train" and not lenient:
            infos = dataset._apply_missing(infos)
        samples = []
        for path, image_id, fields, files in sorted(infos, key=lambda i: i[1]):
            values = dataset._meta_for(meta, path, image_id, fields)
            patient = dataset._patient(path, fields, values, source)
            marker = (
                (files["paths"][0] if files["paths"] else (table.path if table is not None else root))
                if files["labelled"]
                else None
            )
            samples.append(Sample(image_id, patient, path, marker, (), values))
            dataset.files[image_id] = files
        dataset.samples = samples
        dataset.unmatched = dataset._unmatched_labels(infos, label_root)
        if table is not None and spec.submission.rle_order is None:
            if split == "train":
                dataset.notes += table.notes
                dataset.rle_order = dataset._csv_order(source)
            else:  # the order is a property of the CSV: decided on the training images it labels
                dataset.rle_order = cls.from_spec(root, spec, "train", None, classes, source).rle_order
        if spec.submission.rle_order is not None:
            dataset.rle_order = spec.submission.rle_order
        return dataset

    def _apply_missing(self, infos: list[tuple]) -> list[tuple]:
        """Training images without labels, as the description's ``missing`` says: an error, skipped, or read as
        empty masks."""
        unlabelled = [i for i in infos if not i[3]["labelled"]]
        if not unlabelled:
            return infos
        if self.spec.missing == "error":
            path = unlabelled[0][0]
            raise CompkitError(
                path,
                f"{len(unlabelled)} of {len(infos)} training images have no labels (first: {path.relative_to(self.root)}); "
                "set missing: empty (no labels = empty masks) or missing: skip in the dataset.yaml, or fix the templates "
                f"(`compkit check-data {self.root}` shows what matched)",
            )
        if self.spec.missing == "skip":
            self.notes.append(f"{len(unlabelled)} training images without labels skipped (missing: skip)")
            return [i for i in infos if i[3]["labelled"]]
        for info in unlabelled:
            info[3]["labelled"] = True
        self.notes.append(f"{len(unlabelled)} training images without labels read as empty masks (missing: empty)")
        return infos

    def _fields(self, path: Path, split: str, id_regex: re.Pattern | None, source: Path) -> dict[str, str]:
        fields = {
            "stem": path.stem,
            "name": path.name,
            "ext": path.suffix.lstrip("."),
            "split": split,
            "parent": path.parent.name,
            "id": path.stem,
        }
        if id_regex is not None:
            match = id_regex.search(path.stem)
            if match is None:
                raise CompkitError(path, f"id regex {id_regex.pattern!r} does not match the file name {path.stem!r}")
            fields["id"] = match.groupdict().get("id") or (match.group(1) if match.groups() else match.group(0))
        return fields

    def _resolve(self, template: str, path: Path, fields: dict[str, str], label_root: Path | None) -> Path:
        folder = path.parent if label_root is None else label_root / path.parent.relative_to(self.root)
        return Path(os.path.normpath(folder / template.format_map(fields)))

    def _find_labels(self, path: Path, fields: dict[str, str], label_root: Path | None) -> dict[str, Any]:
        spec = self.spec
        files: dict[str, Any] = {
            "labels": {},
            "label": None,
            "ignore": None,
            "key": None,
            "paths": [],
            "labelled": False,
        }
        if spec.labels:
            for c, name in enumerate(self.classes):
                template = spec.labels.get(name)
                if template is None:
                    continue
                found = self._resolve(template, path, fields, label_root)
                if found.is_file():
                    files["labels"][c] = found
                    files["paths"].append(found)
            files["labelled"] = bool(files["labels"])
        elif spec.label:
            found = self._resolve(spec.label, path, fields, label_root)
            if found.is_file():
                files["label"] = found
                files["paths"].append(found)
                files["labelled"] = True
        if spec.ignore is not None:
            found = self._resolve(spec.ignore.outside or spec.ignore.inside or "", path, fields, None)
            if found.is_file():
                files["ignore"] = found
                files["paths"].append(found)
        return files

    def _match_csv(self, infos: list, source: Path) -> None:
        """Join the CSV's image keys with the images (by id, stem, file name or path: whichever matches most)."""
        table = self.table
        keys = set(table.entries)
        forms = {
            "id": lambda p, i, f: f["id"],
            "stem": lambda p, i, f: p.stem,
            "name": lambda p, i, f: p.name,
            "path": lambda p, i, f: i,
            "path_stem": lambda p, i, f: Path(i).with_suffix("").as_posix(),
        }
        best = max(forms, key=lambda form: sum(forms[form](p, i, f) in keys for p, i, f, _ in infos))
        matched = set()
        for path, image_id, fields, files in infos:
            key = forms[best](path, image_id, fields)
            if key in keys:
                files["key"] = key
                files["labelled"] = True
                matched.add(key)
        if not matched and self.split == "train":
            example = next(iter(keys), "")
            raise CompkitError(
                table.path, f"no {table.id_column} matches an image (e.g. {example!r} vs {infos[0][0].name!r})"
            )
        extra = sorted(keys - matched)
        if extra and self.split == "train":
            self.notes.append(
                f"{len(extra)} {table.path.name} rows name images that are not in the {self.split} split (first: {extra[0]})"
            )

    def _csv_order(self, source: Path) -> str:
        order = self.spec.rle.order
        if order != "auto":
            return order
        items = []
        for s in self.samples:
            key = self.files[s.image_id]["key"]
            if key is not None and self.table.entries.get(key):
                items.append((key, self.image_shape(s), lambda s=s: self.read_image(s)))
            if len(items) >= 24:
                break
        order, why = decide_order(self.table, items)
        self.notes.append(f"RLE order {order}: {why}")
        return order

    def _read_meta(self) -> dict[str, dict[str, Any]]:
        spec = self.spec.meta
        if spec is None:
            return {}
        path = self.root / spec.file
        if path.suffix.lower() in (".xlsx", ".xls"):
            import pandas as pd

            try:
                frame = pd.read_excel(path, engine="openpyxl", dtype=str).fillna("")
            except Exception as e:
                raise CompkitError(path, f"unreadable meta file ({type(e).__name__}: {e})") from None
            header, rows = [str(c) for c in frame.columns], frame.astype(str).values.tolist()
        else:
            if not path.is_file():
                raise CompkitError(path, "meta file not found")
            header, rows = read_image_table(path)
        if not header:
            return {}
        key = header.index(spec.key) if spec.key in header else 0
        if spec.key is not None and spec.key not in header:
            raise CompkitError(
                path, f"no column {spec.key!r}{did_you_mean(spec.key, header)} (columns: {', '.join(header)})"
            )
        return {
            row[key].strip(): {
                h: parse_number(v)
                for j, (h, v) in enumerate(zip(header, row, strict=False))
                if j != key and not h.startswith("Unnamed")
            }
            for row in rows
            if len(row) > key
        }

    @staticmethod
    def _meta_for(meta: dict[str, dict[str, Any]], path: Path, image_id: str, fields: dict[str, str]) -> dict[str, Any]:
        for key in (fields["id"], path.stem, path.name, image_id, Path(image_id).with_suffix("").as_posix()):
            if key in meta:
                return dict(meta[key])
        return {}

    def _patient(self, path: Path, fields: dict[str, str], values: dict[str, Any], source: Path) -> str:
        spec = self.spec.patient
        if spec is None:
            return fields["id"]
        if spec.column is not None:
            value = values.get(spec.column)
            if value is None:
                raise CompkitError(
                    path, f"no meta value {spec.column!r} to group it by (patient: {{column: {spec.column}}})"
                )
            return str(value)
        match = re.search(spec.regex, fields["id"])
        if match is None:
            raise CompkitError(path, f"patient regex {spec.regex!r} does not match the id {fields['id']!r}")
        return match.groupdict().get("patient") or (match.group(1) if match.groups() else match.group(0))

    def _unmatched_labels(self, infos: list, label_root: Path | None) -> list[str]:
        """Files in the label folders that look like labels of this split but belong to no image."""
        templates = list((self.spec.labels or {}).values()) + ([self.spec.label] if self.spec.label else [])
        claimed = {p for *_, files in infos for p in files["paths"]}
        images = {p for p, *_ in infos}
        patterns = set()
        for path, *_ in infos:
            for template in templates:
                wild = re.sub(r"\{[a-z]+\}", "*", template)
                folder = path.parent if label_root is None else label_root / path.parent.relative_to(self.root)
                patterns.add(os.path.normpath(folder / wild))
        found = set()
        for pattern in patterns:
            parts = Path(pattern).parts
            fixed = next((k for k, part in enumerate(parts) if GLOB_CHARS.search(part)), len(parts))
            base = Path(*parts[:fixed]) if fixed else Path(".")
            rest = "/".join(parts[fixed:])
            if not rest or not base.is_dir():
                continue
            for candidate in base.glob(rest):
                if (
                    candidate.is_file()
                    and candidate not in claimed
                    and candidate not in images
                    and candidate.suffix.lower() in IMAGE_SUFFIXES
                ):
                    found.add(candidate)
        unmatched = sorted(
            p.relative_to(self.root).as_posix() if p.is_relative_to(self.root) else str(p) for p in found
        )
        if self.table is not None and self.split == "train":
            keys = {f["key"] for *_, f in infos if f["key"] is not None}
            unmatched += [f"{self.table.path.name}: {k}" for k in sorted(set(self.table.entries) - keys)]
        return unmatched

    # --- reading -----------------------------------------------------------------------------------------------

    def has_split(self, split: str) -> bool:
        return any(_usable(p, self.root) for pattern in self.spec.split_globs(split) for p in self.root.glob(pattern))

    def source_files(self, sample: Sample) -> list[Path]:
        files = self.files.get(sample.image_id, {})
        extra = list(files.get("paths", []))
        if files.get("key") is not None:
            extra.append(self.table.path)
        return [sample.image_path, *dict.fromkeys(extra), *self.ignore_files(sample)]

    def dataset_files(self) -> list[Path]:
        """Also the meta table (``meta:``)."""
        meta = [self.root / self.spec.meta.file] if self.spec.meta is not None else []
        return list(dict.fromkeys([*super().dataset_files(), *(p for p in meta if p.is_file())]))

    def image_shape(self, sample: Sample) -> tuple[int, int]:
        key = self.files.get(sample.image_id, {}).get("key")
        if key is not None and key in self.table.sizes:
            return self.table.sizes[key]
        return super().image_shape(sample)

    def read_mask(self, sample: Sample, shape: tuple[int, int] | None = None) -> np.ndarray:
        if sample.label_path is None:
            raise CompkitError(sample.image_path, "image has no labels")
        shape = shape or self.image_shape(sample)
        files = self.files[sample.image_id]
        mask = np.zeros((len(self.classes), *shape), np.uint8)
        if files["labels"]:
            for c, path in files["labels"].items():
                mask[c] = read_binary_mask(path, shape, self.spec.threshold)
        elif files["label"] is not None:
            mask = self._index_mask(files["label"], shape)[0]
        elif files["key"] is not None:
            for c, name in enumerate(self.classes):
                mask[c] = self.table.decode(files["key"], name, shape, self.rle_order)
        return mask

    def _index_mask(self, path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(C, H, W) classes and (H, W) ignored pixels of a label-index or palette mask (palette files: a number key
        is the palette index, an ``R,G,B`` key the index's palette colour)."""
        label = read_label(path)
        values = label.values
        if values.shape[:2] != shape:
            raise CompkitError(path, f"mask is {values.shape[1]}x{values.shape[0]}, its image is {shape[1]}x{shape[0]}")
        index = {name: c for c, name in enumerate(self.classes)}
        mask = np.zeros((len(self.classes), *shape), np.uint8)
        ignored = np.zeros(shape, bool)
        known = np.zeros(shape, bool)
        for key, name in self.spec.values.items():
            value = _value_key(key)
            if isinstance(value, tuple):
                if values.ndim != 3 and label.palette is None:
                    raise CompkitError(path, f"values key {key!r} is a colour but the mask is grey")
                colours = label.colours()
                hit = (colours == np.array(value, colours.dtype)).all(axis=2)
            else:
                grey = values if values.ndim == 2 else cv2.cvtColor(values, cv2.COLOR_BGR2GRAY)
                hit = grey == value
            known |= hit
            if name == IGNORE_CLASS:
                ignored |= hit
            elif name in index:
                mask[index[name]] |= hit.astype(np.uint8)
        if not known.all():
            stray = values[~known]
            shown = sorted({tuple(int(x) for x in v) if np.ndim(v) else int(v) for v in stray[:10000]})[:5]
            raise CompkitError(
                path, f"pixel values {shown} are not in values: (add them, e.g. as background or ignore)"
            )
        return mask, ignored

    def read_ignore(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray | None:
        """Pixels to leave out of the loss and the score: outside the field of view (``ignore: {outside: ...}``),
        inside an ignore mask, or an index mask's ``ignore`` value; also a pseudo-label's ``ignore/`` file."""
        ignored = super().read_ignore(sample, shape)
        extra = None
        files = self.files.get(sample.image_id, {})
        if files.get("ignore") is not None:
            inside = read_binary_mask(files["ignore"], shape, self.spec.ignore.threshold).astype(bool)
            extra = ~inside if self.spec.ignore.outside else inside
        if files.get("label") is not None and IGNORE_CLASS in self.spec.values.values():
            index_ignored = self._index_mask(files["label"], shape)[1]
            extra = index_ignored if extra is None else extra | index_ignored
        if extra is None:
            return ignored
        extra = np.broadcast_to(extra.astype(np.uint8), (len(self.classes), *shape))
        return extra.copy() if ignored is None else (ignored | extra)

    # --- describing --------------------------------------------------------------------------------------------

    def submission_name(self, sample: Sample) -> str:
        if self.spec.submission.image_name == "id":
            return self._fields(
                sample.image_path, self.split, re.compile(self.spec.id) if self.spec.id else None, self.root
            )["id"]
        return sample.image_name

    def submission_conventions(self) -> SubmissionConventions:
        sub = self.spec.submission
        sample = self.root / sub.sample if sub.sample else self.root / "sample_submission.csv"
        if sub.sample and not sample.is_file():
            raise CompkitError(sample, "sample submission named in the dataset description not found")
        form = sub.image_name if sub.image_name != "id" else None
        return SubmissionConventions(
            header=tuple(sub.header) if sub.header else None,
            empty=sub.empty,
            wide=sub.wide,
            sample=sample if sample.is_file() else None,
            image_name=form,
        )

    def unmatched_labels(self) -> list[str]:
        return self.unmatched

    @property
    def patients_from(self) -> str:  # type: ignore[override]
        spec = self.spec.patient
        if spec is None:
            return "each image's own id"
        if spec.column is not None:
            return f"the meta column {spec.column!r}"
        return f"the regex {spec.regex!r} on each image's id"

    def describe(self) -> dict[str, Any]:
        data = self.spec.model_dump(mode="json", exclude_defaults=True)
        if self.table is not None and data.get("rle", {}).get("order", "auto") == "auto":
            data.setdefault("rle", {})["order"] = self.rle_order  # what the labels decided, written down
        return data


register_format(DescribedDataset)
