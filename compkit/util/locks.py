"""One process per output, and interrupts that say what they kept.

**Locks.** A stage that writes an output (a run folder, an ensemble, a report, a submission CSV) holds an exclusive
``fcntl.flock`` on ``.<name>.lock`` beside it for as long as it writes. Beside, not inside: :class:`AtomicFolder`
swaps whole folders, and a file inside would travel with the artifact when it is copied or ensembled. The file
holds the holder's pid and command line, so a second process aiming at the same output stops with one line naming
them. The kernel drops a flock when its process dies, however it dies, so a lock left by a killed process is simply
taken over (its file's old text overwritten). Readers take no lock: two ensembles of one run read it at once.

**Interrupts.** :func:`install_signal_handlers` (the CLI's ``main()`` only: importing compkit installs nothing)
turns SIGTERM, what Kaggle, Slurm, Kubernetes and ``timeout`` send, into :class:`Interrupted`, a
``KeyboardInterrupt`` like Ctrl-C's, so every ``finally`` and ``with`` cleans up (staging folders and temp files
removed). What the interrupted work keeps is said by the innermost :func:`interruptible` block (every lock is one):
the CLI prints ``interrupted (SIGTERM): <that>`` and exits 128 + the signal's number (143, or 130 for SIGINT).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from compkit.util.errors import CompkitError

LOCK_SUFFIX = ".lock"
_COMMAND_SHOWN = 160  # characters of the holder's command line quoted in the message


def command_line() -> str:
    """This process's command, as a user would retype it (``compkit train --recipe tiny ...``; ``python ...`` for
    the Python API)."""
    if Path(sys.argv[0]).name in ("compkit", "__main__.py"):
        return " ".join(shlex.quote(a) for a in ["compkit", *sys.argv[1:]])
    return "python " + " ".join(shlex.quote(a) for a in sys.argv if a) if sys.argv and sys.argv[0] else "python"


def lock_path(output: str | Path) -> Path:
    """The lock file of an output: ``.<name>.lock`` in the folder that holds it."""
    output = Path(output)
    return output.parent / f".{output.name}{LOCK_SUFFIX}"


class OutputInUse(CompkitError):
    """Another live process holds the output's lock."""


# --- interrupts ------------------------------------------------------------------------------------------------

Kept = str | Callable[[], str]
_kept: list[Kept] = []  # what each open interruptible block keeps, innermost last
NOTHING_HALF_WRITTEN = "nothing half-written was left"


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) as an exception: ``signal_name``, ``exit_code`` (128 + the number) and ``kept`` (what
    the innermost :func:`interruptible` block said it keeps, when the signal came)."""

    def __init__(self, signum: int, kept: Kept | None = None):
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        self.kept = kept
        super().__init__(self.signal_name)


@contextlib.contextmanager
def interruptible(kept: Kept) -> Iterator[None]:
    """Within the block, an interrupt says it kept ``kept`` (a text, or a function called once the block has
    cleaned up, to describe the state it left: ``fold 0 stopped at epoch 3; last.pt kept``)."""
    _kept.append(kept)
    try:
        yield
    finally:
        _kept.remove(kept)


def interrupt_line(error: KeyboardInterrupt) -> tuple[str, int]:
    """The one line the CLI prints for an interrupt, and its exit code."""
    kept = getattr(error, "kept", None) or (_kept[-1] if _kept else None)
    try:
        said = (kept() if callable(kept) else kept) or NOTHING_HALF_WRITTEN
    except Exception as e:  # describing must never hide the interrupt behind a traceback
        said = f"{NOTHING_HALF_WRITTEN} ({type(e).__name__} while describing what was kept)"
    name = getattr(error, "signal_name", "SIGINT")
    return f"interrupted ({name}): {said}", getattr(error, "exit_code", 128 + signal.SIGINT)


class deferred_interrupts(contextlib.AbstractContextManager):
    """Within the block, SIGTERM and SIGINT wait for it to end, then interrupt as usual: for writes that must be
    whole together (an epoch's ``results.csv``, ``best.pt`` and ``last.pt``). An exception raised inside
    ``torch.save`` would come out as a RuntimeError about the half-written file, not as the interrupt."""

    def __enter__(self) -> deferred_interrupts:
        global _deferring
        _deferring += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        global _deferring, _pending
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            if exc_type is None:  # an error already on its way out says more than the waiting signal
                raise Interrupted(signum, _kept[-1] if _kept else None)


_deferring = 0  # open deferred_interrupts blocks
_pending: int | None = None  # the signal that came during them


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT raise :class:`Interrupted` in this process (a second SIGTERM during the cleanup is ignored:
    the cleanup finishes; a second Ctrl-C still interrupts it). Processes forked from this one (data-loader
    workers) keep the default: they just end."""
    owner = os.getpid()

    def handler(signum, frame):
        global _pending
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if signum == signal.SIGTERM:
            signal.signal(signum, signal.SIG_IGN)
        if _deferring:
            _pending = signum
            return
        raise Interrupted(signum, _kept[-1] if _kept else None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


# --- locks -----------------------------------------------------------------------------------------------------


class OutputLock:
    """An exclusive lock on ``output`` for this process (see the module docstring)::

        with OutputLock(out, option="--out"):
            write(out)

    ``option``: what the user changes to aim elsewhere (named in the message). ``kept``: what an interrupt inside
    the block keeps (default: the output left as it was)."""

    def __init__(self, output: str | Path, option: str = "--out", kept: Kept | None = None):
        self.output = Path(output)
        self.path = lock_path(self.output)
        self.option = option
        self.kept = kept or f"{self.output} left as it was"
        self._fd: int | None = None
        self._interruptible: contextlib.AbstractContextManager | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> OutputLock:
        """Take the lock now, or raise :class:`OutputInUse` naming the holder (never waits)."""
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CompkitError(self.output, f"cannot write: {e.strerror or e}") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise CompkitError(self.output, f"cannot write: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _holder(fd)
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise CompkitError(self.output, f"cannot lock {self.path.name}: {e.strerror or e}") from None
                raise OutputInUse(
                    self.output, f"in use by {holder}; wait for it or choose another {self.option}"
                ) from None
            # The holder before us may have removed the file on release after we opened it: lock the file that is there.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {command_line()}\n".encode())
        self._fd = fd
        self._interruptible = interruptible(self.kept)
        self._interruptible.__enter__()
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self._interruptible.__exit__(None, None, None)
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still held: a waiting process then locks a new file, never this one
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Path:
        self.acquire()
        return self.output

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    """``pid 1234 (compkit train ...)`` from a lock file held by another process (which may still be writing it)."""
    text = ""
    for _ in range(20):
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if text:
            break
        time.sleep(0.01)
    pid, _, command = text.partition(" ")
    if not pid.isdigit():
        return "another process"
    if len(command) > _COMMAND_SHOWN:
        command = command[: _COMMAND_SHOWN - 3] + "..."
    return f"pid {pid} ({command})" if command else f"pid {pid}"


@contextlib.contextmanager
def waiting_lock(path: str | Path) -> Iterator[None]:
    """An exclusive lock on the file ``path`` among processes (on this machine, or on a shared file system that
    honours ``flock``), waited for: for steps that must not interleave, such as a search's workers asking for
    their next trial. The file is left in place (removing it could hand two processes two different files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
