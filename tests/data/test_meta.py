from __future__ import annotations

import pytest
from openpyxl import Workbook

from compkit.data import patient_key, read_meta
from compkit.util.errors import CompkitError


def write_xlsx(path, header, rows):
    book = Workbook()
    sheet = book.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    book.save(path)


def test_reads_real_quirks(tmp_path):
    path = tmp_path / "meta_data.xlsx"
    write_xlsx(
        path,
        ["ID", "나이", "성별", "체중(몸무게)", "키(신장)", None],
        [[1, 30, "_x0008_남", 70, 175, " "], [12, 41, "_x0008_여", 55.5, 160, None], [3, 50, "여", None, 158, None]],
    )
    meta = read_meta(path)
    assert set(meta) == {"1", "12", "3"}
    assert meta["1"] == {"id": 1, "age": 30, "sex": "male", "weight": 70, "height": 175}
    assert meta["12"]["sex"] == "female"
    assert meta["12"]["weight"] == 55.5
    assert meta["3"]["weight"] is None
    assert not any(k.startswith("Unnamed") for row in meta.values() for k in row)


def test_csv_with_english_columns_and_control_character(tmp_path):
    path = tmp_path / "meta_data.csv"
    path.write_text("ID,age,sex,weight,height\n7,20,F,50,150\n8,20,\x08남,60,170\n", encoding="utf-8")
    meta = read_meta(path)
    assert meta["7"]["sex"] == "female"
    assert meta["8"]["sex"] == "male"


def test_patient_folder_joins_integer_id():
    assert patient_key("ID001") == "1"
    assert patient_key("ID120") == "120"
    assert patient_key("patient_x") == "patient_x"


def test_missing_id_column_names_the_file(tmp_path):
    path = tmp_path / "meta_data.xlsx"
    write_xlsx(path, ["나이", "성별"], [[30, "남"]])
    with pytest.raises(CompkitError, match="no ID column") as info:
        read_meta(path)
    assert str(path) in str(info.value)


def test_corrupt_file(tmp_path):
    path = tmp_path / "meta_data.xlsx"
    path.write_bytes(b"not a zip")
    with pytest.raises(CompkitError, match="unreadable meta file"):
        read_meta(path)
