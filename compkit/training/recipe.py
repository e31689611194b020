"""Recipes: YAML training configurations, validated by one pydantic schema.

A recipe has the sections ``data``, ``model``, ``loss``, ``optim``, ``sched``, ``aug``, ``train`` and ``infer``;
it may ``extends:`` another recipe (deep merge, the child wins, lists are replaced). ``--set section.key=value``
overrides any value (parsed as YAML). The fully resolved recipe is saved into every run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from compkit.inference.views import TTA_VIEWS
from compkit.training.tracking import TRACKERS
from compkit.util.errors import CompkitError, warn
from compkit.util.fileio import read_yaml
from compkit.util.imageio import INTENSITY_RULES
from compkit.util.registry import did_you_mean, unknown_name

RECIPE_SUFFIXES = (".yaml", ".yml")
LOSS_TERMS = ("bce", "dice", "jaccard", "focal", "tversky", "lovasz")
OPTIMIZERS = ("adam", "adamw", "lion", "rmsprop", "sgd")
SCHEDULERS = ("plateau", "cosine", "step", "onecycle", "none")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Clahe(Section):
    clip_limit: float = Field(2.0, gt=0)
    tile_grid: int = Field(8, ge=1)


class DataConfig(Section):
    root: str | None = None  # dataset folder; --data overrides
    format: str = "auto"
    image_size: int = Field(1024, ge=32)
    classes: list[str] | None = None  # default: the dataset format's class list
    clahe: Clahe | None = None  # contrast-limited histogram equalisation before resizing
    crop_border: bool = False  # crop the black border (a fundus photograph's eye disk) before resizing
    # Normalisation, fractions of 255; null: the encoder's pretrained config (resolved when training starts and written
    # into the fold's recipe.yaml, so prediction uses exactly the same values).
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    cache_dir: str | None = None  # default: <root>/.compkit-cache
    pseudo: str | None = None  # a `compkit pseudo` dataset added to the training side of every fold
    splits: str | None = (
        None  # the splits file (default: <root>/splits.json; `compkit split --out FILE` for read-only data)
    )
    intensity: str | None = (
        None  # 16-bit and DICOM images to 8 bits: auto, full, percentile, minmax, window (default: the dataset's)
    )

    @field_validator("intensity")
    @classmethod
    def _intensity(cls, v: str | None) -> str | None:
        return None if v is None else _choice("intensity rule", v, INTENSITY_RULES)


class AuxConfig(Section):
    """A classification head on the encoder (smp's aux_params), trained alongside the masks."""

    classes: int = Field(ge=1)
    weight: float = Field(0.2, ge=0)
    target: str = "presence"  # presence (per-class present/absent, from the masks) or csv:COLUMN (an image-level label)
    dropout: float = Field(0.2, ge=0, lt=1)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if v != "presence" and not (v.startswith("csv:") and len(v) > 4):
            raise ValueError(f"must be 'presence' or 'csv:COLUMN', got {v!r}")
        return v


class ModelConfig(Section):
    family: str | None = None  # smp or ultralytics (compkit.families); null: inferred from arch for older recipes
    arch: str = "UnetPlusPlus"
    encoder: str = "resnet34"
    # null (random), a published tag (imagenet, ssl, swsl, advprop, a timm tag such as in22k; true: the default one;
    # coco for YOLO-seg), a release file name (yolov8x-seg.pt) or a local file; see compkit.pretrained.weights.
    encoder_weights: bool | str | None = None
    in_channels: int = Field(3, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)  # extra keyword arguments of the smp architecture
    aux: AuxConfig | None = None  # multi-task: a classification head on the encoder

    @field_validator("encoder_weights")
    @classmethod
    def _no_weights(cls, v: bool | str | None) -> bool | str | None:
        return None if v is False or v in ("", "none", "null") else v


class OptimConfig(Section):
    name: str = "adamw"
    lr: float = Field(1e-3, ge=0)  # 0 freezes the weights (e.g. to check what a model starts from)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0)  # sgd / rmsprop

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _choice("optimizer", v, OPTIMIZERS)


class SchedConfig(Section):
    name: str = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    patience: int = Field(3, ge=0)  # plateau
    factor: float = Field(0.5, gt=0, lt=1)  # plateau, step
    step_epochs: int = Field(10, ge=1)  # step
    pct_start: float = Field(0.1, gt=0, lt=1)  # onecycle

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _choice("scheduler", v, SCHEDULERS)


class TrainConfig(Section):
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(8, ge=1)
    accumulate: int = Field(1, ge=1)
    clip_grad: float | None = Field(1.0, gt=0)
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    # torch.compile the training forward and backward: true (inductor, worth it on a GPU), or a backend's name
    # (aot_eager, eager: to check a model compiles without generating code); validation and prediction stay eager.
    compile: bool | str = False
    seed: int = 42
    early_stop: int | None = Field(10, ge=1)  # epochs without improvement of val dice
    # Seconds each fold may train (null: no limit): training stops before an epoch that would not fit (or inside
    # one that overruns), keeping the best checkpoint. `compkit plan` sets it from --budget.
    time_budget: float | None = Field(None, gt=0)
    val_every: int = Field(1, ge=1)
    # Each training image is drawn this many times per epoch, each with its own augmentation (its own random crop,
    # when the model trains on patches): a few images still make epochs of enough steps.
    repeats: int = Field(1, ge=1)
    # Weight averaging: validation, best.pt and prediction use an exponential moving average of the weights, its
    # decay warming up with the step count (timm's ModelEmaV3) up to this value (null: off). Off by default: it lost on
    # 3 of benchmarks/quality.py's 4 variants in short CPU schedules (docs/planning.md).
    ema: float | None = Field(None, gt=0, lt=1)
    workers: int = Field(2, ge=0)
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    loggers: list[str] = Field(
        default_factory=list
    )  # experiment trackers beside results.csv: tensorboard, mlflow, wandb
    tracking_uri: str | None = None  # MLflow tracking URI (default: a local file store, <runs>/mlruns)
    wandb_project: str | None = None  # W&B project (default: compkit; offline unless WANDB_MODE says otherwise)

    @field_validator("loggers")
    @classmethod
    def _loggers(cls, v: list[str]) -> list[str]:
        return [_choice("logger", name, tuple(TRACKERS)) for name in v]


class InferConfig(Section):
    tta: str = "hflip"  # any view set of compkit.inference.tta.TTA_VIEWS (the CLI's --tta choices)
    threshold: float = Field(0.5, gt=0, lt=1)
    window: int | None = Field(None, ge=32)  # sliding-window size in pixels at the store resolution
    overlap: float = Field(0.5, ge=0, lt=1)
    batch_size: int = Field(4, ge=1)

    @field_validator("tta")
    @classmethod
    def _tta(cls, v: str) -> str:
        return _choice("tta", v, tuple(TTA_VIEWS))


class Recipe(Section):
    name: str | None = None
    extends: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: dict[str, float] = Field(default_factory=lambda: {"bce": 0.5, "dice": 0.5})
    optim: OptimConfig = Field(default_factory=OptimConfig)
    sched: SchedConfig = Field(default_factory=SchedConfig)
    aug: list[dict[str, Any]] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)

    @field_validator("loss")
    @classmethod
    def _loss_terms(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("needs at least one term, e.g. {bce: 0.5, dice: 0.5}")
        for term, weight in v.items():
            _choice("loss term", term, LOSS_TERMS)
            if weight < 0:
                raise ValueError(f"weight of {term} must not be negative")
        return v

    @field_validator("aug")
    @classmethod
    def _aug_items(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in v:
            if not isinstance(item.get("name"), str):
                raise ValueError("each transform needs a 'name', e.g. {name: HorizontalFlip, p: 0.5}")
        return v

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _choice(what: str, value: str, known: tuple[str, ...]) -> str:
    if value not in known:
        raise ValueError(unknown_name(what, value, known))
    return value


def defaults(section: str) -> Any:
    """The schema's default value of a recipe section (``loss``, ``sched``, ...), to tell what a recipe changed."""
    field = Recipe.model_fields[section]
    value = field.default_factory() if field.default_factory is not None else field.default
    return value.model_dump() if isinstance(value, BaseModel) else value


LOCAL_RECIPES = "recipes"  # a working folder's own recipes: ./recipes/NAME.yaml, looked up before the shipped ones
SHIPPED, LOCAL = "shipped", f"./{LOCAL_RECIPES}"  # where a recipe comes from, as `compkit recipes` says it


def shipped_recipes_dir() -> Path | None:
    """The recipes shipped with compkit: ``compkit/recipes/`` in an installed wheel (the build maps the
    repository's top-level ``recipes/`` there), else the source checkout's ``recipes/`` (an editable install)."""
    from importlib.resources import files

    installed = Path(str(files("compkit").joinpath("recipes")))
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[2] / "recipes"
    return checkout if checkout.is_dir() else None


def recipe_dirs() -> list[tuple[str, Path]]:
    """Where recipe names are looked up, first match first: (origin, folder) for ./recipes, then the shipped ones."""
    found: list[tuple[str, Path]] = []
    for origin, folder in ((LOCAL, Path.cwd() / LOCAL_RECIPES), (SHIPPED, shipped_recipes_dir())):
        if folder is not None and folder.is_dir() and folder.resolve() not in [f.resolve() for _, f in found]:
            found.append((origin, folder))
    return found


def _named(folder: Path, name: str) -> Path | None:
    return next((folder / f"{name}{s}" for s in RECIPE_SUFFIXES if (folder / f"{name}{s}").is_file()), None)


def _recipes_named(name: str) -> list[tuple[str, Path]]:
    """Every (origin, file) of the recipe ``name``, in lookup order: the first is the one read."""
    return [(origin, path) for origin, folder in recipe_dirs() if (path := _named(folder, name)) is not None]


def _shadowed(hits: list[tuple[str, Path]]) -> Path | None:
    return next((path for origin, path in hits[1:] if origin == SHIPPED), None)


def available_recipes() -> list[str]:
    return sorted({p.stem for _, d in recipe_dirs() for p in d.iterdir() if p.suffix in RECIPE_SUFFIXES})


def recipe_origin(name: str) -> tuple[str, Path | None]:
    """Where the recipe ``name`` is read from (``./recipes`` or ``shipped``), and the shipped file it shadows."""
    hits = _recipes_named(name)
    if not hits:
        raise CompkitError(name, f"no such recipe (available: {', '.join(available_recipes())})")
    return hits[0][0], _shadowed(hits)


_announced: set[Path] = set()  # local recipes already said to shadow a shipped one, once per process


def _announce_shadowing(path: Path, shipped: Path) -> None:
    if path.resolve() not in _announced:
        _announced.add(path.resolve())
        warn(path, f"shadows the shipped recipe of the same name ({shipped})")


def find_recipe(ref: str | Path, relative_to: Path | None = None) -> Path:
    """A recipe file from a path or a name (``hrnet`` -> ``./recipes/hrnet.yaml``, else the shipped
    ``hrnet.yaml``); a local recipe that shadows a shipped one is announced once."""
    ref = str(ref)
    candidates = [Path(ref)]
    if relative_to is not None:
        candidates.insert(0, relative_to / ref)
        if Path(ref).suffix not in RECIPE_SUFFIXES:
            candidates.insert(1, relative_to / f"{ref}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if Path(ref).suffix not in RECIPE_SUFFIXES:
        hits = _recipes_named(ref)
        if hits:
            shipped = _shadowed(hits)
            if shipped is not None:
                _announce_shadowing(hits[0][1], shipped)
            return hits[0][1]
    raise CompkitError(
        ref, f"no such recipe{did_you_mean(ref, available_recipes())} (available: {', '.join(available_recipes())})"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CompkitError(path, "a recipe must be a mapping of sections (data, model, loss, ...)")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "loss":
            merged[key] = deep_merge(merged[key], value)
        else:  # lists, scalars and the loss mapping (its terms are chosen as a whole) are replaced
            merged[key] = value
    return merged


def _resolve(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        chain = " -> ".join(p.name for p in (*seen, path.resolve()))
        raise CompkitError(path, f"recipe extends itself ({chain})")
    data = _read_yaml(path)
    parent = data.get("extends")
    if parent:
        base_path = find_recipe(parent, relative_to=path.parent)
        if base_path.resolve() == path.resolve():  # ./recipes/tiny.yaml with `extends: tiny`: the shipped tiny
            base_path = _shadowed(_recipes_named(str(parent))) or base_path
        base = _resolve(base_path, (*seen, path.resolve()))
        base.pop("name", None)
        data = deep_merge(base, data)
    return data


# ultralytics' names for the values people change most, accepted as recipe keys (``epochs=3``, ``--epochs 3``).
SHORTCUTS = {
    "epochs": "train.epochs",
    "imgsz": "data.image_size",
    "batch": "train.batch_size",
    "device": "train.device",
}


def shortcut_override(shortcut: str, value: Any) -> str:
    """``section.key=value`` for a :data:`SHORTCUTS` name."""
    return f"{SHORTCUTS[shortcut]}={value}"


def expand_shortcut(assignment: str) -> str:
    """``epochs=3`` -> ``train.epochs=3`` (a :data:`SHORTCUTS` name); any other assignment unchanged."""
    key, sep, raw = assignment.partition("=")
    return shortcut_override(key.strip(), raw) if sep and key.strip() in SHORTCUTS else assignment


def apply_override(data: dict[str, Any], assignment: str, source: str = "--set") -> None:
    """Apply ``section.key=value`` (value parsed as YAML; a :data:`SHORTCUTS` name for its key) to a raw recipe
    mapping."""
    key, sep, raw = expand_shortcut(assignment).partition("=")
    if not sep or not key.strip():
        raise CompkitError(source, f"{assignment!r} is not section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (``X | None``, ``dict[str, X]``, ``str | list[str] | X``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in getattr(annotation, "__args__", ()) for m in _models_in(a)]


def describe_validation_error(error: ValidationError, root: type[BaseModel]) -> str:
    """The first problem of a validation error as ``location: problem``; an unknown key gets a did-you-mean
    suggestion from the keys its section knows (recipes, dataset descriptions)."""
    first = error.errors()[0]
    model: type[BaseModel] | None = root
    parts = []
    for part in first["loc"]:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            found = _models_in(model.model_fields[part].annotation)
            model = found[0] if found else None
            parts.append(part)
        elif (
            isinstance(part, int) or model is None or first["type"] != "extra_forbidden" or part != first["loc"][-1]
        ) and not (
            isinstance(part, str) and (part[:1].isupper() or "[" in part or part in ("str", "int", "bool", "float"))
        ):
            parts.append(str(part))  # a dict key or list index (union member tags are left out)
    location = ".".join(parts)
    if first["type"] == "extra_forbidden":
        key = first["loc"][-1]
        location = ".".join([*parts, str(key)])
        known = list(model.model_fields) if model is not None else []
        return f"{location}: unknown key{did_you_mean(str(key), known)}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{location}: {message}"


def load_recipe(ref: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Find, resolve (``extends``), override (``--set``) and validate a recipe."""
    path = find_recipe(ref)
    data = _resolve(path)
    for assignment in overrides:
        apply_override(data, assignment)
    data.setdefault("name", path.stem)
    data.pop("extends", None)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        problem = describe_validation_error(e, Recipe)
        location = problem.split(":", 1)[0]
        for assignment in map(expand_shortcut, overrides):
            key = assignment.partition("=")[0].strip()
            if location == key or location.startswith(key + ".") or key.startswith(location + "."):
                raise CompkitError("--set", f"{assignment}: {problem}") from None  # the override is wrong, not the file
        raise CompkitError(path, f"bad recipe: {problem}") from None
