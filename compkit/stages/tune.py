"""``compkit tune``: a hyperparameter search on Optuna -> ``runs/<study>/``.

Each trial is an ordinary run, ``runs/<study>/trial-<n>/fold<k>/``, trained by :func:`compkit.stages.train.train`
with the base recipe, the study's ``--set`` settings and the values the sampler drew from the search space
(:mod:`compkit.tuning.space`); its ``run.json`` records the study, the trial number and the values, so trials
ensemble, inspect and resume like any run. The objective is the mean best validation dice of the chosen folds
(``--objective cv``: the trial's cross-validated out-of-fold dice after thresholds, from ``compkit ensemble``),
reported to the pruner after every validation; a pruned trial stops after that epoch, complete as at an early stop.

Many workers, one study: every worker runs this same command against one storage (:mod:`compkit.tuning.study`); it
asks for the next trial under a lock in the study folder, so workers sharing the folder never overshoot
``--trials``. ``--workers N`` starts N such workers here (one per GPU where there are several). A failed trial
records its one-line error and the study goes on; a trial whose worker was killed or interrupted is repeated with
the same values when a worker next starts; ``--budget`` bounds the wall time of the whole command.

Output: ``study.json`` (the definition every worker must agree on), ``study.journal`` (the default storage),
``trial-<n>/``, ``trials.csv``, ``best.yaml``, ``study.html``, ``workers/worker-<i>.log`` (with ``--workers``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from compkit.data import open_dataset
from compkit.data.splits import check_current, fingerprint, load_splits, splits_path
from compkit.families import resolve_family
from compkit.planning.planner import describe_seconds, parse_budget
from compkit.stages.ensemble import ensemble
from compkit.stages.train import now, parse_folds, train
from compkit.stores.members import MEMBERS_FILE, read_members_file
from compkit.training.recipe import load_recipe
from compkit.training.runs import RUNS_DIR
from compkit.training.trainer import RunObserver
from compkit.tuning.report import trial_rows, write_best_recipe, write_study_html, write_trials_csv
from compkit.tuning.space import SearchSpace, brief, load_space, overrides_for
from compkit.tuning.study import (
    DEFINITION_ATTR,
    ERROR_ATTR,
    PRUNERS,
    RUN_ATTR,
    SAMPLERS,
    STOPPED_ATTR,
    WORKER_ATTR,
    StudyStorage,
    counted_trials,
    dead_trials,
    definition_difference,
    open_storage,
    repeat_trial,
    this_worker,
)
from compkit.util.console import output_console, recording_console, rule, transient_progress
from compkit.util.errors import CompkitError
from compkit.util.fileio import write_json
from compkit.util.locks import waiting_lock

OBJECTIVES = ("val", "cv")
STUDY_FILE = "study.json"
TRIAL_PREFIX = "trial-"
WORKERS_DIR = "workers"
ASK_LOCK = ".ask.lock"  # held while a worker counts the trials and asks for the next one
FAILURES_IN_A_ROW = 3  # a worker stops when this many trials in a row fail: the setup, not the values, is wrong
ENSEMBLES_SUBDIR = "ensembles"  # --objective cv: each trial's out-of-fold ensemble


@dataclass(frozen=True)
class StudyPlan:
    """One study as this command runs it: what defines it (every worker must agree) and how this worker runs."""

    name: str
    folder: Path
    recipe: str  # the base recipe, as given (a name or a file)
    data: str  # the dataset folder, absolute
    space: SearchSpace
    folds: str
    fold_count: int  # folds trained per trial
    objective: str
    overrides: tuple[str, ...]
    definition: dict[str, Any]
    trials: int | None
    budget: float | None  # seconds for the whole command
    workers: int
    sampler: str
    pruner: str
    seed: int
    weights_cache: str | None
    deadline: float = field(default=float("inf"))  # time.time() at which no new trial starts

    def left(self) -> float:
        return self.deadline - time.time()

    def trial_budget(self) -> float | None:
        """A trial's seconds: what is left, and with --trials no more than its fair share of the budget."""
        if self.budget is None:
            return None
        share = self.budget * self.workers / self.trials if self.trials else self.budget
        return max(1.0, min(self.left(), share))


@dataclass
class StudyResult:
    """What :func:`tune` returns: the study folder, the best trial's number and value, and its recipe file."""

    folder: Path
    best_trial: int | None
    best_value: float | None
    best_recipe: Path | None
    trials: list[dict[str, Any]]


def _check_options(objective: str, workers: int, trials: int | None, sampler: str, pruner: str) -> None:
    if objective not in OBJECTIVES:
        raise CompkitError("--objective", f"must be {' or '.join(OBJECTIVES)}, got {objective!r}")
    if workers < 1:
        raise CompkitError("--workers", f"must be at least 1, got {workers}")
    if trials is not None and trials < 1:
        raise CompkitError("--trials", f"must be at least 1, got {trials}")
    SAMPLERS.get(sampler)
    PRUNERS.get(pruner)


def plan_study(
    recipe: str | Path,
    data: str | Path | None,
    space: str | Path,
    folds: str,
    study: str | None,
    out: str | Path,
    objective: str,
    overrides: list[str] | tuple[str, ...],
    trials: int | None,
    budget: str | float | None,
    workers: int,
    sampler: str,
    pruner: str,
    seed: int,
    weights_cache: str | Path | None,
) -> StudyPlan:
    """Check everything a trial would meet before the first one: the recipe, every value the space can give it
    (schema and model family), the dataset and its current folds, the objective's needs."""
    cfg = load_recipe(recipe, overrides)
    root = data or cfg.data.root
    if root is None:
        raise CompkitError(cfg.name, "no dataset: pass --data DATA or set data.root in the recipe")
    root = str(Path(root).absolute())
    searched = load_space(space)
    dataset = open_dataset(root, "train", cfg.data.format, classes=cfg.data.classes)
    quiet = Console(quiet=True)
    for candidate in searched.check(recipe, overrides):
        candidate.data.root = root
        resolve_family(candidate, quiet).check(candidate, len(dataset.classes), quiet)
    splits_file = splits_path(root, cfg.data.splits)
    splits = load_splits(root, cfg.data.splits)
    check_current(splits, dataset, splits_file)
    fold_ids = parse_folds(folds, len(splits["folds"]), splits_file)
    if objective == "cv" and len(fold_ids) < len(splits["folds"]):
        raise CompkitError(
            "--objective", "cv scores every training image out of fold: train all folds (--folds all), or use val"
        )
    name = study or f"{cfg.name}-{searched.name}"
    base = load_recipe(recipe)
    base.data.root = None  # the same study on another machine finds its data elsewhere; its folds must match
    definition = {  # as the storage keeps it (JSON), so that a worker compares like with like
        "recipe": base.model_dump(mode="json"),
        "space": searched.definition,
        "overrides": list(overrides),
        "folds": [int(k) for k in fold_ids],
        "objective": objective,
        "splits": fingerprint(splits),
    }
    definition = json.loads(json.dumps(definition))
    seconds = parse_budget(budget) if budget is not None else None
    return StudyPlan(
        *(name, Path(out) / name, str(recipe), root, searched, folds, len(fold_ids), objective, tuple(overrides)),
        *(definition, trials, seconds, workers, sampler, pruner, seed),
        None if weights_cache is None else str(weights_cache),
    )


def _open_study(plan: StudyPlan, opened: StudyStorage, worker: int):
    """Create the study or join it; a study started with another definition is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # compkit says what happens, once
    grid = plan.space.grid() if plan.sampler == "grid" else None
    # Each worker draws its own values: the seed differs by worker and by machine.
    seed = plan.seed + worker + zlib.crc32(os.uname().nodename.encode()) % 100_003
    sampler = SAMPLERS.get(plan.sampler)(seed, grid)
    try:
        study = optuna.create_study(
            study_name=plan.name,
            storage=opened.storage,
            sampler=sampler,
            pruner=PRUNERS.get(plan.pruner)(),
            direction="maximize",
            load_if_exists=True,
        )
    except Exception as e:  # a database that refuses the connection, a journal file that is not one
        raise CompkitError(
            "--storage", f"cannot open study {plan.name} in {opened.description}: {str(e).splitlines()[0]}"
        ) from None
    recorded = study.user_attrs.get(DEFINITION_ATTR)
    if recorded is None:
        study.set_user_attr(DEFINITION_ATTR, plan.definition)
    elif (difference := definition_difference(recorded, plan.definition)) is not None:
        raise CompkitError(
            "--study",
            f"{plan.name} in {opened.description} was started with another {difference.split(' ', 1)[0]} "
            f"({difference}): give another --study, or the same recipe, space, --set, --folds and --objective",
        )
    return study


def _objective_value(plan: StudyPlan, trained, console: Console) -> float:
    if plan.objective == "val":
        return sum(row["best_dice"] for row in trained) / len(trained)
    folder = ensemble(
        [trained.run_dir], name=trained.run_dir.name, out=plan.folder / ENSEMBLES_SUBDIR, exist_ok=True, console=console
    )
    figures = read_members_file(folder / MEMBERS_FILE)
    if "oof_dice_cross_validated" not in figures:
        raise CompkitError(folder, "no cross-validated out-of-fold dice (the ensemble could not tune on every image)")
    return float(figures["oof_dice_cross_validated"])


def run_trial(plan: StudyPlan, study, trial, opened: StudyStorage, console: Console) -> str:
    """Train one trial as a run and tell the study how it ended: 'complete', 'pruned' or 'failed'."""
    from optuna.trial import TrialState

    values = plan.space.suggest(trial)
    run_dir = plan.folder / f"{TRIAL_PREFIX}{trial.number}"
    trial.set_user_attr(RUN_ATTR, str(run_dir))
    validations = 0

    def prune(fold: int, epoch: int, dice: float) -> str | None:
        nonlocal validations
        validations += 1
        trial.report(dice, validations)
        if trial.should_prune():
            return f"pruned ({plan.pruner}) at validation {validations}: fold {fold} epoch {epoch}, val dice {dice:.4f}"
        return None

    record = {"study": {"name": plan.name, "trial": trial.number, "params": values, "storage": opened.description}}
    shown = ", ".join(f"{key}={brief(value)}" for key, value in values.items())
    rule(console, f"{plan.name}: trial {trial.number}")
    console.print(f"trial {trial.number}: {escape(shown)}")
    try:
        trained = train(
            plan.recipe,
            plan.data,
            fold=plan.folds,
            overrides=[*plan.overrides, *overrides_for(values)],
            name=run_dir.name,
            out=plan.folder,
            budget=plan.trial_budget(),
            console=recording_console(console),
            observer=RunObserver(prune),
            record=record,
            weights_cache=plan.weights_cache,
        )
        if trained.stopped is not None:
            trial.set_user_attr(STOPPED_ATTR, trained.stopped)
            study.tell(trial, state=TrialState.PRUNED)
            console.print(f"trial {trial.number} {trained.stopped}")
            return "pruned"
        value = _objective_value(plan, trained, console)
    except KeyboardInterrupt:
        repeat_trial(study, trial, "interrupted")
        raise
    except CompkitError as e:
        error = str(e)
    except Exception as e:  # the study goes on; the trial keeps its one-line reason
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    else:
        study.tell(trial, value)
        console.print(f"trial {trial.number}: objective {value:.4f} ({plan.objective})")
        return "complete"
    trial.set_user_attr(ERROR_ATTR, error)
    study.tell(trial, state=TrialState.FAIL)
    console.print(f"[red]trial {trial.number} failed:[/red] {escape(error)}")
    return "failed"


def _grid_done(study) -> bool:
    is_exhausted = getattr(study.sampler, "is_exhausted", None)
    return bool(is_exhausted and is_exhausted(study))


def run_worker(plan: StudyPlan, study, opened: StudyStorage, console: Console) -> str:
    """Trials until --trials are counted, the budget is spent, the grid is done, or trials keep failing; why it
    stopped."""
    lock = plan.folder / ASK_LOCK
    with waiting_lock(lock):
        for dead in dead_trials(study):
            pid = dead.user_attrs[WORKER_ATTR]["pid"]
            repeat_trial(study, dead, f"its worker (pid {pid}) died")
            console.print(f"trial {dead.number}: its worker (pid {pid}) died; it runs again with the same values")
    failures = 0
    while True:
        with waiting_lock(lock):
            if plan.left() <= 0:
                return f"the {describe_seconds(plan.budget)} budget is spent"
            if plan.trials is not None and counted_trials(study) >= plan.trials:
                return f"{plan.trials} trials counted"
            if _grid_done(study):
                return "every grid point tried"
            trial = study.ask()
            trial.set_user_attr(WORKER_ATTR, this_worker())
        ended = run_trial(plan, study, trial, opened, console)
        failures = failures + 1 if ended == "failed" else 0
        if failures >= FAILURES_IN_A_ROW:
            error = study.trials[trial.number].user_attrs.get(ERROR_ATTR, "")
            raise CompkitError(
                plan.folder, f"{FAILURES_IN_A_ROW} trials in a row failed, the last with: {error} (see {plan.folder})"
            )


def _worker_command(plan: StudyPlan, storage: str | None, index: int) -> list[str]:
    """The ``compkit tune`` command line of local worker ``index``: this study, one worker, the same deadline."""
    args = ["--recipe", plan.recipe, "--data", plan.data, "--space", str(plan.space.path), "--folds", plan.folds]
    args += ["--study", plan.name, "--out", str(plan.folder.parent), "--objective", plan.objective]
    args += ["--sampler", plan.sampler, "--pruner", plan.pruner, "--seed", str(plan.seed)]
    args += ["--trials", str(plan.trials)] if plan.trials else []
    args += ["--storage", storage] if storage else []
    args += ["--weights-cache", plan.weights_cache] if plan.weights_cache else []
    args += [a for o in plan.overrides for a in ("--set", o)]
    if plan.budget is not None:
        args += ["--budget", f"{plan.budget}s", "--deadline", f"{plan.deadline:.3f}"]
    args += ["--worker", f"{index}/{plan.workers}"]
    return [sys.executable, "-m", "compkit", "tune", *args]


def _worker_environment(index: int, workers: int) -> dict[str, str]:
    """One GPU per worker where there are several; else the CPU cores shared out (no oversubscribed threads)."""
    import torch

    env = dict(os.environ)
    gpus = torch.cuda.device_count()
    if gpus > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    elif gpus == 0:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        env.setdefault("OMP_NUM_THREADS", threads)
        env.setdefault("MKL_NUM_THREADS", threads)
    return env


def _run_workers(plan: StudyPlan, study, storage: str | None, console: Console) -> None:
    """``--workers N``: N worker processes on this study, each logging to ``workers/worker-<i>.log``; a progress
    line from the study meanwhile."""
    from optuna.trial import TrialState

    logs = plan.folder / WORKERS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for i in range(plan.workers):
        log = open(logs / f"worker-{i}.log", "w", encoding="utf-8")  # noqa: SIM115 (closed when the worker ends)
        command = _worker_command(plan, storage, i)
        env = _worker_environment(i, plan.workers)
        processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    console.print(f"{plan.workers} workers started on study {plan.name}; their output: {logs}/worker-<i>.log")
    progress = transient_progress(
        console, TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    announced: set[int] = set()

    def announce() -> int:
        """A line for each trial that ended since the last look (what a log of this command shows); how many."""
        ended = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        for t in sorted(ended, key=lambda t: t.number):
            if t.number not in announced:
                announced.add(t.number)
                how = {TrialState.COMPLETE: f"objective {t.value:.4f}" if t.value is not None else "complete"}.get(
                    t.state, t.user_attrs.get(STOPPED_ATTR) or t.user_attrs.get(ERROR_ATTR) or t.state.name.lower()
                )
                progress.console.print(f"trial {t.number} ({t.state.name.lower()}): {escape(str(how))}")
        return len(ended)

    try:
        with progress:
            task = progress.add_task(plan.name, total=plan.trials)
            while any(p.poll() is None for p, _ in processes):
                time.sleep(2)
                progress.update(task, completed=announce())
            announce()
    except KeyboardInterrupt:
        for p, _ in processes:
            p.terminate()  # each worker repeats its trial when the study next runs
        for p, _ in processes:
            p.wait(timeout=60)
        raise
    finally:
        for _, log in processes:
            log.close()
    for i, (p, _) in enumerate(processes):
        if p.returncode:
            lines = (logs / f"worker-{i}.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
            last = lines[-1] if lines else "no output"
            console.print(f"[yellow]worker {i} ended with exit code {p.returncode}:[/yellow] {escape(last)}")


def _top_table(rows: list[dict[str, Any]], plan: StudyPlan, limit: int = 10) -> Table:
    done = sorted((r for r in rows if r["state"] == "complete"), key=lambda r: -r["value"])
    table = Table(title=f"{plan.name}: the best trials ({plan.objective} dice, {plan.fold_count} fold(s) each)")
    for column in ("trial", "value", *plan.space.keys, "seconds", "run"):
        table.add_column(column, justify="right" if column in ("trial", "value", "seconds") else "left")
    for r in done[:limit]:
        cells = [str(r["trial"]), f"{r['value']:.4f}", *(brief(r[k]) for k in plan.space.keys)]
        table.add_row(*cells, str(r["seconds"] or "-"), str(r["run"]))
    return table


def report(plan: StudyPlan, study, opened: StudyStorage, console: Console) -> StudyResult:
    """``trials.csv``, ``best.yaml`` and ``study.html``; the top trials and what comes next."""
    rows = trial_rows(study, plan.space)
    trials_csv = write_trials_csv(study, plan.space, plan.folder)
    counts = {state: sum(r["state"] == state for r in rows) for state in ("complete", "pruned", "fail", "running")}
    summary = (
        f"{len(rows)} trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed"
        + (f", {counts['running']} running" if counts["running"] else "")
    )
    html = write_study_html(study, rows, plan.folder, f"{summary}; storage: {opened.description}")
    if not counts["complete"]:
        console.print(f"{summary}; no trial completed, so no best recipe. Wrote {trials_csv} and {html}")
        return StudyResult(plan.folder, None, None, None, rows)
    best = study.best_trial
    best_yaml = write_best_recipe(study, plan.space, plan.recipe, list(plan.overrides), plan.folder)
    console.print(_top_table(rows, plan))
    console.print(f"{summary}; best: trial {best.number}, {plan.objective} dice {best.value:.4f}")
    console.print(
        f"wrote {best_yaml}, {trials_csv} and {html}; next: compkit train --recipe {best_yaml} --data {plan.data}"
    )
    return StudyResult(plan.folder, best.number, float(best.value), best_yaml, rows)


def _worker_index(worker: str | None) -> tuple[int, int] | None:
    if worker is None:
        return None
    index, _, total = worker.partition("/")
    if not (index.isdigit() and total.isdigit() and int(index) < int(total)):
        raise CompkitError("--worker", f"expected INDEX/COUNT such as 0/2, got {worker!r}")
    return int(index), int(total)


def tune(
    recipe: str | Path,
    space: str | Path,
    data: str | Path | None = None,
    trials: int | None = None,
    budget: str | float | None = None,
    folds: str = "0",
    study: str | None = None,
    storage: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    workers: int = 1,
    out: str | Path = RUNS_DIR,
    objective: str = "val",
    overrides: list[str] | tuple[str, ...] = (),
    seed: int = 42,
    weights_cache: str | Path | None = None,
    console: Console | None = None,
    worker: str | None = None,
    deadline: float | None = None,
) -> StudyResult:
    """Search ``space`` around ``recipe`` on ``data``: trials until ``trials`` are counted or ``budget`` (``30m``,
    ``6h``) is spent, each trained on ``folds`` into ``out/<study>/trial-<n>/`` (see the module docstring);
    ``workers`` local worker processes (any number of machines can join the same ``storage`` with this command).
    Returns the study folder, the best trial and ``best.yaml``. ``worker`` (INDEX/COUNT) and ``deadline`` are how
    ``workers`` starts its processes."""
    console = console or output_console()
    if trials is None and budget is None:
        raise CompkitError("--trials", "give --trials N, --budget (30m, 6h) or both: a search must end")
    _check_options(objective, workers, trials, sampler, pruner)
    local = _worker_index(worker)
    total_workers = local[1] if local else workers
    plan = plan_study(
        *(recipe, data, space, folds, study, out, objective, overrides, trials, budget, total_workers),
        *(sampler, pruner, seed, weights_cache),
    )
    if plan.budget is not None:
        plan = replace(plan, deadline=deadline if deadline is not None else time.time() + plan.budget)
    opened = open_storage(storage, plan.folder, total_workers)
    study_obj = _open_study(plan, opened, local[0] if local else 0)
    if local is None:
        write_json(
            plan.folder / STUDY_FILE,
            {**plan.definition, "name": plan.name, "storage": opened.description, "updated": now()},
        )
        console.print(
            f"study {plan.name}: {len(plan.space.dimensions)} keys of {plan.space.path}, {plan.objective} dice of "
            f"{plan.fold_count} fold(s) per trial, {plan.sampler} sampler, {plan.pruner} pruner; {opened.description}"
        )
    if local is None and workers > 1:
        _run_workers(plan, study_obj, storage, console)
    else:
        why = run_worker(plan, study_obj, opened, console)
        console.print(f"worker stops: {why}")
    if local is not None:
        return StudyResult(plan.folder, None, None, None, [])
    return report(plan, study_obj, opened, console)
