"""Kaggle-style labels: run-length encodings in a CSV (``train.csv``), read in every shape public competitions use.

- long: one row per image and class (``id,class,segmentation``, ``ImageId,ClassId,EncodedPixels``), or one row per
  instance (several rows for the same image and class are merged), or a key column holding ``<image>_<class>``
  (``Image_Label``);
- wide: one row per image, one RLE column per class;
- ``start length`` pairs, starts 1-based, absolute, or relative (each start counted from the end of the previous run,
  as in one pneumothorax competition: decided from the strings when not stated);
- empty masks as an empty cell, ``NaN`` or ``-1``;
- flattened row-major (``C``) or column-major (``F``): when not stated, decided from the labels themselves
  (:func:`decide_order`: decoded in the right order, masks are compact shapes; in the wrong order, stripes);
- image sizes from the image files, or from CSV columns when named.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from compkit.submission import rle as rle_codec
from compkit.training.recipe import Section
from compkit.util.errors import CompkitError
from compkit.util.fileio import open_text

EMPTY_TOKENS = ("", "nan", "none", "null", "-1")
ID_COLUMNS = (
    "id",
    "imageid",
    "image_id",
    "image",
    "imagename",
    "image_name",
    "img",
    "imgid",
    "img_id",
    "file",
    "filename",
    "file_name",
    "name",
    "case",
    "patient_slice",
)
CLASS_COLUMNS = ("class", "classid", "class_id", "classname", "class_name", "label", "category", "category_id", "organ")
RLE_COLUMNS = (
    "segmentation",
    "encodedpixels",
    "encoded_pixels",
    "rle",
    "rle_mask",
    "rles",
    "mask",
    "annotation",
    "predicted",
    "pixels",
)
HEIGHT_COLUMNS = ("height", "img_height", "image_height", "orig_height", "rows")
WIDTH_COLUMNS = ("width", "img_width", "image_width", "orig_width", "cols", "columns")
KEY_SEPARATORS = ("_", "-", "|", ":")
ORDER_SAMPLE = 24  # masks decoded both ways to decide the order
STRIPE_RATIO = 1.5  # the wrong order's boundary/area ratio is at least this times the right one's
CONTRAST_MARGIN = 1.2


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


def is_empty(value: str, extra: tuple[str, ...] = ()) -> bool:
    v = value.strip()
    return v.lower() in EMPTY_TOKENS or v in extra


def looks_like_rle(value: str, extra: tuple[str, ...] = ()) -> bool:
    """An empty token or an even number of non-negative integers."""
    if is_empty(value, extra):
        return True
    tokens = value.split()
    return len(tokens) >= 2 and len(tokens) % 2 == 0 and all(t.isdigit() for t in tokens)


class RleSpec(Section):
    """``rle:`` in a ``dataset.yaml``: where the CSV is and how to read it (every field but ``file`` has a default
    that is worked out from the file itself)."""

    file: str
    id_column: str | None = None
    class_column: str | None = (
        None  # long format (absent, with one RLE column: a key column <image>_<class>, or one class)
    )
    rle_column: str | None = None  # long format
    columns: dict[str, str] | None = (
        None  # wide format: CSV column -> class (default: every RLE column, named after it)
    )
    order: Literal["C", "F", "auto"] = "auto"
    relative: bool | None = None  # None: decided from the strings
    empty: list[str] = Field(default_factory=list)  # more empty-mask tokens besides '', NaN and -1
    size_columns: tuple[str, str] | None = None  # (height, width) columns; default: the image files' sizes


@dataclass
class RleTable:
    """A label CSV read: per image key, per class, the non-empty RLE strings (to be merged)."""

    path: Path
    layout: str  # long | wide | key
    id_column: str
    classes: tuple[str, ...]
    entries: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    relative: bool = False
    empty: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return list(self.entries)

    def absolute(self, text: str) -> str:
        """An RLE string with absolute 1-based starts."""
        if not self.relative:
            return text
        pairs = rle_codec.parse(text)
        if not len(pairs):
            return ""
        starts, lengths = pairs[:, 0], pairs[:, 1]
        absolute = np.cumsum(starts) + np.cumsum(lengths) - lengths + 1  # 0-based offsets after each run's end
        return " ".join(map(str, np.stack([absolute, lengths], axis=1).ravel().tolist()))

    def decode(self, key: str, class_name: str, shape: tuple[int, int], order: str) -> np.ndarray:
        """The union of the image's runs of one class, (H, W) uint8 0/1."""
        mask = np.zeros(shape, np.uint8)
        for text in self.entries.get(key, {}).get(class_name, []):
            try:
                mask |= rle_codec.decode(self.absolute(text), shape, order)
            except ValueError as e:
                raise CompkitError(
                    self.path,
                    f"{self.id_column} {key!r}, class {class_name!r}: bad RLE for a {shape[1]}x{shape[0]} image: {e}",
                ) from None
        return mask


def _natural(value: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", value)]


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open_text(path, csv=True) as handle:
            rows = [row for row in csv.reader(handle) if row]
    except FileNotFoundError:
        raise CompkitError(path, "label CSV not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CompkitError(path, f"unreadable CSV ({e})") from None
    if len(rows) < 2:
        raise CompkitError(path, "label CSV has no rows")
    return [h.strip() for h in rows[0]], rows[1:]


def _pick(header: list[str], given: str | None, known: tuple[str, ...], path: Path, what: str) -> str | None:
    if given is not None:
        if given not in header:
            from compkit.util.registry import did_you_mean

            raise CompkitError(
                path, f"no {what} column {given!r}{did_you_mean(given, header)} (columns: {', '.join(header)})"
            )
        return given
    return next((h for h in header if _norm(h) in known), None)


def rle_columns(header: list[str], rows: list[list[str]], extra: tuple[str, ...] = ()) -> list[str]:
    """Columns whose values look like RLE strings (or empty) in at least 95% of the first 500 rows; an all-empty
    column counts (a class never present) when another column has real runs."""
    found, real = [], False
    for j, name in enumerate(header):
        if name.startswith("Unnamed"):
            continue
        values = [r[j] for r in rows[:500] if j < len(r)]
        if values and sum(looks_like_rle(v, extra) for v in values) >= 0.95 * len(values):
            found.append(name)
            real = real or any(not is_empty(v, extra) for v in values)
    return found if real else []


def _split_keys(values: list[str]) -> tuple[str, list[str]] | None:
    """A key column ``<image><sep><class>``: (separator, classes) when the suffixes take few values and every
    image has each of them once."""
    for sep in KEY_SEPARATORS:
        if not all(sep in v for v in values):
            continue
        parts = [v.rsplit(sep, 1) for v in values]
        suffixes = sorted({p[1] for p in parts}, key=_natural)
        images = {p[0] for p in parts}
        if 1 < len(suffixes) <= 50 and len(values) == len(images) * len(suffixes):
            return sep, suffixes
    return None


def _layout_columns(
    path: Path, spec: RleSpec, table: tuple[list[str], list[list[str]]], id_column: str, class_column: str | None
) -> tuple[str, list[str]]:
    """The table's layout before keys are looked at (wide: a column per class; long: one RLE column, with a class
    column or one class) and its RLE columns."""
    header, rows = table
    if spec.columns:
        for column in spec.columns:
            _pick(header, column, (), path, "class")
        return "wide", list(spec.columns)
    candidates = [h for h in rle_columns(header, rows, tuple(spec.empty)) if h not in (id_column, class_column)]
    rle_column = _pick(header, spec.rle_column, RLE_COLUMNS, path, "RLE")
    if rle_column is None and len(candidates) == 1:
        rle_column = candidates[0]
    if class_column is not None:
        if rle_column is None:
            raise CompkitError(path, f"no RLE column found (columns: {', '.join(header)}): name it with rle.rle_column")
        return "long", [rle_column]
    if len(candidates) > 1 or (spec.rle_column is None and rle_column is None and candidates):
        return "wide", candidates
    if rle_column is not None:
        return "long", [rle_column]
    raise CompkitError(path, f"no column of run-length encodings found (columns: {', '.join(header)})")


def read_rle_table(path: Path, spec: RleSpec | None = None) -> RleTable:
    """Read a label CSV in any of the shapes in the module docstring."""
    spec = spec or RleSpec(file=path.name)
    extra = tuple(spec.empty)
    header, rows = _read(path)
    id_column = _pick(header, spec.id_column, ID_COLUMNS, path, "id") or header[0]
    class_column = _pick(header, spec.class_column, CLASS_COLUMNS, path, "class")
    layout, rle_cols = _layout_columns(path, spec, (header, rows), id_column, class_column)
    index = {h: j for j, h in enumerate(header)}
    size_cols = spec.size_columns or (
        (_pick(header, None, HEIGHT_COLUMNS, path, "height"), _pick(header, None, WIDTH_COLUMNS, path, "width"))
    )
    table = RleTable(path, layout, id_column, (), empty=extra)
    ids = [r[index[id_column]].strip() if index[id_column] < len(r) else "" for r in rows]
    if layout == "wide":
        mapping = spec.columns or {c: c for c in rle_cols}
        classes = list(dict.fromkeys(mapping.values()))
    elif class_column is not None:
        classes = sorted({r[index[class_column]].strip() for r in rows if index[class_column] < len(r)}, key=_natural)
    else:
        split = _split_keys(ids)
        if split is not None:
            layout = "key"
            sep, classes = split
            table.notes.append(f"{id_column} holds <image>{sep}<class> keys: classes {', '.join(classes)}")
        else:
            classes = [_norm(rle_cols[0]) if _norm(rle_cols[0]) not in RLE_COLUMNS else "foreground"]
    table.classes = tuple(classes)
    table.layout = layout

    for line, (row, key) in enumerate(zip(rows, ids, strict=True), start=2):
        if not key:
            raise CompkitError(path, f"line {line}: empty {id_column}")
        if layout == "key":
            key, class_name = key.rsplit(sep, 1)
            cells = [(class_name, row[index[rle_cols[0]]] if index[rle_cols[0]] < len(row) else "")]
        elif layout == "wide":
            cells = [(mapping[c], row[index[c]] if index[c] < len(row) else "") for c in rle_cols]
        elif class_column is not None:
            cells = [
                (row[index[class_column]].strip(), row[index[rle_cols[0]]] if index[rle_cols[0]] < len(row) else "")
            ]
        else:
            cells = [(classes[0], row[index[rle_cols[0]]] if index[rle_cols[0]] < len(row) else "")]
        per_class = table.entries.setdefault(key, {})
        for class_name, value in cells:
            if not looks_like_rle(value, extra):
                raise CompkitError(
                    path, f"line {line}: {value[:40]!r} is not a run-length encoding (start length pairs, or empty)"
                )
            if not is_empty(value, extra):
                per_class.setdefault(class_name, []).append(value.strip())
        if all(size_cols):
            try:
                table.sizes[key] = (int(float(row[index[size_cols[0]]])), int(float(row[index[size_cols[1]]])))
            except (ValueError, IndexError):
                raise CompkitError(path, f"line {line}: {size_cols[0]}/{size_cols[1]} are not numbers") from None
    merged = sum(len(v) > 1 for per in table.entries.values() for v in per.values())
    if merged:
        table.notes.append(f"{merged} image/class pairs have several rows (instances): merged into one mask each")
    table.relative = spec.relative if spec.relative is not None else _looks_relative(table)
    if spec.relative is None and table.relative:
        table.notes.append("starts are relative (each counted from the end of the previous run): read as such")
    return table


def _sorted_absolute(pairs: np.ndarray) -> bool:
    if len(pairs) < 2:
        return True
    ends = pairs[:, 0] + pairs[:, 1]
    return bool((pairs[1:, 0] >= ends[:-1]).all())


def _looks_relative(table: RleTable) -> bool:
    """Relative RLE: absolute reading gives unsorted or overlapping runs, while a relative one never does."""
    texts = [t for per in table.entries.values() for ts in per.values() for t in ts][:200]
    multi = [rle_codec.parse(t) for t in texts]
    multi = [p for p in multi if len(p) > 1]
    if not multi:
        return False
    unsorted = sum(not _sorted_absolute(p) for p in multi)
    return unsorted > len(multi) / 2


def boundary_ratio(mask: np.ndarray) -> float:
    """Boundary pixels per labelled pixel: small for compact shapes, large for stripes."""
    area = int(mask.sum())
    if not area:
        return 0.0
    m = mask.astype(np.int8)
    edges = np.count_nonzero(np.diff(m, axis=0)) + np.count_nonzero(np.diff(m, axis=1))
    return edges / area


def _contrast(grey: np.ndarray, mask: np.ndarray) -> float | None:
    inside, outside = grey[mask > 0], grey[mask == 0]
    if not len(inside) or not len(outside):
        return None
    return float(abs(inside.mean() - outside.mean()) / (grey.std() + 1e-6))


def decide_order(
    table: RleTable, items: list[tuple[str, tuple[int, int], Callable[[], np.ndarray]]]
) -> tuple[str, str]:
    """(order, why) for labels whose order is not stated. ``items``: (image key, shape, image reader) of images.

    Decoded in the right order, masks are compact shapes; in the wrong order, stripes (non-square images). On square
    images the two readings are transposes of each other, both compact: then the order whose masks sit on image
    structure (higher contrast between inside and outside) wins. Undecided: F, as most Kaggle competitions.
    """
    chosen = []
    for key, shape, reader in items:
        for class_name in table.classes:
            if table.entries.get(key, {}).get(class_name):
                chosen.append((key, class_name, shape, reader))
        if len(chosen) >= ORDER_SAMPLE:
            break
    if not chosen:
        return "F", "no labelled pixels to tell the order by: F (column-major) assumed, as most Kaggle competitions"
    ratio = {o: float(np.mean([boundary_ratio(table.decode(k, c, s, o)) for k, c, s, _ in chosen])) for o in ("C", "F")}
    names = {"C": "row-major (C)", "F": "column-major (F)"}
    square = all(s[0] == s[1] for _, _, s, _ in chosen)
    if not square:
        better, worse = sorted(("C", "F"), key=lambda o: ratio[o])
        if ratio[worse] >= STRIPE_RATIO * ratio[better] + 0.01:
            return better, (
                f"decoded {names[better]} the {len(chosen)} masks checked are compact shapes ({ratio[better]:.2f} boundary "
                f"pixels per labelled pixel); {names[worse]} gives stripes ({ratio[worse]:.2f})"
            )
    contrast = {"C": [], "F": []}
    for key, class_name, shape, reader in chosen[:8]:
        image = reader()
        grey = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image).astype(np.float32)
        for o in ("C", "F"):
            value = _contrast(grey, table.decode(key, class_name, shape, o))
            if value is not None:
                contrast[o].append(value)
    mean = {o: float(np.mean(v)) if v else 0.0 for o, v in contrast.items()}
    better, worse = sorted(("C", "F"), key=lambda o: -mean[o])
    why = (
        "square images: both orders give compact shapes (each the other's transpose)"
        if square
        else "both orders give similar shapes"
    )
    if mean[better] > CONTRAST_MARGIN * mean[worse] + 0.02:
        return (
            better,
            f"{why}; decoded {names[better]} the masks sit on image structure (contrast {mean[better]:.2f} vs {mean[worse]:.2f})",
        )
    return (
        "F",
        f"{why} and the images cannot tell (contrast {mean['F']:.2f} vs {mean['C']:.2f}): F assumed, as most Kaggle "
        "competitions; state rle.order in the dataset.yaml",
    )


def find_rle_csv(root: Path) -> Path | None:
    """A CSV at the dataset root with a column of run-length encodings (not a sample submission)."""
    for path in sorted(root.glob("*.csv"), key=lambda p: (not p.stem.lower().startswith("train"), p.name)):
        if "sample" in path.stem.lower() or "submission" in path.stem.lower():
            continue
        try:
            with open_text(path, csv=True) as handle:
                reader = csv.reader(handle)
                rows = [r for _, r in zip(range(501), reader, strict=False) if r]
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if len(rows) > 1 and rle_columns([h.strip() for h in rows[0]], rows[1:]):
            return path
    return None
