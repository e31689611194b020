"""Small file helpers shared by every stage: atomic writes, image reading, text (BOM and CRLF read right), JSON."""

from __future__ import annotations

import contextlib
import csv
import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import yaml

from compkit.util.errors import CompkitError, first_line
from compkit.util.imageio import image_size, read_image  # noqa: F401  (re-exported: every stage reads images through here)


def write_problem(path: str | Path, error: BaseException) -> str:
    """What went wrong writing ``path``, in words: "cannot write: No space left on device" and the like (numpy
    and torch report a full disk without an errno)."""
    reason = getattr(error, "strerror", None)
    if not reason:
        try:
            full = shutil.disk_usage(Path(path).parent if not Path(path).is_dir() else path).free < 1024 * 1024
        except OSError:
            full = False
        reason = "No space left on device" if full else (str(error).strip() or type(error).__name__)
    return f"cannot write: {reason}"


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside ``path`` and rename it into place only when the block succeeds.

    Readers never see a half-written file, and a failure leaves the old file (or nothing) behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CompkitError(path, f"cannot write: {e.strerror or e}") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs should read like any other file
    try:
        # Opened by name so that ``handle.name`` is the temp path (callers may validate it before the rename).
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CompkitError(path, write_problem(path, e)) from None
        raise


def writable_folder(path: str | Path) -> bool:
    """Whether compkit may write into the folder ``path``: not on a read-only mount (a Kaggle input), and not a
    folder whose modes forbid writing (root may write there anyway, but a data set unpacked read-only means it)."""
    path = Path(path)
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return False
        mode = path.stat().st_mode
    except OSError:
        return False
    return os.access(path, os.W_OK) and bool(mode & 0o222)


# Plain UTF-8, and a leading byte-order mark skipped: Windows tools write one, RFC 8259 lets JSON parsers ignore it.
TEXT_ENCODING = "utf-8-sig"


def open_text(path: str | Path, csv: bool = False) -> IO[str]:
    """A text file opened for reading, with or without a BOM, LF or CRLF line ends (``csv``: ``newline=""``, as the
    csv module wants: it reads CRLF itself, also inside quoted fields). Raises OSError as ``open`` does."""
    return open(path, encoding=TEXT_ENCODING, newline="" if csv else None)


def read_text(path: str | Path) -> str:
    """A text file's text (a BOM skipped, CRLF read as LF); unreadable files raise CompkitError."""
    path = Path(path)
    try:
        with open_text(path) as handle:
            return handle.read()
    except FileNotFoundError:
        raise CompkitError(path, "file not found") from None
    except UnicodeDecodeError as e:
        raise CompkitError(
            path, f"not a text file in UTF-8 (byte {e.start}: {e.object[e.start : e.start + 1]!r})"
        ) from None
    except OSError as e:
        raise CompkitError(path, f"cannot read: {e.strerror or e}") from None


def _parse_text(path: str | Path, parse, errors: type[Exception], kind: str) -> Any:
    text = read_text(path)
    try:
        return parse(text)
    except errors as e:
        raise CompkitError(path, f"not valid {kind} ({first_line(e)})") from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file read with ``safe_load`` (nothing in it can run code); bad files raise CompkitError."""
    return _parse_text(path, yaml.safe_load, yaml.YAMLError, "YAML")


def write_json(path: str | Path, data: Any) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rows as a UTF-8 CSV (columns: the union of the rows' keys, in first-seen order; a missing value empty)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(rows)


def read_json(path: str | Path) -> Any:
    """A JSON file (a BOM skipped); bad files raise CompkitError."""
    return _parse_text(path, json.loads, json.JSONDecodeError, "JSON")


def write_image(path: str | Path, image: np.ndarray) -> None:
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise CompkitError(path, "could not encode image")
    with atomic_write(path, "wb") as f:
        f.write(buf.tobytes())


def write_png(path: str | Path, image: np.ndarray) -> None:
    """A PNG written fast (compression level 1), for files inside a folder that is itself written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise CompkitError(path, "could not encode image")
    path.write_bytes(buf.tobytes())


PARTIAL_MARK = ".partial-"
_RENAME_EXCHANGE = 2  # renameat2 flag: swap two paths atomically (Linux)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), ctypes.c_uint(_RENAME_EXCHANGE))
    return done == 0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(target: Path) -> None:
    """Delete ``.<name>.partial-<pid>-*`` folders that killed runs left beside ``target`` (live writers' are kept)."""
    for leftover in target.parent.glob(f".{target.name}{PARTIAL_MARK}*"):
        pid = leftover.name[len(f".{target.name}{PARTIAL_MARK}") :].split("-", 1)[0]
        if not (pid.isdigit() and process_alive(int(pid)) and int(pid) != os.getpid()):
            shutil.rmtree(leftover, ignore_errors=True)


class AtomicFolder:
    """Build a folder in a hidden staging folder beside ``target`` and swap it in whole on success.

    There is no moment where neither the old nor the new folder exists (Linux swaps the two with one
    ``renameat2(RENAME_EXCHANGE)``; elsewhere the old one is renamed aside just before). On failure the staging
    folder is removed and the old folder is untouched; leftovers of killed runs are removed by the next run::

        with AtomicFolder(out) as staging:
            write_everything_into(staging)
    """

    def __init__(self, target: str | Path):
        self.target = Path(target)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.target)
            self.staging = Path(
                tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}{PARTIAL_MARK}{os.getpid()}-")
            )
        except OSError as e:
            raise CompkitError(self.target, f"cannot write: {e.strerror or e}") from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.staging, 0o777 & ~umask)  # mkdtemp makes 0700 folders; outputs should read like any other

    def commit(self) -> Path:
        try:
            if self.target.exists() or self.target.is_symlink():
                if not _exchange(self.staging, self.target):
                    aside = self.staging.with_name(self.staging.name + "-old")
                    os.rename(self.target, aside)
                    os.rename(self.staging, self.target)
                    self.staging = aside
                shutil.rmtree(self.staging, ignore_errors=True)  # now the old folder
            else:
                os.rename(self.staging, self.target)
        except OSError as e:
            self.abort()
            raise CompkitError(self.target, f"cannot write: {e.strerror or e}") from None
        except KeyboardInterrupt:  # SIGTERM mid-swap: the staging path holds the new folder or, swapped, the old one
            self.abort()
            raise
        return self.target

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.staging

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
            if isinstance(exc, OSError):
                raise CompkitError(self.target, f"cannot write: {exc.strerror or exc}") from None


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` where the file system allows (no space taken), else a copy; for
    files compkit never rewrites in place (stores, dataset images)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
