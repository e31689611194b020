"""Study storages and the trial bookkeeping every worker shares: which trials count, and killed ones repeated."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from compkit.tuning.study import (
    JOURNAL_FILE,
    WORKER_ATTR,
    counted_trials,
    dead_trials,
    definition_difference,
    open_storage,
    repeat_trial,
    this_worker,
)
from compkit.util.errors import CompkitError


def test_the_default_storage_is_a_journal_file_in_the_study_folder(tmp_path):
    opened = open_storage(None, tmp_path / "study", workers=4)
    optuna.create_study(study_name="s", storage=opened.storage).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    assert (tmp_path / "study" / JOURNAL_FILE).stat().st_size > 0
    again = optuna.load_study(study_name="s", storage=open_storage(None, tmp_path / "study").storage)
    assert len(again.trials) == 2


def test_sqlite_is_refused_for_several_workers_naming_the_journal(tmp_path):
    with pytest.raises(CompkitError, match="journal file"):
        open_storage(f"sqlite:///{tmp_path / 'study.db'}", tmp_path, workers=2)
    assert open_storage(f"sqlite:///{tmp_path / 'study.db'}", tmp_path, workers=1).description.startswith("database")


@pytest.mark.parametrize("url", ["redis://localhost", "study.db", "postgres//x"])
def test_an_unknown_storage_is_one_line(tmp_path, url):
    with pytest.raises(CompkitError, match="is not a storage"):
        open_storage(url, tmp_path)


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path):
    with pytest.raises(CompkitError) as caught:
        open_storage("postgresql://user:secret@127.0.0.1:1/db", tmp_path)
    assert "cannot open" in caught.value.problem and "secret" not in caught.value.problem


def test_a_killed_workers_trial_is_repeated_once_and_counted_once(tmp_path):
    study = optuna.create_study(storage=open_storage(None, tmp_path).storage)
    done = study.ask()
    done.suggest_float("x", 0, 1)
    study.tell(done, 0.5)
    killed = study.ask()
    killed.suggest_float("x", 0, 1)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs: the trial's worker died
    killed.set_user_attr(WORKER_ATTR, {**this_worker(), "pid": gone.pid})
    alive = study.ask()
    alive.set_user_attr(WORKER_ATTR, this_worker())  # this process: running, not dead
    assert [t.number for t in dead_trials(study)] == [killed.number]
    assert counted_trials(study) == 3
    repeat_trial(study, dead_trials(study)[0], "killed")
    assert dead_trials(study) == []
    assert counted_trials(study) == 2  # the killed one counts through its repeat, which has not started
    repeat = study.ask()
    assert repeat.suggest_float("x", 0, 1) == killed.params["x"]
    assert counted_trials(study) == 3
    assert study.trials[killed.number].state == TrialState.FAIL


def test_definition_difference_names_the_first_setting():
    assert definition_difference({"a": 1, "b": 2}, {"a": 1, "b": 2}) is None
    assert definition_difference({"a": 1, "b": 2}, {"a": 1, "b": 3}).startswith("b 2")
