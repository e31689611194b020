"""One process per output (compkit.util.locks, runs.claim_output_folder) and interrupts that say what they kept.

The whole-command scenarios (two `train --name same` at once, SIGTERM during `ensemble` and during `train` then
--resume, two ensembles of one run at once) are cases of the catalogue: tests/imperfect/processes.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compkit.training.runs import claim_output_folder
from compkit.util.errors import CompkitError
from compkit.util.locks import Interrupted, OutputInUse, OutputLock, interrupt_line, interruptible, lock_path

HOLD = """
import sys, time
from compkit.util.locks import OutputLock
OutputLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def holder(output: Path, *marker: str) -> subprocess.Popen:
    """Another process holding ``output``'s lock (``python -c HOLD output marker...``), once it says so."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(output), *marker],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_process_aiming_at_the_same_output_exits_2_naming_the_holder(synth_data, tmp_path):
    out = tmp_path / "report"
    other = holder(out, "the-holder-marker")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "compkit", "eda", "--data", str(synth_data), "--out", str(out)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
    finally:
        other.kill()
        other.wait()
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {out}: in use by pid {other.pid} (python -c {out} the-holder-marker)")
    assert line.endswith("wait for it or choose another --out")
    assert not out.exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "ensembles" / "e"
    other = holder(out)
    other.send_signal(signal.SIGKILL)
    other.wait()
    assert lock_path(out).read_text().startswith(f"{other.pid} ")  # the dead holder's file is still there
    with OutputLock(out):
        assert lock_path(out).read_text().startswith(f"{os.getpid()} ")  # its text overwritten
    assert not lock_path(out).exists()  # released: removed


def test_two_locks_on_one_output_exclude_each_other_also_within_a_process(tmp_path):
    out = tmp_path / "runs" / "tiny"
    with OutputLock(out, "--name"):
        with pytest.raises(
            OutputInUse, match=rf"in use by pid {os.getpid()} \(.*\); wait for it or choose another --name"
        ):
            OutputLock(out, "--name").acquire()
        assert not out.exists()  # the lock lives beside the output, never in it
        assert lock_path(out) == tmp_path / "runs" / ".tiny.lock"
    with OutputLock(out):  # released: free again
        pass


def test_a_default_output_in_use_moves_on_and_an_explicit_one_is_refused(tmp_path):
    base = tmp_path / "reports" / "eda"
    with OutputLock(base):
        with claim_output_folder(base, explicit=False, exist_ok=False) as chosen:
            assert chosen == tmp_path / "reports" / "eda-2"
        with pytest.raises(OutputInUse):
            claim_output_folder(base, explicit=True, exist_ok=False)
        with pytest.raises(OutputInUse):
            claim_output_folder(base, explicit=False, exist_ok=True)
    base.mkdir()
    with pytest.raises(CompkitError, match="already exists: pass --exist-ok"):
        claim_output_folder(base, explicit=True, exist_ok=False)
    assert not lock_path(base).exists()  # the refusal let go of the lock


def test_an_output_that_cannot_be_locked_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CompkitError, match="cannot write"):
        OutputLock(tmp_path / "file" / "out").acquire()


def test_an_interrupt_says_what_the_innermost_block_kept():
    error = Interrupted(signal.SIGTERM, kept=lambda: "fold 0 stopped at epoch 3")  # described once cleaned up
    assert interrupt_line(error) == ("interrupted (SIGTERM): fold 0 stopped at epoch 3", 143)
    with interruptible("runs/tiny left as it was"), interruptible(lambda: "inner kept"):
        assert interrupt_line(KeyboardInterrupt()) == ("interrupted (SIGINT): inner kept", 130)
    assert interrupt_line(Interrupted(signal.SIGINT)) == ("interrupted (SIGINT): nothing half-written was left", 130)
    assert interrupt_line(KeyboardInterrupt()) == ("interrupted (SIGINT): nothing half-written was left", 130)
    assert isinstance(error, KeyboardInterrupt)  # so every finally and with cleans up


def test_importing_compkit_installs_no_signal_handler():
    code = (
        "import signal, compkit, compkit.cli, compkit.stages.train, compkit.stages.ensemble; "
        "print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_sigterm_reaches_the_cli_as_one_line_and_exit_code_143(tmp_path):
    """The handler main() installs: a SIGTERM while a lock is held says what the lock keeps, and frees the lock."""
    code = (
        "import sys, time; from compkit.cli import app, main; from compkit.util.locks import OutputLock\n"
        "@app.command('hold-for-test')\n"
        "def hold_for_test():\n"
        f"    with OutputLock({str(tmp_path / 'out')!r}):\n"
        "        print('held', flush=True); time.sleep(60)\n"
        "sys.argv = ['compkit', 'hold-for-test']; main()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    started = time.time()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143
    assert err.strip() == f"interrupted (SIGTERM): {tmp_path / 'out'} left as it was"
    assert time.time() - started < 10
    assert not lock_path(tmp_path / "out").exists()


def test_a_signal_during_deferred_writes_waits_for_them_then_interrupts():
    from compkit.util.locks import deferred_interrupts, install_signal_handlers

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        install_signal_handlers()
        written = []
        with pytest.raises(Interrupted) as caught, deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            written.append("last.pt")  # the block goes on to its end
        assert written == ["last.pt"] and caught.value.exit_code == 143
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
