"""Reading per-patient meta data (``meta_data.xlsx`` or ``.csv``), quirks of the real file included."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from compkit.util.errors import CompkitError
from compkit.util.fileio import TEXT_ENCODING

# Real column names (Korean) and English ones, mapped to compkit's names.
META_COLUMNS: dict[str, str] = {
    "ID": "id",
    "id": "id",
    "나이": "age",
    "age": "age",
    "성별": "sex",
    "sex": "sex",
    "gender": "sex",
    "체중(몸무게)": "weight",
    "weight": "weight",
    "키(신장)": "height",
    "height": "height",
}
SEX_VALUES = {"남": "male", "여": "female", "m": "male", "f": "female", "male": "male", "female": "female"}
# The real sheet stores a stray backspace before the sex value; depending on the reader it shows up as the
# OOXML escape "_x0008_" or as the control character itself.
_STRAY_PREFIX = re.compile(r"^(?:_x0008_|\x08)+")
_PATIENT_NUMBER = re.compile(r"ID0*(\d+)", re.IGNORECASE)


def patient_key(patient: str) -> str:
    """The key that joins a patient folder to a meta row: folder ``ID001`` and meta ID ``1`` both give ``"1"``."""
    match = _PATIENT_NUMBER.fullmatch(patient.strip())
    return str(int(match.group(1))) if match else patient.strip()


def _clean(column: str, value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        value = _STRAY_PREFIX.sub("", value).strip()
        if column == "sex":
            return SEX_VALUES.get(value.lower(), value)
        return value or None
    if hasattr(value, "item"):  # numpy scalar -> python
        value = value.item()
    if isinstance(value, float) and value.is_integer() and column == "id":
        return int(value)
    return value


def read_meta(path: str | Path) -> dict[str, dict[str, Any]]:
    """Meta rows keyed by :func:`patient_key`; values under compkit's column names (id, age, sex, ...).

    Unknown columns keep their own name; pandas' ``Unnamed: N`` columns (empty in the real file) are dropped.
    """
    import pandas as pd

    path = Path(path)
    try:
        excel = path.suffix.lower() in (".xlsx", ".xls")
        frame = pd.read_excel(path, engine="openpyxl") if excel else pd.read_csv(path, encoding=TEXT_ENCODING)
    except FileNotFoundError:
        raise CompkitError(path, "meta file not found") from None
    except Exception as e:  # pandas/openpyxl raise many types for corrupt files
        raise CompkitError(path, f"unreadable meta file ({type(e).__name__}: {e})") from None

    columns = {c: META_COLUMNS.get(str(c).strip(), str(c).strip()) for c in frame.columns}
    if "id" not in columns.values():
        found = ", ".join(str(c) for c in frame.columns)
        raise CompkitError(path, f"meta file has no ID column (expected 'ID'); found columns: {found}")
    keep = [c for c in frame.columns if not str(c).startswith("Unnamed:")]
    rows: dict[str, dict[str, Any]] = {}
    for record in frame[keep].to_dict("records"):
        row = {columns[c]: _clean(columns[c], v) for c, v in record.items()}
        if row["id"] is None:
            continue
        rows[patient_key(str(row["id"]))] = row
    return rows
