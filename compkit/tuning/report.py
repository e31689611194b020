"""What a study leaves: ``trials.csv`` (one row per trial), ``best.yaml`` (the base recipe extended by the best
trial's values, ready for ``compkit train --recipe``) and ``study.html`` (Optuna's matplotlib plots, embedded)."""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import Any

import yaml

from compkit.training.recipe import apply_override, load_recipe
from compkit.tuning.space import SearchSpace, overrides_for
from compkit.tuning.study import ERROR_ATTR, RETRY_ATTR, RUN_ATTR, STOPPED_ATTR, repeated_trials
from compkit.util.fileio import atomic_write, write_csv
from compkit.util.plots import figure_png

TRIALS_CSV = "trials.csv"
BEST_RECIPE = "best.yaml"
STUDY_HTML = "study.html"


def _seconds(trial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)


def trial_rows(study, space: SearchSpace) -> list[dict[str, Any]]:
    """Per trial: number, state, value, each parameter, what stopped or failed it, seconds, run folder."""
    repeated = repeated_trials(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        note = t.user_attrs.get(ERROR_ATTR) or t.user_attrs.get(STOPPED_ATTR) or ""
        if t.number in repeated:
            note = "its worker was killed or interrupted: repeated by a later trial"
        elif RETRY_ATTR in t.user_attrs and not note:
            note = f"repeats trial {t.user_attrs[RETRY_ATTR]}"
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "value": None if t.value is None else round(float(t.value), 6),
                **{key: t.params.get(key) for key in space.keys},
                "note": note,
                "seconds": _seconds(t),
                "run": t.user_attrs.get(RUN_ATTR, ""),
            }
        )
    return rows


def write_trials_csv(study, space: SearchSpace, folder: Path) -> Path:
    path = folder / TRIALS_CSV
    write_csv(path, trial_rows(study, space))
    return path


def best_recipe_text(study, space: SearchSpace, base: str, overrides: list[str], folder: Path) -> str:
    """``best.yaml``: ``extends:`` the base recipe, with the study's fixed ``--set`` settings and the best trial's
    values as nested keys (a changed loss term keeps the base's other terms: a recipe's loss mapping is replaced
    whole)."""
    best = study.best_trial
    values = space.values_of(best.params)
    nested: dict[str, Any] = {}
    for assignment in [*overrides, *overrides_for(values)]:
        apply_override(nested, assignment)
    base_file = Path(base)
    extends = os.path.relpath(base_file.absolute(), folder.absolute()) if base_file.is_file() else str(base)
    if "loss" in nested:
        nested["loss"] = {**load_recipe(base).loss, **nested["loss"]}
    header = (
        f"# compkit tune, study {study.study_name}: trial {best.number}, objective {best.value:.4f}\n"
        f"# {base} with the study's --set settings and the best values of {space.path.name}\n"
    )
    body = {"name": f"{study.study_name}-best", "extends": extends, **nested}
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def write_best_recipe(study, space: SearchSpace, base: str, overrides: list[str], folder: Path) -> Path:
    """Write ``best.yaml`` and check that it loads as a recipe."""
    path = folder / BEST_RECIPE
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(best_recipe_text(study, space, base, overrides, folder))
    load_recipe(path)
    return path


def _plots(study) -> list[tuple[str, str | None, str]]:
    """(title, base64 PNG or None, why there is none) for each of Optuna's matplotlib plots of the study."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: pyplot (which Optuna draws with) must not open a window
    import matplotlib.pyplot as plt
    import numpy as np
    import optuna.visualization.matplotlib as plots
    from optuna.exceptions import ExperimentalWarning

    wanted = [
        ("Optimisation history", plots.plot_optimization_history),
        ("Intermediate values (validations; pruned trials stop early)", plots.plot_intermediate_values),
        ("Parameter importances", plots.plot_param_importances),
        ("Parallel coordinates", plots.plot_parallel_coordinate),
        ("Slices", plots.plot_slice),
    ]
    drawn = []
    for title, plot in wanted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)
            try:
                axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials for this plot
                drawn.append((title, None, str(e).splitlines()[0] if str(e) else type(e).__name__))
                continue
        fig = np.ravel(axes)[0].figure
        if fig.get_size_inches()[0] < 8:
            fig.set_size_inches(8, 4.5)
        drawn.append((title, figure_png(fig), ""))
        plt.close(fig)
    return drawn


def write_study_html(study, rows: list[dict[str, Any]], folder: Path, description: str) -> Path:
    """``study.html``: the trials table and Optuna's plots, one self-contained file (no plotting server)."""
    sections = []
    for title, png, why in _plots(study):
        body = (
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
            if png
            else f"<p>{html.escape(why)}</p>"
        )
        sections.append(f"<h2>{html.escape(title)}</h2>{body}")
    columns = list(rows[0]) if rows else []
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if r[c] is None else str(r[c]))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(study.study_name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:13px}img{max-width:100%}</style></head><body>"
        f"<h1>Study {html.escape(study.study_name)}</h1><p>{html.escape(description)}</p>"
        f"<table><tr>{head}</tr>{cells}</table>{''.join(sections)}</body></html>"
    )
    path = folder / STUDY_HTML
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
