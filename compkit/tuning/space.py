"""Search spaces: a YAML mapping from recipe keys to the values a search may give them (``recipes/spaces/``).

::

    optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
    model.encoder: {choice: [resnet18, tu-regnety_004]}
    data.image_size: {int: [128, 384], step: 32}
    loss.dice: {uniform: [0.3, 1.0]}
    aug: {choice: {light: [{name: HorizontalFlip, p: 0.5}], heavy: [...]}}

Kinds: ``uniform`` and ``loguniform`` (floats; ``step`` optional for uniform), ``int`` (``step``, ``log``
optional), ``choice`` (a list, or a mapping of named options where the values are lists or mappings such as
augmentation pipelines: the names are what the study records and plots); a bare list is a choice. Every key and
every value a dimension can take (its bounds, each option) is checked against the recipe schema before a trial
runs, so a typo fails at once with a did-you-mean, never as a study of failed trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from compkit.training.recipe import RECIPE_SUFFIXES, Recipe, load_recipe, recipe_dirs
from compkit.util.errors import CompkitError
from compkit.util.fileio import read_yaml
from compkit.util.registry import did_you_mean, unknown_name

SPACES_DIR = "spaces"  # recipes/spaces/NAME.yaml: shipped beside the recipes, and looked up in ./recipes/spaces
KINDS = ("uniform", "loguniform", "int", "choice")
OPTION_KEYS = {"uniform": ("step",), "loguniform": (), "int": ("step", "log"), "choice": ()}
SCALARS = (str, int, float, bool, type(None))


def yaml_value(value: Any) -> str:
    """``value`` as the one-line YAML a ``--set key=value`` override reads back as the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def brief(value: Any, width: int = 40) -> str:
    """A value as a table cell: floats to 4 significant digits, anything else as one-line YAML, cut at ``width``."""
    text = f"{value:.4g}" if isinstance(value, float) else yaml_value(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class Dimension:
    """One recipe key of a search space and the values it may take."""

    key: str  # a recipe key: optim.lr, model.encoder, aug
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    options: tuple[tuple[Any, Any], ...] = ()  # choice: (label the study records, recipe value)

    def suggest(self, trial) -> Any:
        """The value an Optuna trial draws for this key (a choice's recipe value, not its label)."""
        if self.kind == "choice":
            label = trial.suggest_categorical(self.key, [label for label, _ in self.options])
            return self.value_of(label)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.kind == "loguniform")

    def value_of(self, param: Any) -> Any:
        """The recipe value of what the study recorded for this key."""
        if self.kind != "choice":
            return param
        return next(value for label, value in self.options if label == param)

    def candidates(self) -> list[Any]:
        """The values that bound what a trial may give the key: both ends, or every option."""
        if self.kind == "choice":
            return [value for _, value in self.options]
        ends = [self.low, self.high]
        return [int(v) for v in ends] if self.kind == "int" else ends

    def grid(self) -> list[Any] | None:
        """Every value, for the grid sampler; None for a continuous range without a step."""
        if self.kind == "choice":
            return [label for label, _ in self.options]
        if self.step is None and self.kind != "int":
            return None
        step = self.step or 1
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        values = [self.low + i * step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]


def _option_label(value: Any) -> Any:
    return value if isinstance(value, SCALARS) else yaml_value(value)


def _number(path: Path, key: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CompkitError(path, f"{key}: {what} must be a number, got {value!r}")
    return float(value)


def parse_dimension(path: Path, key: str, spec: Any) -> Dimension:
    """One entry of a space file, checked for its own form (the recipe check comes after)."""
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, dict):
        raise CompkitError(path, f"{key}: expected {{kind: values}} with a kind of {', '.join(KINDS)}, got {spec!r}")
    kinds = [k for k in spec if k in KINDS]
    if len(kinds) != 1:
        if not kinds:
            first = next((str(k) for k in spec if all(k not in keys for keys in OPTION_KEYS.values())), None)
            if first is not None:
                raise CompkitError(path, f"{key}: {unknown_name('kind', first, KINDS)}")
        raise CompkitError(
            path, f"{key}: give exactly one kind of {', '.join(KINDS)} (got {', '.join(spec) or 'none'})"
        )
    kind = kinds[0]
    allowed = OPTION_KEYS[kind]
    for extra in (str(k) for k in spec if k != kind and k not in allowed):
        raise CompkitError(
            path,
            f"{key}: {kind} takes no {extra!r}{did_you_mean(extra, allowed)} (options: {', '.join(allowed) or 'none'})",
        )
    values = spec[kind]
    if kind == "choice":
        items = list(values.items()) if isinstance(values, dict) else [(_option_label(v), v) for v in values or []]
        if not isinstance(values, dict | list) or not items:
            raise CompkitError(path, f"{key}: choice needs a non-empty list or mapping of options")
        labels = [label for label, _ in items]
        if len(set(map(str, labels))) != len(labels):
            raise CompkitError(path, f"{key}: the choice lists an option twice")
        return Dimension(key, kind, options=tuple(items))
    if not isinstance(values, list) or len(values) != 2:
        raise CompkitError(path, f"{key}: {kind} needs [low, high], got {values!r}")
    low, high = (_number(path, key, v, "a bound") for v in values)
    if not low < high:
        raise CompkitError(path, f"{key}: {kind} needs low < high, got [{values[0]}, {values[1]}]")
    step = spec.get("step")
    log = bool(spec.get("log", False))
    if kind == "loguniform" and low <= 0:
        raise CompkitError(path, f"{key}: loguniform needs a positive low bound, got {values[0]}")
    if kind == "int":
        if not all(float(v).is_integer() for v in values):
            raise CompkitError(path, f"{key}: int needs whole-number bounds, got {values!r}")
        if step is not None and (not float(step).is_integer() or step < 1):
            raise CompkitError(path, f"{key}: int's step must be a whole number of at least 1, got {step!r}")
        if log and step not in (None, 1):
            raise CompkitError(path, f"{key}: int takes step or log, not both")
    if step is not None:
        step = _number(path, key, step, "step")
        if step <= 0:
            raise CompkitError(path, f"{key}: step must be positive, got {step}")
    return Dimension(key, kind, low, high, step, log)


@dataclass(frozen=True)
class SearchSpace:
    """A search space read from ``path`` (see the module docstring)."""

    path: Path
    dimensions: tuple[Dimension, ...]
    definition: dict[str, Any]  # the file's mapping as read: what a study records to tell its space again

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    def suggest(self, trial) -> dict[str, Any]:
        """The recipe values an Optuna trial draws, by recipe key."""
        return {d.key: d.suggest(trial) for d in self.dimensions}

    def values_of(self, params: dict[str, Any]) -> dict[str, Any]:
        """The recipe values of a trial's recorded parameters (a choice's label -> its value)."""
        return {d.key: d.value_of(params[d.key]) for d in self.dimensions if d.key in params}

    def grid(self) -> dict[str, list[Any]]:
        """The grid sampler's search space; refused where a dimension is continuous."""
        grid = {}
        for d in self.dimensions:
            values = d.grid()
            if values is None:
                raise CompkitError(self.path, f"{d.key}: the grid sampler needs each value: give it a step or a choice")
            grid[d.key] = values
        return grid

    def check(self, recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> list[Recipe]:
        """Every recipe a dimension's candidate values make of ``recipe`` (validated: a bad key or value is one
        line naming the space file and the key); the first is the recipe with every dimension at its first value."""
        firsts = [f"{d.key}={yaml_value(d.candidates()[0])}" for d in self.dimensions]
        recipes = [_validated(self.path, recipe, [*overrides, *firsts])]
        for d in self.dimensions:
            for value in d.candidates()[1:]:
                assignment = f"{d.key}={yaml_value(value)}"
                others = [f for f in firsts if not f.startswith(f"{d.key}=")]
                recipes.append(_validated(self.path, recipe, [*overrides, *others, assignment]))
        return recipes


def overrides_for(values: dict[str, Any]) -> list[str]:
    """``--set`` assignments that give a recipe ``values`` (by recipe key)."""
    return [f"{key}={yaml_value(value)}" for key, value in values.items()]


def _validated(path: Path, recipe: str | Path, overrides: list[str]) -> Recipe:
    """The recipe with ``overrides``; a problem with one of the space's assignments names the space file."""
    try:
        return load_recipe(recipe, overrides)
    except CompkitError as e:
        if e.path == "--set":
            for assignment in overrides:
                if e.problem.startswith(f"{assignment}: "):
                    problem = e.problem[len(assignment) + 2 :]
                    raise CompkitError(path, f"{problem} (from {assignment})") from None
        raise


def space_dirs() -> list[Path]:
    """Where space names are looked up: ./recipes/spaces, then the shipped recipes/spaces."""
    return [folder / SPACES_DIR for _, folder in recipe_dirs() if (folder / SPACES_DIR).is_dir()]


def available_spaces() -> list[str]:
    return sorted({p.stem for d in space_dirs() for p in d.iterdir() if p.suffix in RECIPE_SUFFIXES})


def find_space(ref: str | Path) -> Path:
    """A space file from a path or a shipped or local name (``lr-schedule`` -> ``recipes/spaces/lr-schedule.yaml``)."""
    if Path(ref).is_file():
        return Path(ref)
    for folder in space_dirs():
        for suffix in RECIPE_SUFFIXES:
            if (folder / f"{ref}{suffix}").is_file():
                return folder / f"{ref}{suffix}"
    known = available_spaces()
    raise CompkitError(
        ref, f"no such search space{did_you_mean(str(ref), known)} (shipped: {', '.join(known) or 'none'})"
    )


def load_space(ref: str | Path) -> SearchSpace:
    """Read and check the form of a space file (:func:`SearchSpace.check` checks it against a recipe)."""
    path = find_space(ref)
    data = read_yaml(path)
    if not isinstance(data, dict) or not data:
        raise CompkitError(
            path,
            "a search space is a mapping of recipe keys to {kind: values}, e.g. optim.lr: {loguniform: [1.0e-4, 1.0e-2]}",
        )
    dimensions = tuple(parse_dimension(path, str(key), spec) for key, spec in data.items())
    return SearchSpace(path, dimensions, data)
