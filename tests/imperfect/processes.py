"""Several processes and signals, as a shared machine, a scheduler or a notebook's restart bring them: one process
per output (a second one aiming at it stops, naming the first; a killed one's lock is taken over), reading stays
concurrent, and SIGTERM (Kaggle, Slurm, Kubernetes, `timeout`) leaves the previous artifact and a resumable
last.pt. Each case runs real `compkit` processes and asserts what ends up on disk."""

from __future__ import annotations

import glob
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from compkit.stages.split import split
from compkit.training.checkpoint import checkpoint_epoch
from compkit.training.results import read_results
from compkit.util.locks import lock_path
from tests.conftest import FAST, copy_dataset, quiet
from tests.imperfect import Case, Env

SETS = [a for o in FAST for a in ("--set", o)]


def compkit(env: Env, *args) -> subprocess.Popen:
    """``python -m compkit ARGS`` in the case's folder, as its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "compkit", *map(str, args)],
        cwd=env.tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def wait_until(process: subprocess.Popen, condition, timeout: float = 300) -> None:
    """Poll ``condition`` while ``process`` runs; fail if it ended (or the time ran out) first."""
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, (
            f"ended (exit code {process.returncode}) before the moment to interrupt it: {process.stderr.read()}"
        )
        assert time.time() < deadline, "timed out"
        time.sleep(0.005)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def split_copy(env: Env) -> Path:
    data = copy_dataset(env.fixture("synth_data"), env.tmp / "data")
    split(data, folds=2, seed=0, console=quiet())
    return data


def hold(output: Path) -> subprocess.Popen:
    """A process holding ``output``'s lock, once it says so."""
    code = (
        "import sys, time\nfrom compkit.util.locks import OutputLock\n"
        "OutputLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(output)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def two_trains_with_one_name(env: Env) -> None:
    data = split_copy(env)
    trains = {
        seed: compkit(
            env,
            "train",
            "--recipe",
            "tiny",
            "--data",
            data,
            "--fold",
            0,
            "--name",
            "same",
            "--out",
            "runs",
            *SETS,
            "--set",
            "train.epochs=1",
            "--set",
            f"train.seed={seed}",
        )
        for seed in (1, 2)
    }
    done = {seed: finish(p) for seed, p in trains.items()}
    [winner] = [seed for seed, (code, _, _) in done.items() if code == 0]
    [loser] = [seed for seed, (code, _, _) in done.items() if code != 0]
    code, _, err = done[loser]
    assert code == 2, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"error: runs/same: in use by pid {trains[winner].pid} (compkit train --recipe tiny")
    )
    # The fold folder is the winner's alone: recipe, record, checkpoint and results of one run.
    fold = env.tmp / "runs" / "same" / "fold0"
    assert yaml.safe_load((fold / "recipe.yaml").read_text())["train"]["seed"] == winner
    record = json.loads((fold / "run.json").read_text())
    assert (
        record["recipe"]["train"]["seed"] == winner and f"train.seed={winner}" in record["command"] and record["ended"]
    )
    assert [int(r["epoch"]) for r in read_results(fold)] == [1] and checkpoint_epoch(fold / "best.pt") == 1
    assert not lock_path(fold.parent).exists()


def sigterm_during_ensemble(env: Env) -> None:
    run = env.fixture("trained_tiny_run").run
    env.cli("ensemble", run, "--name", "e", "--out", "ens")
    before = files(env.tmp / "ens" / "e")
    process = compkit(env, "ensemble", run, "--name", "e", "--out", "ens", "--exist-ok", "--resolution", 128)
    wait_until(process, lambda: glob.glob(str(env.tmp / "ens" / ".e.partial-*")))  # writing its new version
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 143, err
    assert err.strip().splitlines()[-1] == "interrupted (SIGTERM): ens/e left as it was" and "Traceback" not in err
    assert sorted(p.name for p in (env.tmp / "ens").iterdir()) == ["e"]  # no staging folder, no lock file left
    assert files(env.tmp / "ens" / "e") == before


def sigterm_during_train_then_resume(env: Env) -> None:
    data = split_copy(env)
    args = ["train", "--recipe", "tiny", "--data", data, "--fold", 0, "--name", "t", "--out", "runs", *SETS]
    fold = env.tmp / "runs" / "t" / "fold0"
    process = compkit(env, *args, "--set", "train.epochs=40")
    wait_until(process, lambda: (fold / "last.pt").is_file())
    time.sleep(0.3)  # inside the next epoch
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 143, err
    line = err.strip().splitlines()[-1]
    found = re.fullmatch(
        r"interrupted \(SIGTERM\): fold 0 stopped at epoch (\d+); runs/t/fold0/last.pt kept: continue with --resume",
        line,
    )
    assert found, err
    epoch = int(found.group(1))
    assert checkpoint_epoch(fold / "last.pt") == epoch  # the last complete epoch, and it says so
    record = json.loads((fold / "run.json").read_text())
    assert record["ended"] is None and record["interrupted"]  # never claims it ended
    assert not glob.glob(str(fold / "**" / ".*partial-*"), recursive=True) and not lock_path(fold.parent).exists()
    resumed = env.cli(*args, "--set", f"train.epochs={epoch + 1}", "--resume")
    assert f"resuming fold 0 after epoch {epoch}" in resumed.output
    assert [int(r["epoch"]) for r in read_results(fold)] == list(range(1, epoch + 2))
    assert checkpoint_epoch(fold / "last.pt") == epoch + 1 and json.loads((fold / "run.json").read_text())["ended"]


def lock_of_a_killed_process(env: Env) -> None:
    run = env.fixture("trained_tiny_run").run
    out = env.tmp / "ens" / "e"
    holder = hold(out)
    refused = env.cli("ensemble", run, "--name", "e", "--out", "ens", ok=False)
    assert refused.exit_code == 2 and f"in use by pid {holder.pid}" in refused.output
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(out).read_text().startswith(f"{holder.pid} ")  # left behind by the killed process
    env.cli("ensemble", run, "--name", "e", "--out", "ens")
    assert (out / "members.json").is_file() and (out / "test" / "index.json").is_file()
    assert not lock_path(out).exists()


def two_ensembles_of_one_run(env: Env) -> None:
    run = env.fixture("trained_tiny_run").run
    both = [compkit(env, "ensemble", run, "--name", "e", "--out", out) for out in ("a", "b")]
    for process in both:
        code, _, err = finish(process)
        assert code == 0, err
    assert files(env.tmp / "a" / "e")["test/index.json"] == files(env.tmp / "b" / "e")["test/index.json"]
    assert files(env.tmp / "a" / "e").keys() == files(env.tmp / "b" / "e").keys()


def two_ensembles_with_the_default_name(env: Env) -> None:
    """Two ensembles of one run into one --out at once, no --name: one gets the default name, the other moves on
    to name-2, as when the first had finished; never two writers of one folder."""
    run = env.fixture("trained_tiny_run").run
    both = [compkit(env, "ensemble", run, "--out", "ens") for _ in range(2)]
    for process in both:
        code, _, err = finish(process)
        assert code == 0, err
    assert sorted(p.name for p in (env.tmp / "ens").iterdir()) == ["tiny", "tiny-2"]
    for name in ("tiny", "tiny-2"):
        assert json.loads((env.tmp / "ens" / name / "members.json").read_text())["members"][0]["path"] == str(run)


CASES = [
    Case("processes-two-trains-one-name", two_trains_with_one_name),
    Case("processes-sigterm-during-ensemble", sigterm_during_ensemble),
    Case("processes-sigterm-during-train-then-resume", sigterm_during_train_then_resume),
    Case("processes-lock-of-a-killed-process", lock_of_a_killed_process),
    Case("processes-two-ensembles-of-one-run", two_ensembles_of_one_run),
    Case("processes-two-ensembles-default-name", two_ensembles_with_the_default_name),
]
