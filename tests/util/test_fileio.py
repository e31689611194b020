from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

import compkit.util.fileio as fileio
from compkit.util.errors import CompkitError
from compkit.util.fileio import (
    AtomicFolder,
    atomic_write,
    image_size,
    open_text,
    read_image,
    read_json,
    read_text,
    read_yaml,
    writable_folder,
    write_json,
)
from tests.layouts import read_only_modes


def test_atomic_write_renames_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
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


BOM = b"\xef\xbb\xbf"


def test_text_with_a_bom_and_crlf_reads_as_plain_text(tmp_path):
    (tmp_path / "a.txt").write_bytes(BOM + "Hämerus\r\nUlna\r\n".encode())
    assert read_text(tmp_path / "a.txt") == "Hämerus\nUlna\n"
    (tmp_path / "a.json").write_bytes(BOM + b'{"points": [[1, 2]],\r\n "label": "Ulna"}\r\n')
    assert read_json(tmp_path / "a.json") == {"points": [[1, 2]], "label": "Ulna"}
    (tmp_path / "a.yaml").write_bytes(BOM + b"name: x\r\ntrain:\r\n  epochs: 2\r\n")
    assert read_yaml(tmp_path / "a.yaml") == {"name": "x", "train": {"epochs": 2}}
    (tmp_path / "a.csv").write_bytes(BOM + b'id,rle\r\n1,"2 3"\r\n')
    with open_text(tmp_path / "a.csv", csv=True) as handle:
        assert list(csv.reader(handle)) == [["id", "rle"], ["1", "2 3"]]


def test_read_text_errors(tmp_path):
    with pytest.raises(CompkitError, match="file not found"):
        read_text(tmp_path / "none.txt")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(CompkitError, match=r"not a text file in UTF-8 \(byte 3"):
        read_text(tmp_path / "latin1.txt")


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


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(parent):
    """Staging folders (and anything else hidden) left beside the targets."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_atomic_folder_appears_whole(tmp_path):
    target = tmp_path / "out"
    with AtomicFolder(target) as staging:
        (staging / "a.txt").write_text("a")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.txt").write_text("b")
        assert not target.exists(), "nothing at the target until the block ends"
        assert staging.parent == tmp_path and staging.name.startswith(f".out{fileio.PARTIAL_MARK}{os.getpid()}-")
    assert tree(target) == {"a.txt": "a", "sub/b.txt": "b"}
    assert hidden(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask, "an ordinary folder, not mkdtemp's private 0700"


def test_atomic_folder_replaces_an_existing_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with AtomicFolder(target) as staging:
        (staging / "new.txt").write_text("new")
        assert tree(target) == {"old.txt": "old"}, "the old folder stays readable while the new one is written"
    assert tree(target) == {"new.txt": "new"}
    assert hidden(tmp_path) == []


def test_atomic_folder_failure_keeps_the_old_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="crash"), AtomicFolder(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("crash")
    assert tree(target) == {"old.txt": "old"}
    assert hidden(tmp_path) == []
    # An OSError inside becomes one clear error.
    with pytest.raises(CompkitError, match="cannot write") as info, AtomicFolder(tmp_path / "new"):
        raise PermissionError(13, "Permission denied")
    assert info.value.path == str(tmp_path / "new")
    assert not (tmp_path / "new").exists() and hidden(tmp_path) == []


def dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(child.stdout)


def test_leftovers_of_killed_runs_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "out"
    dead = tmp_path / f".out{fileio.PARTIAL_MARK}{dead_pid()}-xyz"
    alive = tmp_path / f".out{fileio.PARTIAL_MARK}{os.getppid()}-abc"  # another process still writing it
    other = tmp_path / f".other{fileio.PARTIAL_MARK}{dead_pid()}-xyz"  # another target's: not ours to remove
    for folder in (dead, alive, other):
        folder.mkdir()
        (folder / "part.txt").write_text("part")
    with AtomicFolder(target) as staging:
        (staging / "a.txt").write_text("a")
        assert not dead.exists() and alive.is_dir() and other.is_dir()
    assert tree(target) == {"a.txt": "a"}
    assert hidden(tmp_path) == sorted([alive.name, other.name])


def test_atomic_folder_without_the_atomic_exchange(tmp_path, monkeypatch):
    """Where renameat2 is unavailable the old folder is renamed aside first: same result, nothing left over."""
    calls = []

    def unavailable(a, b):
        calls.append((a, b))
        return False

    monkeypatch.setattr(fileio, "_exchange", unavailable)
    target = tmp_path / "out"
    with AtomicFolder(target) as staging:  # a new folder needs no exchange
        (staging / "one.txt").write_text("1")
    assert tree(target) == {"one.txt": "1"} and calls == []
    with AtomicFolder(target) as staging:
        (staging / "two.txt").write_text("2")
    assert len(calls) == 1
    assert tree(target) == {"two.txt": "2"}
    assert hidden(tmp_path) == []
    with pytest.raises(RuntimeError), AtomicFolder(target) as staging:
        (staging / "three.txt").write_text("3")
        raise RuntimeError("crash")
    assert tree(target) == {"two.txt": "2"} and hidden(tmp_path) == []


def test_the_atomic_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("in a")
    (b / "y").write_text("in b")
    if not fileio._exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert tree(a) == {"y": "in b"} and tree(b) == {"x": "in a"}


def test_writable_folder_follows_the_modes_even_for_root(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    assert fileio.writable_folder(folder)
    with read_only_modes(folder):
        assert not writable_folder(folder), "a folder without write bits is read-only, whoever runs compkit"
    assert writable_folder(folder) and not writable_folder(tmp_path / "missing")
