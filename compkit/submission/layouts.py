"""Submission CSVs: the competition's rows and order, streaming writing, and validation that names the bad row.

Default format: header ``image_name,class,rle``; images in the dataset's order (sorted by path relative to the
image folder), for each image one row per class in the dataset's class order; masks at the original image size,
run-length encoded (see :mod:`compkit.submission.rle`) in the dataset's order; an empty mask is an empty string. Hard-vote
tools match rows by position, so order is part of the format.

A dataset may change this (:meth:`SegmentationDataset.submission_conventions`): another header, an empty-mask
token (``-1``), one RLE column per class (wide), the image-name form, and above all a sample submission
(``sample_submission.csv``), whose header, rows, row order and id form the submission then follows exactly.
Its columns are recognised by their values: the image column holds the test images' names (with or without
extension, or relative paths), the class column the classes, the remaining one the RLE; a column such as
``Image_Label`` holding ``<image>_<class>`` keys, or one column per class, works too.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from rich.console import Console

from compkit.data import Sample, SegmentationDataset
from compkit.submission import rle as rle_codec
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError
from compkit.util.fileio import atomic_write, open_text
from compkit.util.imageio import IMAGE_SUFFIXES

HEADER = ("image_name", "class", "rle")
SUBMISSIONS_DIR = "submissions"  # where `compkit submit` writes <name>.csv by default
NAME_FORMS = ("name", "stem", "path", "path_stem")
KEY_SEPARATORS = ("_", "-", "|", ":")
IMAGE, CLASS, RLE, KEY = "image", "class", "rle", "key"


@dataclass(frozen=True)
class Row:
    line: int  # line number in the file (the header is line 1)
    image_name: str
    class_name: str
    rle: str


@dataclass(frozen=True)
class SubmissionLayout:
    """The exact shape of a dataset's submission file.

    ``roles``: per column, ``image``, ``class``, ``rle``, ``key`` (``<image><sep><class>``) or ``class:<name>``
    (wide: that class's RLE). ``rows``: (image name, classes in the row) in file order. ``names``: image id ->
    the name the file uses.
    """

    header: tuple[str, ...]
    roles: tuple[str, ...]
    rows: tuple[tuple[str, tuple[str, ...]], ...]
    names: dict[str, str]
    rle_order: str = "C"
    empty: str = ""
    key_sep: str = "_"
    sample: Path | None = None
    classes: tuple[str, ...] = field(default=())

    @property
    def wide(self) -> bool:
        return any(r.startswith("class:") for r in self.roles)

    def keys(self) -> list[tuple[str, str]]:
        """(image name, class) of every RLE cell, in file order."""
        return [(name, c) for name, classes in self.rows for c in classes]

    def is_empty(self, rle: str) -> bool:
        return rle.strip() in ("", self.empty) or rle.strip().lower() == "nan"

    def encode(self, mask: np.ndarray) -> str:
        text = rle_codec.encode(mask, self.rle_order)
        return text or self.empty

    def decode(self, rle: str, shape: tuple[int, int]) -> np.ndarray:
        if self.is_empty(rle):
            return np.zeros(shape, np.uint8)
        return rle_codec.decode(rle, shape, self.rle_order)

    def check_rle(self, rle: str, shape: tuple[int, int]) -> None:
        if not self.is_empty(rle):
            rle_codec.validate(rle, shape)

    def cells(self, image_name: str, rles: dict[str, str]) -> list[str]:
        """One CSV row's cells for an image and the RLE strings of the row's classes."""
        cells = []
        only = next(iter(rles)) if len(rles) == 1 else None
        for role in self.roles:
            if role == IMAGE:
                cells.append(image_name)
            elif role == CLASS:
                cells.append(only or "")
            elif role == KEY:
                cells.append(f"{image_name}{self.key_sep}{only}")
            elif role == RLE:
                cells.append(rles[only] if only is not None else "")
            else:
                cells.append(rles[role.removeprefix("class:")])
        return cells

    def parse(self, fields: list[str], line: int) -> list[Row]:
        """The RLE cells of one CSV row as rows of (image, class, rle)."""
        image = cls = rle = None
        wide: list[tuple[str, str]] = []
        for role, value in zip(self.roles, fields, strict=True):
            if role == IMAGE:
                image = value
            elif role == CLASS:
                cls = value
            elif role == RLE:
                rle = value
            elif role == KEY:
                image, cls = split_key(value, self.classes, self.key_sep)
            else:
                wide.append((role.removeprefix("class:"), value))
        if wide:
            return [Row(line, image or "", c, v) for c, v in wide]
        return [Row(line, image or "", cls or "", rle or "")]


def split_key(value: str, classes: tuple[str, ...], sep: str) -> tuple[str, str]:
    """``<image><sep><class>`` -> (image, class), trying the longest class name first; (value, "") when none fits."""
    for cls in sorted(classes, key=len, reverse=True):
        if value.endswith(sep + cls):
            return value[: -len(sep + cls)], cls
    return value, ""


def name_in_form(image_id: str, form: str) -> str:
    path = Path(image_id)
    return {"name": path.name, "stem": path.stem, "path": image_id, "path_stem": path.with_suffix("").as_posix()}[form]


def _names(dataset: SegmentationDataset, form: str | None) -> dict[str, str]:
    names = {
        s.image_id: (dataset.submission_name(s) if form is None else name_in_form(s.image_id, form))
        for s in dataset.samples
    }
    seen: dict[str, str] = {}
    for image_id, name in names.items():
        if name in seen:
            raise CompkitError(
                dataset.root,
                f"two {dataset.split} images have the submission name {name!r} ({seen[name]}, {image_id}): "
                "set submission.image_name: path in the dataset.yaml",
            )
        seen[name] = image_id
    return names


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with open_text(path, csv=True) as handle:
            return [row for row in csv.reader(handle) if row]
    except FileNotFoundError:
        raise CompkitError(path, "sample submission not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CompkitError(path, f"unreadable CSV ({e})") from None


def _guess_form(values: list[str]) -> str:
    """The name form of ids when there are no images to match them with (a train split's layout)."""
    suffixed = sum(Path(v).suffix.lower() in IMAGE_SUFFIXES for v in values)
    nested = any("/" in v for v in values)
    if suffixed > len(values) / 2:
        return "path" if nested else "name"
    return "path_stem" if nested else "stem"


def _sample_roles(
    path: Path, header: list[str], rows: list[list[str]], dataset: SegmentationDataset
) -> tuple[tuple[str, ...], str | None, str]:
    """(roles of the columns, name form or None for the dataset's own, key separator), recognised by values."""
    classes = set(dataset.classes)
    width = len(header)
    columns = [[r[j].strip() if j < len(r) else "" for r in rows] for j in range(width)]
    forms = {f: set(name_in_form(s.image_id, f) for s in dataset.samples) for f in NAME_FORMS}
    own = {dataset.submission_name(s) for s in dataset.samples}
    matching = dataset.split == "test"

    def image_form(values: list[str]) -> tuple[float, str | None]:
        if not values:
            return 0.0, None
        if not matching:
            return (1.0, _guess_form(values)) if not set(values) <= classes else (0.0, None)
        best = (sum(v in own for v in values) / len(values), None)
        for f, names in forms.items():
            share = sum(v in names for v in values) / len(values)
            if share > best[0]:
                best = (share, f)
        return best

    class_cols = [j for j in range(width) if columns[j] and set(columns[j]) <= classes]
    wide_cols = [j for j in range(width) if header[j].strip() in classes]
    image_cols = sorted(
        ((image_form(columns[j]), j) for j in range(width) if j not in class_cols and j not in wide_cols),
        key=lambda t: -t[0][0],
    )
    if image_cols and image_cols[0][0][0] > 0.5:
        (share, form), image_col = image_cols[0]
        if matching and share < 1.0:
            unknown = next(
                (i for i, v in enumerate(columns[image_col]) if v not in (own if form is None else forms[form])), 0
            )
            raise CompkitError(
                path,
                f"line {unknown + 2}: sample lists image {columns[image_col][unknown]!r}, which is not in the {dataset.split} set",
            )
        roles = ["extra"] * width
        roles[image_col] = IMAGE
        if class_cols and not (len(wide_cols) == len(classes) and len(classes) > 1):
            roles[class_cols[0]] = CLASS
            rest = [j for j in range(width) if roles[j] == "extra"]
            if len(rest) != 1:
                raise CompkitError(path, f"cannot tell which column holds the RLE (columns: {', '.join(header)})")
            roles[rest[0]] = RLE
        elif wide_cols:
            for j in wide_cols:
                roles[j] = f"class:{header[j].strip()}"
        elif len(classes) == 1 and width == 2:  # one class, no class column: `id,rle`
            roles[1 - image_col] = f"class:{dataset.classes[0]}"
        else:
            raise CompkitError(
                path,
                f"no class column and no column per class ({', '.join(dataset.classes)}) in the header {','.join(header)}",
            )
        extra = [header[j] for j in range(width) if roles[j] == "extra"]
        if extra:
            raise CompkitError(path, f"cannot tell what column {extra[0]!r} holds (neither image, class nor RLE)")
        return tuple(roles), form, "_"
    for j in range(width):  # a key column: <image><sep><class>
        for sep in KEY_SEPARATORS:
            pairs = [split_key(v, tuple(classes), sep) for v in columns[j]]
            if pairs and all(c for _, c in pairs):
                share, form = image_form([image for image, _ in pairs])
                if share == 1.0 and width == 2:
                    roles = [KEY, KEY]
                    roles[1 - j] = RLE
                    return tuple(roles), form, sep
    raise CompkitError(
        path,
        f"cannot match the sample's columns ({','.join(header)}) to the {dataset.split} images and the classes ({', '.join(dataset.classes)})",
    )


def _sample_rows(
    path: Path,
    layout_roles: tuple[str, ...],
    sep: str,
    rows: list[list[str]],
    dataset: SegmentationDataset,
    names: dict[str, str],
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The sample's rows as (image name, classes), checked: every image and class exactly once."""
    probe = SubmissionLayout(tuple(layout_roles), layout_roles, (), names, key_sep=sep, classes=dataset.classes)
    result: list[tuple[str, tuple[str, ...]]] = []
    seen: dict[tuple[str, str], int] = {}
    for line, fields in enumerate(rows, start=2):
        if len(fields) != len(layout_roles):
            raise CompkitError(path, f"line {line}: expected {len(layout_roles)} fields, found {len(fields)}")
        cells = probe.parse([f.strip() for f in fields], line)
        for cell in cells:
            key = (cell.image_name, cell.class_name)
            if key in seen:
                raise CompkitError(
                    path, f"line {line}: sample has {key[0]} / {key[1]} twice (first on line {seen[key]})"
                )
            seen[key] = line
        result.append((cells[0].image_name, tuple(c.class_name for c in cells)))
    if dataset.split == "test":
        missing = [(n, c) for n in names.values() for c in dataset.classes if (n, c) not in seen]
        if missing:
            raise CompkitError(
                path, f"sample has no row for {missing[0][0]} / {missing[0][1]} ({len(missing)} test rows missing)"
            )
    return tuple(result)


def submission_layout(dataset: SegmentationDataset, sample: str | Path | None = None) -> SubmissionLayout:
    """The submission layout of a dataset split: the dataset's conventions, or a sample submission's (``sample``,
    else the dataset's own ``sample_submission.csv``) header, columns, id form and, for the test split, rows."""
    conventions = dataset.submission_conventions()
    sample_path = Path(sample) if sample is not None else conventions.sample
    classes = dataset.classes
    if sample_path is None:
        names = _names(dataset, conventions.image_name)
        if conventions.wide:
            header = conventions.header or ("image_name", *classes)
            roles = (IMAGE, *(f"class:{c}" for c in classes))
            rows = tuple((names[s.image_id], tuple(classes)) for s in dataset.samples)
        else:
            header = conventions.header or HEADER
            roles = (IMAGE, CLASS, RLE)
            rows = tuple((names[s.image_id], (c,)) for s in dataset.samples for c in classes)
        if len(header) != len(roles):
            raise CompkitError(
                dataset.root,
                f"submission header {','.join(header)} has {len(header)} columns, the layout needs {len(roles)}",
            )
        return SubmissionLayout(
            tuple(header), roles, rows, names, dataset.rle_order, conventions.empty, classes=classes
        )

    table = _read_csv(sample_path)
    if not table:
        raise CompkitError(sample_path, "sample submission is empty")
    header, body = [h.strip() for h in table[0]], table[1:]
    roles, form, sep = _sample_roles(sample_path, header, body, dataset)
    names = _names(dataset, conventions.image_name or form)
    if dataset.split == "test":
        rows = _sample_rows(sample_path, roles, sep, body, dataset, names)
    elif any(r.startswith("class:") for r in roles):
        rows = tuple(
            (names[s.image_id], tuple(r.removeprefix("class:") for r in roles if r.startswith("class:")))
            for s in dataset.samples
        )
    else:
        rows = tuple((names[s.image_id], (c,)) for s in dataset.samples for c in classes)
    rle_cells = [
        r[j].strip()
        for r in body
        for j, role in enumerate(roles)
        if role == RLE or role.startswith("class:")
        if j < len(r)
    ]
    empty = conventions.empty or ("-1" if rle_cells and all(v == "-1" for v in rle_cells) else "")
    return SubmissionLayout(tuple(header), roles, rows, names, dataset.rle_order, empty, sep, sample_path, classes)


def expected_keys(dataset: SegmentationDataset) -> list[tuple[str, str]]:
    """(image_name, class) of every row, in the required order."""
    return submission_layout(dataset).keys()


class RowWriter:
    """Writes (image, class, rle) cells in the layout's order as CSV rows (a wide row once all its classes are in)."""

    def __init__(self, handle: IO[str], layout: SubmissionLayout):
        self.writer = csv.writer(handle)
        self.layout = layout
        self.position = 0
        self.pending: dict[str, str] = {}
        self.writer.writerow(layout.header)

    def add(self, image_name: str, class_name: str, rle: str) -> None:
        name, classes = self.layout.rows[self.position]
        if name != image_name or class_name not in classes or class_name in self.pending:
            raise ValueError(
                f"cell {image_name} / {class_name} out of the layout's order (expected {name} / {classes})"
            )
        self.pending[class_name] = rle
        if len(self.pending) == len(classes):
            self.writer.writerow(self.layout.cells(name, self.pending))
            self.pending = {}
            self.position += 1


def read_rows(path: str | Path, layout: SubmissionLayout | None = None) -> Iterator[Row]:
    """Rows of a submission CSV (one per image and class), header checked; raises CompkitError naming the line of
    a malformed row."""
    path = Path(path)
    header = layout.header if layout is not None else HEADER
    roles = layout.roles if layout is not None else (IMAGE, CLASS, RLE)
    parser = layout or SubmissionLayout(HEADER, roles, (), {})
    try:
        handle = open_text(path, csv=True)
    except FileNotFoundError:
        raise CompkitError(path, "submission file not found") from None
    except OSError as e:
        raise CompkitError(path, f"cannot read: {e.strerror or e}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            found = next(reader, None)
            if found is None or tuple(h.strip() for h in found) != tuple(header):
                raise CompkitError(path, f"line 1: header must be {','.join(header)}, found {','.join(found or [])!r}")
            for line, fields in enumerate(reader, start=2):
                if len(fields) != len(roles):
                    names = ",".join(header)
                    raise CompkitError(
                        path, f"line {line}: expected {len(roles)} fields ({names}), found {len(fields)}"
                    )
                yield from parser.parse(fields, line)
        except (csv.Error, UnicodeDecodeError) as e:
            raise CompkitError(path, f"line {reader.line_num}: not a valid CSV row ({e})") from None


def validate(
    path: str | Path, dataset: SegmentationDataset, check_rle: bool = True, layout: SubmissionLayout | None = None
) -> list[Row]:
    """Check a submission against the dataset: rows, order, classes and (optionally) every RLE string.

    Returns the rows in file order (one per image and class). The first problem raises CompkitError naming its line.
    """
    path = Path(path)
    layout = layout or submission_layout(dataset)
    rows = list(read_rows(path, layout))
    expected = layout.keys()
    position = {key: i for i, key in enumerate(expected)}
    classes = set(dataset.classes)
    images = {name for name, _ in expected}
    seen: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row.image_name, row.class_name)
        if row.class_name not in classes:
            raise CompkitError(path, f"line {row.line}: unknown class {row.class_name!r}")
        if row.image_name not in images:
            raise CompkitError(path, f"line {row.line}: image {row.image_name!r} is not in the {dataset.split} set")
        if key in seen:
            raise CompkitError(
                path,
                f"line {row.line}: duplicate row for {row.image_name} / {row.class_name} (first on line {seen[key]})",
            )
        seen[key] = row.line
    if len(seen) < len(expected):
        missing = [key for key in expected if key not in seen]
        raise CompkitError(
            path,
            f"{len(missing)} missing rows ({len(rows)} of {len(expected)} present); first missing: {missing[0][0]} / {missing[0][1]}",
        )
    for i, row in enumerate(rows):
        if position[(row.image_name, row.class_name)] != i:
            want = expected[i]
            raise CompkitError(
                path,
                f"line {row.line}: wrong row order: expected {want[0]} / {want[1]}, found {row.image_name} / {row.class_name}",
            )
    if check_rle:
        shapes = {layout.names[s.image_id]: dataset.image_shape(s) for s in dataset.samples}
        for row in rows:
            try:
                layout.check_rle(row.rle, shapes[row.image_name])
            except ValueError as e:
                raise CompkitError(
                    path, f"line {row.line} ({row.image_name} / {row.class_name}): bad RLE: {e}"
                ) from None
    return rows


def _streamable(layout: SubmissionLayout) -> bool:
    """Whether each image's rows are contiguous (so images can be encoded one at a time, in row order)."""
    seen: set[str] = set()
    previous = None
    for name, _ in layout.rows:
        if name != previous:
            if name in seen:
                return False
            seen.add(name)
            previous = name
    return True


def write_submission(
    path: str | Path,
    dataset: SegmentationDataset,
    mask_for: Callable[[Sample], np.ndarray],
    console: Console | None = None,
    description: str = "encoding submission",
    layout: SubmissionLayout | None = None,
) -> Path:
    """Write a submission: ``mask_for(sample)`` gives the (C, H, W) binary mask at the original size.

    Images are encoded one at a time in the layout's row order (memory does not grow with the test set; a sample
    whose rows interleave images keeps only the RLE strings until the end), then the file is validated and only
    then renamed into place.
    """
    path = Path(path)
    console = console or output_console()
    layout = layout or submission_layout(dataset)
    by_name = {layout.names[s.image_id]: s for s in dataset.samples}
    class_index = {c: i for i, c in enumerate(dataset.classes)}

    def encoded(sample: Sample) -> dict[str, str]:
        mask = mask_for(sample)
        if mask.shape[0] != len(dataset.classes):
            raise ValueError(
                f"mask for {sample.image_id} has {mask.shape[0]} channels, expected {len(dataset.classes)}"
            )
        return {c: layout.encode(mask[class_index[c]]) for c in dataset.classes}

    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = RowWriter(handle, layout)
        with transient_progress(console) as progress:
            images = list(dict.fromkeys(name for name, _ in layout.rows))
            task = progress.add_task(description, total=len(images))
            if _streamable(layout):
                current, rles = None, {}
                for name, classes in layout.rows:
                    if name != current:
                        current, rles = name, encoded(by_name[name])
                        progress.advance(task)
                    for c in classes:
                        writer.add(name, c, rles[c])
            else:
                cells = {}
                for name in images:
                    cells[name] = encoded(by_name[name])
                    progress.advance(task)
                for name, classes in layout.rows:
                    for c in classes:
                        writer.add(name, c, cells[name][c])
        handle.flush()
        validate(handle.name, dataset, layout=layout)
    return path


def convert_rows(rows: list[Row], source: SubmissionLayout, target: SubmissionLayout, handle: IO[str]) -> None:
    """Rewrite a validated submission's rows (in ``source``'s layout) in ``target``'s layout."""
    to_id = {name: image_id for image_id, name in source.names.items()}
    cells = {
        (target.names[to_id[r.image_name]], r.class_name): ("" if source.is_empty(r.rle) else r.rle.strip())
        for r in rows
    }
    writer = RowWriter(handle, target)
    for name, classes in target.rows:
        for c in classes:
            writer.add(name, c, cells[(name, c)] or target.empty)
