"""``compkit tune``: trials as ordinary runs, pruning, failures recorded, several workers on one journal file and on
a real PostgreSQL server, best.yaml that trains, a study that refuses another definition."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from compkit.stages.runs import runs
from compkit.stages.split import split
from compkit.stages.train import train
from compkit.stages.tune import tune
from compkit.tuning.study import open_storage
from compkit.util.errors import CompkitError
from tests.conftest import copy_dataset, quiet

# Trials of a few seconds: 64 px, 2 epochs, a small decoder, fold 0 of the synthetic data.
FAST_TRIAL = ["data.image_size=64", "train.epochs=2", "model.params.decoder_channels=[16,16,16,16,16]"]
# A learning rate of 0 keeps the random weights: such a trial is below the median at its first validation.
PRUNABLE = "optim.lr: {choice: [5.0e-3, 0.0]}\nloss.dice: {uniform: [0.3, 1.0]}\n"


@pytest.fixture(scope="module")
def tune_data(synth_data, tmp_path_factory) -> Path:
    data = copy_dataset(synth_data, tmp_path_factory.mktemp("tune") / "data")
    split(data, folds=2, seed=0, console=quiet())
    return data


def space_file(folder: Path, text: str = PRUNABLE) -> Path:
    path = folder / "space.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def trials_of(folder: Path, name: str, storage=None) -> list:
    opened = open_storage(storage, folder / name)
    return optuna.load_study(study_name=name, storage=opened.storage).trials


def test_a_study_trains_trials_as_runs_and_writes_a_best_recipe_that_trains(tune_data, tmp_path):
    result = tune(
        "tiny",
        space_file(tmp_path),
        data=tune_data,
        trials=3,
        sampler="random",
        out=tmp_path / "runs",
        overrides=FAST_TRIAL,
        console=quiet(),
    )
    folder = tmp_path / "runs" / "tiny-space"
    assert result.folder == folder and result.best_trial is not None
    trials = trials_of(tmp_path / "runs", "tiny-space")
    assert [t.number for t in trials] == [0, 1, 2]
    for t in trials:
        record = json.loads((folder / f"trial-{t.number}" / "fold0" / "run.json").read_text())
        assert record["study"]["trial"] == t.number and record["study"]["params"]["optim.lr"] == t.params["optim.lr"]
        assert f"optim.lr={t.params['optim.lr']}".replace("0.005", "0.005") in " ".join(record["overrides"])
        if t.state == TrialState.COMPLETE:  # the objective is the fold's best validation dice
            assert t.value == pytest.approx(record["best_dice"])
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert result.best_trial == best.number
    html = (folder / "study.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # history, intermediate values, slices at least
    rows = (folder / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,value,optim.lr,loss.dice") and len(rows) == 4
    listed = runs([tmp_path / "runs"], console=quiet())
    assert sorted(r["name"] for r in listed if r["kind"] == "trial") == [str(folder / f"trial-{n}") for n in range(3)]
    trained = train(result.best_recipe, data=tune_data, fold="0", out=tmp_path / "final", console=quiet())
    recipe = (trained.run_dir / "fold0" / "recipe.yaml").read_text()
    assert f"lr: {best.params['optim.lr']}" in recipe and "image_size: 64" in recipe


def test_the_same_study_with_another_space_is_refused(tune_data, tmp_path):
    kwargs = dict(data=tune_data, trials=1, out=tmp_path / "runs", overrides=FAST_TRIAL, console=quiet(), study="s")
    tune("tiny", space_file(tmp_path), **kwargs)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(CompkitError, match="was started with another space"):
        tune("tiny", space_file(other, "optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"), **kwargs)


def test_a_failing_trial_records_its_error_and_the_study_goes_on(tune_data, tmp_path, cut_network, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub"))  # imagenet weights are nowhere, the network is cut
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    space = space_file(tmp_path, "model.encoder_weights: {choice: [null, imagenet]}\n")
    result = tune(
        "tiny",
        space,
        data=tune_data,
        trials=2,
        sampler="grid",
        out=tmp_path / "runs",
        overrides=FAST_TRIAL,
        console=quiet(),
    )
    by_weights = {t.params["model.encoder_weights"]: t for t in trials_of(tmp_path / "runs", "tiny-space")}
    assert by_weights[None].state == TrialState.COMPLETE
    failed = by_weights["imagenet"]
    assert failed.state == TrialState.FAIL and "\n" not in failed.user_attrs["error"]
    assert "weights" in failed.user_attrs["error"]
    assert result.best_trial == by_weights[None].number


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compkit", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def two_worker_study(data: Path, out: Path, trials: int, storage: str | None = None) -> subprocess.CompletedProcess:
    """Two local workers on study "two"; its first two trials queued with the good learning rate and the rest with
    0, so whichever worker runs them, the later ones fall below the median at their first validation (the sampler
    still draws loss.dice)."""
    queued = optuna.create_study(
        study_name="two", storage=open_storage(storage, out / "two").storage, direction="maximize"
    )
    for lr in [5e-3, 5e-3] + [0.0] * (trials - 2):
        queued.enqueue_trial({"optim.lr": lr})
    args = ["tune", "--recipe", "tiny", "--space", str(space_file(out.parent)), "--data", str(data)]
    args += ["--trials", str(trials), "--workers", "2", "--sampler", "random", "--out", str(out), "--study", "two"]
    args += ["--storage", storage] if storage else []
    return run_cli(*args, *(a for o in FAST_TRIAL for a in ("--set", o)))


def check_shared_study(trials: list, folder: Path, expected: int) -> None:
    """Every trial number once, each trained (or pruned) into its own run folder by one of the two workers."""
    assert sorted(t.number for t in trials) == list(range(expected))
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    pruned = [t.number for t in trials if t.state == TrialState.PRUNED]
    assert pruned and set(pruned) <= set(range(2, expected)), [(t.number, t.state, t.params) for t in trials]
    assert len({t.params["loss.dice"] for t in trials}) == expected  # drawn by the sampler, each its own
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2
    for t in trials:
        record = json.loads((folder / f"trial-{t.number}" / "fold0" / "run.json").read_text())
        assert record["study"]["trial"] == t.number
        if t.state == TrialState.PRUNED:  # at validation 1, or 2 where too few trials had completed at its first
            found = re.search(r"pruned \(median\) at validation (\d+): fold 0 epoch (\d+)", t.user_attrs["stopped"])
            assert found and found.group(1) == found.group(2), t.user_attrs["stopped"]
            # it stopped after the epoch it was pruned at, its fold complete
            assert record["epochs"] == int(found.group(2))
    assert (folder / "best.yaml").is_file() and (folder / "workers" / "worker-1.log").is_file()


def test_two_workers_share_one_journal_file(tune_data, tmp_path):
    done = two_worker_study(tune_data, tmp_path / "runs", trials=6)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 trials:" in done.stdout
    check_shared_study(trials_of(tmp_path / "runs", "two"), tmp_path / "runs" / "two", 6)


def test_sqlite_with_two_workers_is_refused_in_one_line(tune_data, tmp_path):
    args = ["tune", "--recipe", "tiny", "--space", "lr-loss", "--data", str(tune_data), "--trials", "2"]
    done = run_cli(*args, "--workers", "2", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path))
    assert done.returncode == 2 and "journal file" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster from Debian's postgresql package on a free local port, removed after."""
    found = shutil.which("initdb") or max(glob.glob("/usr/lib/postgresql/*/bin/initdb"), default=None)
    if found is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    pytest.importorskip("psycopg", reason="psycopg not installed: pip install 'compkit[postgres]'")
    bindir = Path(found).parent
    root = Path(tempfile.mkdtemp(prefix="compkit-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server as")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = root / "data"
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-U", "compkit", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="compkit", dbname="postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE compkit_tune")
        yield f"postgresql://compkit@127.0.0.1:{port}/compkit_tune"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(tune_data, tmp_path, postgres_url):
    done = two_worker_study(tune_data, tmp_path / "runs", trials=6, storage=postgres_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database postgresql://compkit@127.0.0.1" in done.stdout
    study = optuna.load_study(study_name="two", storage=open_storage(postgres_url, tmp_path).storage)
    check_shared_study(study.trials, tmp_path / "runs" / "two", 6)
    assert not (tmp_path / "runs" / "two" / "study.journal").exists()


def test_the_cv_objective_is_the_trials_cross_validated_oof_dice(tune_data, tmp_path):
    result = tune(
        "tiny",
        space_file(tmp_path, "loss.dice: {uniform: [0.3, 1.0]}\n"),
        data=tune_data,
        trials=1,
        folds="all",
        objective="cv",
        out=tmp_path / "runs",
        overrides=FAST_TRIAL,
        console=quiet(),
    )
    members = json.loads((result.folder / "ensembles" / "trial-0" / "members.json").read_text())
    assert result.best_value == pytest.approx(members["oof_dice_cross_validated"])
    with pytest.raises(CompkitError, match="--folds all"):
        tune(
            "tiny", space_file(tmp_path), data=tune_data, trials=1, objective="cv", out=tmp_path / "r2", console=quiet()
        )


@pytest.mark.slow
def test_a_killed_study_resumes_and_repeats_the_killed_trial(tune_data, tmp_path):
    """SIGKILL in the middle of a trial's training; the same command again repeats that trial with its values."""
    import signal
    import time

    space = space_file(tmp_path, "loss.dice: {uniform: [0.3, 1.0]}\n")
    base = ["tune", "--recipe", "tiny", "--space", str(space), "--data", str(tune_data), "--out", str(tmp_path)]
    base += ["--study", "killed", *(a for o in [*FAST_TRIAL[:1], "train.epochs=40"] for a in ("--set", o))]
    command = [sys.executable, "-m", "compkit", *base, "--trials", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "killed" / "trial-0" / "fold0" / "results.csv"
    deadline = time.time() + 120
    while not (results.is_file() and len(results.read_text().splitlines()) >= 2) and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert results.is_file(), "the first trial never finished an epoch"
    done = run_cli(*base, "--trials", "2", "--budget", "40s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trial 0: its worker" in done.stdout and "runs again with the same values" in done.stdout
    trials = {t.number: t for t in trials_of(tmp_path, "killed")}
    assert trials[0].state == TrialState.FAIL
    repeat = next(t for t in trials.values() if t.user_attrs.get("retry_of") == 0)
    assert repeat.params == trials[0].params and repeat.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert len(trials) == 3  # the killed one, its repeat, and the second trial: two counted
