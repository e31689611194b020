"""Optuna studies as compkit opens them: the storage a study lives in, its sampler and pruner (registries), the
definition every worker must agree on, and which trials count towards ``--trials``.

Storages: by default an Optuna journal file in the study folder (``study.journal``: append-only, locked per write,
so workers on one machine or on a shared file system join it with no server); ``--storage`` names a database for
many machines (``postgresql://user:password@host/db``, ``mysql+pymysql://...``) or another journal file
(``PATH.journal``). SQLite is refused for more than one worker: its locking fails under parallel writers (optuna
issue #4002).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compkit.util.errors import CompkitError
from compkit.util.fileio import process_alive
from compkit.util.registry import Registry

JOURNAL_FILE = "study.journal"
JOURNAL_SUFFIX = ".journal"
DEFINITION_ATTR = "compkit"  # the study's user attribute holding its definition (recipe, space, folds, objective)
WORKER_ATTR = "worker"  # a trial's user attribute: the host and pid of the process running it
RETRY_ATTR = "retry_of"  # a trial's user attribute: the number of the killed or interrupted trial it repeats
ERROR_ATTR = "error"  # a failed trial's one-line error
STOPPED_ATTR = "stopped"  # a pruned trial's reason, with the fold and epoch it reached
RUN_ATTR = "run"  # the trial's run folder
DATABASE_DRIVERS = {"postgresql": "psycopg[binary]", "mysql": "pymysql"}  # scheme -> what `pip install` adds


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed (psycopg 3, else psycopg2): SQLAlchemy's default for a
    URL without one changed between releases."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        if importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    elif url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


@dataclass(frozen=True)
class StudyStorage:
    """An opened Optuna storage and how to name it (passwords hidden)."""

    storage: Any
    description: str
    url: str | None  # what a worker on another machine passes as --storage (None: the journal in the study folder)


def _journal(path: Path) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def open_storage(url: str | None, study_dir: Path, workers: int = 1) -> StudyStorage:
    """The storage ``--storage`` names (default: the journal file in ``study_dir``); one line for a URL it cannot
    open, a missing database driver, or SQLite with several workers."""
    if url is None:
        path = study_dir / JOURNAL_FILE
        return StudyStorage(_journal(path), f"journal file {path}", None)
    if url.endswith(JOURNAL_SUFFIX) and "://" not in url:
        return StudyStorage(_journal(Path(url)), f"journal file {url}", str(Path(url).absolute()))
    scheme = url.partition("://")[0].partition("+")[0]
    if scheme == "sqlite":
        if workers > 1:
            raise CompkitError(
                "--storage",
                "SQLite breaks under parallel workers (optuna issue #4002): leave --storage out for the journal file "
                f"in the study folder ({JOURNAL_FILE}, on a shared file system for several machines), or use PostgreSQL",
            )
    elif scheme not in DATABASE_DRIVERS:
        raise CompkitError(
            "--storage",
            f"{url!r} is not a storage: a journal file (PATH{JOURNAL_SUFFIX}), postgresql://, mysql:// or sqlite:///FILE",
        )
    from optuna.storages import RDBStorage
    from sqlalchemy.engine import make_url

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL: name it without its text after the scheme
        raise CompkitError("--storage", f"cannot read the database URL ({scheme}://...)") from None
    try:
        storage = RDBStorage(_with_installed_driver(url), engine_kwargs={"pool_pre_ping": True})
    except ModuleNotFoundError as e:
        package = DATABASE_DRIVERS.get(scheme, e.name)
        raise CompkitError("--storage", f"{shown} needs the {e.name} driver: pip install '{package}'") from None
    except Exception as e:
        if "DB access module" in str(e):  # Optuna's wording for a missing driver
            package = DATABASE_DRIVERS[scheme]
            raise CompkitError("--storage", f"{shown} needs a database driver: pip install '{package}'") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CompkitError("--storage", f"cannot open {shown}: {first}") from None
    return StudyStorage(storage, f"database {shown}", url)


# Samplers and pruners: name -> factory. A sampler factory takes (seed, grid search space or None); a pruner's takes
# nothing (its settings suit short studies: the first trials always finish, then any validation may prune).
SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler", option="--sampler")
PRUNERS: Registry[Callable[[], Any]] = Registry("pruner", option="--pruner")


@SAMPLERS.register("tpe", description="Tree-structured Parzen estimator (Optuna's default), multivariate")
def _tpe(seed: int, grid: dict | None = None):
    import optuna

    # constant_liar: parallel workers do not all sample next to the same running trial
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


@SAMPLERS.register("random", description="independent uniform draws")
def _random(seed: int, grid: dict | None = None):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("cmaes", description="CMA-ES over the numeric keys (choices drawn at random)")
def _cmaes(seed: int, grid: dict | None = None):
    import optuna

    try:
        import cmaes  # noqa: F401
    except ModuleNotFoundError:
        raise CompkitError("--sampler", "cmaes needs the cmaes package: pip install cmaes") from None
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


@SAMPLERS.register("grid", description="every combination of the space's values (choices and stepped ranges)")
def _grid(seed: int, grid: dict | None = None):
    import optuna

    class AskTellGridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler, for compkit's ask-and-tell workers: they stop themselves once the grid is
        exhausted (``is_exhausted``); the stock sampler's ``study.stop()`` works only inside ``study.optimize``."""

        def after_trial(self, study, trial, state, values) -> None:
            return None

    return AskTellGridSampler(grid, seed=seed)


@PRUNERS.register("median", description="stop a trial below the median of earlier trials at the same validation")
def _median():
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


@PRUNERS.register("hyperband", description="Hyperband's successive halving over validations")
def _hyperband():
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)


@PRUNERS.register("none", description="every trial trains to its end")
def _no_pruner():
    import optuna

    return optuna.pruners.NopPruner()


def definition_difference(recorded: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The first setting in which a study's recorded definition and this command's differ, as one phrase."""
    for key in sorted(set(recorded) | set(wanted)):
        if recorded.get(key) != wanted.get(key):
            return f"{key} {recorded.get(key)!r} here {wanted.get(key)!r}"
    return None


def this_worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def dead_trials(study) -> list[Any]:
    """Running trials whose worker process, on this machine, has died (killed): they will never finish."""
    from optuna.trial import TrialState

    here = socket.gethostname()
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR) or {}
        if worker.get("host") == here and worker.get("pid") != os.getpid() and not process_alive(int(worker["pid"])):
            dead.append(trial)
    return dead


def repeated_trials(study) -> set[int]:
    """Numbers of trials that a later trial repeats (they were killed or interrupted)."""
    return {t.user_attrs[RETRY_ATTR] for t in study.get_trials(deepcopy=False) if RETRY_ATTR in t.user_attrs}


def counted_trials(study) -> int:
    """Trials that count towards ``--trials``: finished, pruned, failed with an error, or running; a killed or
    interrupted trial counts once, through the trial that repeats it (queued ones count when they start)."""
    from optuna.trial import TrialState

    repeated = repeated_trials(study)
    return sum(
        1 for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING and t.number not in repeated
    )


def repeat_trial(study, trial, reason: str) -> None:
    """Fail ``trial`` (its worker died or was interrupted) and queue a trial with the same parameters."""
    from optuna.trial import TrialState

    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number, "retry_reason": reason})
