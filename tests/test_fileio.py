from __future__ import annotations

import pytest

from compkit.errors import CompkitError
from compkit.fileio import atomic_write, image_size, read_image, read_json, write_json


def test_atomic_write_renames_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_write(target) as f:
        f.write("new")
    assert target.read_text() == "new"


def test_unwritable_output_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(CompkitError, match="cannot write") as info:
        write_json(blocker / "sub" / "out.json", {})
    assert str(blocker) in str(info.value)


def test_read_json_errors(tmp_path):
    with pytest.raises(CompkitError, match="file not found"):
        read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("[1,")
    with pytest.raises(CompkitError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_images(tmp_path, synth_data):
    png = next((synth_data / "train" / "DCM").rglob("*.png"))
    assert image_size(png) == (96, 96)
    assert read_image(png).shape == (96, 96, 3)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CompkitError, match="unreadable image"):
        read_image(bad)
    with pytest.raises(CompkitError, match="unreadable image"):
        image_size(bad)
    with pytest.raises(CompkitError, match="image not found"):
        read_image(tmp_path / "missing.png")
