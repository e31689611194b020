"""The ``compkit`` command line: parses arguments and delegates to one entry function per subcommand."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal, get_args

import click
import typer
from typer.core import TyperGroup

from compkit.util.errors import CompkitError

# `compkit --help` lists the commands in the order a competition uses them; any other after these.
COMMAND_ORDER = (
    "demo",
    "synth",
    "check-data",
    "eda",
    "split",
    "plan",
    "train",
    "tune",
    "runs",
    "predict",
    "ensemble",
    "submit",
    "score",
    "inspect",
    "pseudo",
    "augment",
    "recipes",
    "weights",
    "export",
    "bundle",
    "encode-labels",
)
METAVARS = {int: "N", float: "X", str: "TEXT"}  # option value types -> the names --help gives them


def _metavar(param) -> str:
    """How --help names an option's value: N, X, TEXT, PATH, a|b|c (typer's own: <int>, <list[str]>, <bool>)."""
    if getattr(param, "is_flag", False):
        return ""
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(c) for c in desc.choices)
    if desc.is_path:
        return "PATH"
    annotation = get_args(desc.annotation)[0] if desc.is_list else desc.annotation
    return METAVARS.get(annotation, getattr(annotation, "__name__", str(annotation)).upper())


def _readable_metavars(command: click.Command, ctx: click.Context) -> click.Command:
    """Option values named as people write them in --help rather than as Python types; a metavar the option
    declares is kept; a repeatable option says so."""
    for param in command.params:  # typer's own parameter classes (it may bundle its own copy of click)
        if param.param_type_name == "argument" and hasattr(param, "type_descriptor"):
            shown = _metavar(param)
            if param.metavar is None:  # typer's usage line would say {paths}
                param.metavar = param.name.upper()
            param.display_type_rich = lambda ctx, shown=shown: shown  # the argument's name is its metavar
        elif param.param_type_name == "option" and param.metavar is None:
            if param.is_flag or not hasattr(param, "type_descriptor"):  # --help is a flag without a descriptor
                param.metavar = ""
            else:
                param.metavar = _metavar(param) + (" (repeatable)" if param.multiple else "")
    help_option = command.get_help_option(ctx)  # made on first use, then kept: --help is a flag, no value
    if help_option is not None:
        help_option.metavar = ""
    return command


class _CompkitGroup(TyperGroup):
    """Turns CompkitError (bad input) and command-line mistakes (an unknown option, a value of the wrong type) into
    one line on stderr and exit code 2, with no traceback; an interrupt (Ctrl-C, SIGTERM) into one line saying what
    was kept and exit code 130 or 143. Lists its commands in :data:`COMMAND_ORDER`, options with readable metavars."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda name: rank.get(name, len(rank)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:  # type: ignore[override]
        command = super().get_command(ctx, cmd_name)
        return _readable_metavars(command, ctx) if command is not None else None

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        _readable_metavars(self, ctx)
        return super().get_params(ctx)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CompkitError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            from compkit.util.locks import interrupt_line

            line, code = interrupt_line(e)
            if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for every rank
                print(line, file=sys.stderr, flush=True)
            raise typer.Exit(code) from None
        except Exception as e:
            # typer may bundle its own copy of click, so usage errors are recognised by their class names.
            names = {cls.__name__ for cls in type(e).__mro__}
            if "UsageError" not in names or "NoArgsIsHelpError" in names:
                raise
            # "compkit recipes show --help": the command's whole path, under whatever name the program was started
            command = " ".join(["compkit", *e.ctx.command_path.split()[1:], "--help"]) if e.ctx else "compkit --help"
            message = " ".join(e.format_message().split()).replace(
                "Value error, ", ""
            )  # pydantic's prefix on a bad choice
            print(f"error: {message} (see {command})", file=sys.stderr, flush=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_CompkitGroup,
    name="compkit",
    help="A toolkit for Kaggle-style medical image segmentation competitions.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _choices(values):
    """A closed set of values as a type, so --help lists them and typer checks them (taken from the registry that
    defines them where there is one)."""
    return Literal[tuple(values)]


def _tta_choices():
    from compkit.inference.views import TTA_VIEWS

    return _choices(TTA_VIEWS)


def _search_choices(registry: str):
    import compkit.tuning.study as study

    return _choices(getattr(study, registry))


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"compkit {version('compkit')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """A toolkit for Kaggle-style medical image segmentation competitions.

    First day: synth/check-data -> eda -> split -> train -> predict -> ensemble -> submit -> inspect, then iterate."""


DataArg = Annotated[
    Path, typer.Argument(help="Dataset folder (any layout `compkit check-data` reads), or its dataset.yaml.")
]
# The one way to name the dataset is --data; a positional DATA (the older form) still works, hidden from --help.
DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="Dataset folder (any layout `compkit check-data` reads), or its dataset.yaml."),
]
PositionalData = Annotated[Path | None, typer.Argument(hidden=True, metavar="DATA", help="Older form of --data.")]
# The one word for "replace an output that exists" is --exist-ok; --force, its older name, still works, hidden.
ForceAlias = Annotated[bool, typer.Option("--force", hidden=True, help="Older name of --exist-ok.")]


def _dataset(positional: Path | None, option: Path | None) -> Path:
    if positional is not None and option is not None and positional != option:
        raise CompkitError("--data", f"the dataset is given twice ({positional} and {option})")
    found = option if option is not None else positional
    if found is None:
        raise CompkitError("--data", "missing: pass --data DATA (a dataset folder or its dataset.yaml)")
    return found


# `--set a=1 b=2` and ultralytics' `epochs=3 imgsz=256`: KEY=VALUE words after the options are recipe overrides.
KEY_VALUE_ARGUMENTS = {"allow_extra_args": True}
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a recipe value: section.key=value (YAML); more pairs may follow (--set a=1 b=2).",
    ),
]


def _overrides(ctx: typer.Context, set_: list[str] | None, shortcuts: dict[str, object] | None = None) -> list[str]:
    """The recipe overrides of a command: --set's, then the KEY=VALUE words after the options, then the shortcut
    options given (``--epochs 3`` -> ``train.epochs=3``), each as ``section.key=value``."""
    from compkit.training.recipe import expand_shortcut, shortcut_override

    for word in ctx.args:
        if "=" not in word:
            raise CompkitError(word, "unexpected argument: recipe values are KEY=VALUE (e.g. train.epochs=3)")
    given = [*(set_ or []), *ctx.args]
    chosen = [shortcut_override(key, value) for key, value in (shortcuts or {}).items() if value is not None]
    return [expand_shortcut(o) for o in given] + chosen


@app.command()
def synth(
    data: Annotated[Path, typer.Argument(help="Folder to create; test labels go to DATA_gt beside it.")],
    patients: Annotated[int, typer.Option(help="Training patients (two hands each).")] = 40,
    test_patients: Annotated[int, typer.Option(help="Test patients (labels in DATA_gt).")] = 10,
    size: Annotated[int, typer.Option(help="Image side in pixels (the real data is 2048).")] = 512,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same dataset.")] = 0,
    exist_ok: Annotated[bool, typer.Option(help="Replace DATA and DATA_gt if they exist.")] = False,
    kind: Annotated[
        _choices(["handbone", "fundus", "isic"]),
        typer.Option(help="handbone (X-rays, 29 bones), fundus (FGADR layout) or isic (skin lesions)."),
    ] = "handbone",
    force: ForceAlias = False,
) -> None:
    """Write a synthetic dataset in a real competition's exact layout (hand bones by default)."""
    from compkit.stages.synth import synth as run

    run(
        data,
        patients=patients,
        test_patients=test_patients,
        size=size,
        seed=seed,
        exist_ok=exist_ok or force,
        kind=kind,
    )


@app.command("check-data")
def check_data(
    write: Annotated[
        bool, typer.Option(help="Write the proposed (or detected) description to DATA/dataset.yaml.")
    ] = False,
    exist_ok: Annotated[bool, typer.Option(help="With --write: replace an existing dataset.yaml.")] = False,
    limit: Annotated[
        int, typer.Option(help="Read the masks of at most this many images per split for the statistics.")
    ] = 500,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the description to this file instead of DATA/dataset.yaml (read-only data; its root: points back at DATA; then --data FILE)."
        ),
    ] = None,
    data_arg: PositionalData = None,
    data: DataOption = None,
    force: ForceAlias = False,
) -> None:
    """How compkit reads a dataset: format, splits, labels per class, unmatched files, mask values, sizes; proposes a dataset.yaml."""
    from compkit.stages.check_data import check_data as run

    data = _dataset(data_arg, data)
    run(data, write=write, exist_ok=exist_ok or force, limit=limit, out=out)


export_app = typer.Typer(
    cls=_CompkitGroup,
    name="export",
    help="A dataset in nnU-Net's layout, a trained run as an inference-only copy to upload, or its models as ONNX.",
    no_args_is_help=True,
)
app.add_typer(export_app)


@export_app.command("nnunet")
def export_nnunet(
    data: DataArg,
    out: Annotated[Path, typer.Argument(help="Folder to write Dataset<ID>_<Name>/ into (e.g. $nnUNet_raw).")],
    id_: Annotated[
        int, typer.Option("--id", help="nnU-Net dataset id (per-class mode: the first of consecutive ids).")
    ] = 501,
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the data folder's).")] = None,
    mode: Annotated[
        _choices(["auto", "labels", "regions", "per-class"]),
        typer.Option(help="auto, labels, regions (overlapping classes) or per-class (one binary dataset per class)."),
    ] = "auto",
) -> None:
    """Export a dataset in nnU-Net v2's raw layout (imagesTr, labelsTr, imagesTs, dataset.json, splits_final.json)."""
    from compkit.stages.export import export as run

    run("nnunet", data, out, dataset_id=id_, name=name, mode=mode)


@export_app.command("run")
def export_run(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run or fold folder (runs/NAME).")],
    out: Annotated[Path, typer.Argument(help="Run folder to write (OUT/fold<k>/), e.g. upload/NAME.")],
    half: Annotated[
        bool, typer.Option(help="Store the weights as float16 (half the size; loaded back as float32).")
    ] = False,
    exist_ok: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Inference-only copy of a run: best.pt without optimizer state, the records and oof/ (predict, ensemble, load_run read it)."""
    from compkit.stages.export import export_run as run

    run(run_dir, out, half=half, exist_ok=exist_ok)


@export_app.command("onnx")
def export_onnx(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run or fold folder (runs/NAME).")],
    fold: Annotated[str, typer.Option(help="Fold number, several (0,2) or all.")] = "all",
    out: Annotated[
        Path | None,
        typer.Option(help="Write OUT/<run>/fold<k>/model.onnx with the fold's records (default: into the run)."),
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 17,
) -> None:
    """Each fold's network as ONNX (dynamic batch and size, the run's settings in its metadata), verified against torch."""
    from compkit.stages.export import export_onnx as run

    run(run_dir, fold=fold, out=out, opset=opset)


@app.command()
def split(
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Shuffling seed: the same seed gives the same folds.")] = 21,
    stratify: Annotated[str | None, typer.Option(help="Meta column to stratify by (e.g. sex, age).")] = None,
    exist_ok: Annotated[bool, typer.Option(help="Rebuild splits.json even if it exists.")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the splits here instead of DATA/splits.json (read-only data; then --set data.splits=FILE)."
        ),
    ] = None,
    data_arg: PositionalData = None,
    data: DataOption = None,
    force: ForceAlias = False,
) -> None:
    """Patient-grouped (optionally stratified) K-fold split -> DATA/splits.json."""
    from compkit.stages.split import split as run

    data = _dataset(data_arg, data)
    run(data, folds=folds, seed=seed, stratify=stratify, exist_ok=exist_ok or force, out=out)


@app.command()
def score(
    submission: Annotated[Path, typer.Argument(help="Submission CSV (image_name,class,rle).")],
    data: Annotated[Path, typer.Option(help="Dataset folder whose images the submission covers.")],
    gt: Annotated[Path | None, typer.Option(help="Ground-truth folder with outputs_json/ (default: DATA_gt).")] = None,
    split: Annotated[_choices(["test", "train"]), typer.Option(help="Which split the submission covers.")] = "test",
) -> None:
    """Compute the leaderboard metric (mean Dice) of a submission against local ground truth."""
    from compkit.stages.score import score as run

    run(submission, data, gt=gt, split=split)


@app.command("encode-labels")
def encode_labels(
    out: Annotated[Path, typer.Option(help="Submission CSV to write.")] = Path("submissions/labels.csv"),
    split: Annotated[_choices(["test", "train"]), typer.Option(help="Which split's labels.")] = "test",
    gt: Annotated[Path | None, typer.Option(help="Ground-truth folder for the test split (default: DATA_gt).")] = None,
    data_arg: PositionalData = None,
    data: DataOption = None,
) -> None:
    """Write ground-truth labels as a submission CSV (a perfect submission, to check the submission path)."""
    from compkit.stages.encode_labels import encode_labels as run

    data = _dataset(data_arg, data)
    run(data, out, split=split, gt=gt)


@app.command(context_settings=KEY_VALUE_ARGUMENTS)
def train(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Option(help="Recipe name (recipes/NAME.yaml) or path.")],
    data: Annotated[Path | None, typer.Option(help="Dataset folder (default: the recipe's data.root).")] = None,
    fold: Annotated[
        str, typer.Option(help="'all' (every fold: what the ensemble needs), one fold (0) or several (0,2).")
    ] = "all",
    set_: SetOption = None,
    name: Annotated[
        str | None, typer.Option(help="Run name (default: the recipe's name) -> runs/NAME/fold<k>.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from last.pt of each fold.")] = False,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda or cuda:N (default: the recipe's train.device).")
    ] = None,
    devices: Annotated[int, typer.Option(help="GPUs (or CPU processes) for DDP; re-runs itself under torchrun.")] = 1,
    out: Annotated[Path, typer.Option(help="Folder that holds the run folders (-> OUT/NAME/fold<k>).")] = Path("runs"),
    runs_dir: Annotated[Path | None, typer.Option(hidden=True, help="Old name of --out.")] = None,
    exist_ok: Annotated[
        bool, typer.Option(help="Train into --name even if its folds were trained with another recipe or split.")
    ] = False,
    weights_cache: Annotated[
        Path | None,
        typer.Option(
            help="Pretrained-weights folder (a `compkit weights export`; default: $COMPKIT_WEIGHTS, else the standard caches)."
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            help="Time budget (10m, 6h): with --recipe plan, plan for it; otherwise each fold gets its share as train.time_budget."
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Shortcut for --set train.epochs=N.")] = None,
    imgsz: Annotated[int | None, typer.Option(help="Shortcut for --set data.image_size=N (pixels).")] = None,
    batch: Annotated[int | None, typer.Option(help="Shortcut for --set train.batch_size=N.")] = None,
) -> None:
    """Train a recipe on every fold (or --fold K) -> runs/NAME/fold<k>/ (--recipe plan: plan first, see `compkit plan`).

    Recipe values also as KEY=VALUE words after the options (`compkit train --recipe tiny epochs=3 optim.lr=1e-3`)."""
    from compkit.stages.train import train as run

    shortcuts = {"epochs": epochs, "imgsz": imgsz, "batch": batch, "device": device}
    overrides = _overrides(ctx, set_, shortcuts)
    run(
        recipe,
        data=data,
        fold=fold,
        overrides=overrides,
        name=name,
        resume=resume,
        devices=devices,
        out=runs_dir or out,
        exist_ok=exist_ok,
        weights_cache=weights_cache,
        budget=budget,
    )


@app.command(context_settings=KEY_VALUE_ARGUMENTS)
def tune(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Option(help="Base recipe name (recipes/NAME.yaml) or path; the search changes it.")],
    space: Annotated[
        str, typer.Option(help="Search space: a YAML file of recipe keys, or a name in recipes/spaces/ (`lr-loss`).")
    ],
    data: Annotated[Path | None, typer.Option(help="Dataset folder (default: the recipe's data.root).")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials in the whole study, counted over every worker.")] = None,
    budget: Annotated[
        str | None, typer.Option(help="Wall time of this command (30m, 6h): no trial starts, nor runs, past it.")
    ] = None,
    folds: Annotated[str, typer.Option(help="Folds each trial trains: 0, several (0,1) or all.")] = "0",
    study: Annotated[
        str | None, typer.Option(help="Study name (default: RECIPE-SPACE) -> OUT/STUDY/; the same name resumes it.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Where the study lives (default: OUT/STUDY/study.journal): postgresql://..., mysql://..., PATH.journal."
        ),
    ] = None,
    sampler: Annotated[_search_choices("SAMPLERS"), typer.Option(help="Optuna sampler.")] = "tpe",
    pruner: Annotated[
        _search_choices("PRUNERS"), typer.Option(help="Stops hopeless trials after a validation.")
    ] = "median",
    workers: Annotated[
        int, typer.Option(help="Worker processes started here (one per GPU where there are several).")
    ] = 1,
    objective: Annotated[
        _choices(("val", "cv")),
        typer.Option(
            help="val: mean best validation dice of the folds; cv: out-of-fold dice after thresholds (--folds all)."
        ),
    ] = "val",
    set_: SetOption = None,
    out: Annotated[Path, typer.Option(help="Folder that holds the study folder (-> OUT/STUDY/trial-<n>/).")] = Path(
        "runs"
    ),
    seed: Annotated[int, typer.Option(help="Sampler seed (each worker and machine adds its own offset).")] = 42,
    weights_cache: Annotated[
        Path | None,
        typer.Option(help="Pretrained-weights folder (default: $COMPKIT_WEIGHTS, else the standard caches)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Shortcut for --set train.epochs=N (every trial).")] = None,
    imgsz: Annotated[int | None, typer.Option(help="Shortcut for --set data.image_size=N (every trial).")] = None,
    worker: Annotated[str | None, typer.Option(hidden=True, help="INDEX/COUNT of a worker --workers started.")] = None,
    deadline: Annotated[
        float | None, typer.Option(hidden=True, help="The study's deadline (seconds since epoch).")
    ] = None,
) -> None:
    """Search hyperparameters on Optuna: each trial a run in runs/STUDY/trial-<n>/ -> best.yaml, trials.csv, study.html.

    Many machines: run the same command on each with one --storage (a database, or a journal file on a shared disk)."""
    from compkit.stages.tune import tune as run

    run(
        recipe,
        space,
        data=data,
        trials=trials,
        budget=budget,
        folds=folds,
        study=study,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        workers=workers,
        out=out,
        objective=objective,
        overrides=_overrides(ctx, set_, {"epochs": epochs, "imgsz": imgsz}),
        seed=seed,
        weights_cache=weights_cache,
        worker=worker,
        deadline=deadline,
    )


@app.command("runs")
def runs_command(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders to search (default: ./runs and ./ensembles).", metavar="[DIR]..."),
    ] = None,
    sort: Annotated[_choices(("cv", "val", "lb", "date", "name")), typer.Option(help="Order of the rows.")] = "cv",
    csv: Annotated[Path | None, typer.Option(help="Also write the rows to this CSV file.")] = None,
    lb: Annotated[
        list[str] | None,
        typer.Option(help="Record a public-leaderboard score first: NAME=SCORE (a run or ensemble folder or name)."),
    ] = None,
) -> None:
    """One table of every run, search trial and ensemble: model, size, epochs, val and OOF dice, LB, wall time, changes."""
    from compkit.stages.runs import runs as run

    run(dirs, sort=sort, csv=csv, lb=lb or [])


@app.command()
def plan(
    data_arg: PositionalData = None,
    data: DataOption = None,
    budget: Annotated[
        str,
        typer.Option(help="Time for the whole pipeline (train every fold, predict with TTA, ensemble): 10m, 6h, 90s."),
    ] = "10m",
    device: Annotated[str, typer.Option(help="Device to plan for: auto, cpu, cuda.")] = "auto",
    memory: Annotated[str | None, typer.Option(help="Memory to plan for (24GB; default: the device's).")] = None,
    folds: Annotated[
        int | None, typer.Option(help="Folds that will be trained (default: the splits file's, else 2).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Recipe file to write (default: plan.yaml, or plan-2.yaml when taken).")
    ] = None,
    exist_ok: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    base: Annotated[str, typer.Option(help="Recipe the plan extends.")] = "tiny",
) -> None:
    """A recipe fitted to the data (fingerprint), this machine (a measured probe) and a time budget, with its reasons."""
    from compkit.stages.plan import plan as run

    data = _dataset(data_arg, data)
    run(data, budget=budget, device=device, memory=memory, folds=folds, out=out, exist_ok=exist_ok, base=base)


@app.command()
def predict(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (runs/NAME) or fold folders (runs/NAME/fold0).")],
    data: Annotated[Path | None, typer.Option(help="Dataset folder (default: the recipe's data.root).")] = None,
    split: Annotated[
        _choices(["test", "val"]), typer.Option(help="test, or val (the fold's validation images -> oof/).")
    ] = "test",
    tta: Annotated[
        _tta_choices() | None, typer.Option(help="Test-time augmentation views (default: the recipe's infer.tta).")
    ] = None,
    batch: Annotated[int | None, typer.Option(help="Images (or windows) per forward pass.")] = None,
    window: Annotated[int | None, typer.Option(help="Sliding-window size in pixels (default: the recipe's).")] = None,
    overlap: Annotated[float | None, typer.Option(help="Sliding-window overlap, 0..1.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the stores to OUT/<run>/fold<k>/ (for read-only run folders) instead of into the runs."
        ),
    ] = None,
    exist_ok: Annotated[bool, typer.Option(help="Replace stores (or the --source output folder) that exist.")] = False,
    source: Annotated[
        Path | None,
        typer.Option(
            help="Predict these images instead (a folder, a glob or one image) -> predictions/NAME: masks, overlays."
        ),
    ] = None,
    save: Annotated[
        _choices(["masks", "probs", "index"]),
        typer.Option(help="With --source: 0/255 masks, probabilities (p x 255) per class, or one index PNG."),
    ] = "masks",
    threshold: Annotated[
        str, typer.Option(help="With --source: 'auto' (an ensemble's tuned thresholds, else 0.5) or a number.")
    ] = "auto",
    tuning_from: Annotated[
        Path | None, typer.Option(help="With --source: an ensemble whose thresholds and postprocessing to apply.")
    ] = None,
    postprocess: Annotated[
        _choices(["cv", "none"]), typer.Option(help="With --source: the kept postprocessing (cv) or none.")
    ] = "cv",
    engine: Annotated[
        str,
        typer.Option(help="torch, or onnx: onnxruntime on the models `compkit export onnx` wrote (CUDA where it can)."),
    ] = "torch",
) -> None:
    """Predict the test (or validation) images of every fold -> a probability store per fold; or any images (--source)."""
    from compkit.stages.predict import predict as run
    from compkit.stages.predict import predict_source

    if source is not None:
        if len(runs) != 1:
            raise CompkitError("--source", "predicts with one run or ensemble folder at a time")
        predict_source(
            runs[0],
            source,
            out=out,
            save=save,
            threshold=threshold,
            tuning_from=tuning_from,
            postprocess=postprocess,
            tta=tta,
            window=window,
            device=device,
            exist_ok=exist_ok,
            engine=engine,
        )
        return
    run(
        runs,
        data=data,
        split=split,
        tta=tta,
        batch=batch,
        window=window,
        overlap=overlap,
        device=device,
        out=out,
        exist_ok=exist_ok,
        engine=engine,
    )


@app.command()
def ensemble(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Run, fold or ensemble folders, nnU-Net --save_probabilities folders, or submission CSVs (e.g. runs/*)."
        ),
    ],
    method: Annotated[
        _choices(["soft", "hard"]), typer.Option(help="soft (mean probability) or hard (votes).")
    ] = "soft",
    weights: Annotated[str | None, typer.Option(help="Comma-separated weight per member, e.g. 2,1,1.")] = None,
    votes: Annotated[
        int | None, typer.Option(help="Hard voting: votes needed to keep a pixel (default: majority).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Ensemble name -> ensembles/NAME (default: the members' names).")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset folder (default: the members' recipe data.root).")] = None,
    out: Annotated[Path, typer.Option(help="Folder that holds the ensembles (-> OUT/NAME).")] = Path("ensembles"),
    out_dir: Annotated[Path | None, typer.Option(hidden=True, help="Old name of --out.")] = None,
    resolution: Annotated[
        int | None,
        typer.Option(help="Side in pixels where members meet (default: the largest member's store resolution)."),
    ] = None,
    exist_ok: Annotated[bool, typer.Option(help="Replace the ensemble --name if it exists.")] = False,
    mixed_folds: Annotated[
        bool, typer.Option(help="Accept runs whose folds were trained with different recipes or splits.")
    ] = False,
    tune: Annotated[
        bool,
        typer.Option(
            help="Tune thresholds and postprocessing on the members' out-of-fold stores (--no-tune: 0.5, none)."
        ),
    ] = True,
    postprocess: Annotated[
        str,
        typer.Option(
            help="cv: per-class postprocessing where it raises the cross-validated OOF dice; none: thresholds only."
        ),
    ] = "cv",
) -> None:
    """Soft or hard vote of fold/run outputs (or CSVs) -> ensembles/NAME, thresholds kept where cross-validation confirms them."""
    from compkit.stages.ensemble import ensemble as run

    parsed = None
    if weights:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            raise typer.BadParameter(
                f"{weights!r} is not a comma-separated list of numbers", param_hint="--weights"
            ) from None
    run(
        [str(p) for p in paths],
        method=method,
        weights=parsed,
        votes=votes,
        name=name,
        data=data,
        out=out_dir or out,
        resolution=resolution,
        exist_ok=exist_ok,
        mixed_folds=mixed_folds,
        tune=tune,
        postprocess=postprocess,
    )


@app.command()
def submit(
    source: Annotated[
        Path | None, typer.Argument(help="Ensemble or run folder (default: the newest ensemble).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="CSV to write (default: submissions/NAME.csv).")] = None,
    threshold: Annotated[
        str, typer.Option(help="auto (tuned when available), tuned, or a number such as 0.5.")
    ] = "auto",
    sample: Annotated[
        Path | None,
        typer.Option(
            help="Sample submission to follow: its header, rows, order and id form (default: the dataset's sample_submission.csv)."
        ),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset folder (default: the source's).")] = None,
    ensembles_dir: Annotated[Path, typer.Option(help="Where to look for the newest ensemble.")] = Path("ensembles"),
    tuning_from: Annotated[
        Path | None,
        typer.Option(
            help="Ensemble folder whose thresholds.json and postprocess.json to apply (e.g. the local one, uploaded)."
        ),
    ] = None,
    postprocess: Annotated[
        str, typer.Option(help="cv: the ensemble's postprocessing (kept where cross-validation confirmed it); none.")
    ] = "cv",
    lb: Annotated[
        float | None,
        typer.Option(
            help="The public-leaderboard score this submission got: kept in the source's lb.json (compkit runs)."
        ),
    ] = None,
) -> None:
    """Threshold, upsample and run-length encode test probabilities -> a validated submission CSV."""
    from compkit.stages.submit import submit as run

    run(
        source,
        out=out,
        threshold=threshold,
        sample=sample,
        data=data,
        ensembles_dir=ensembles_dir,
        tuning_from=tuning_from,
        postprocess=postprocess,
        lb=lb,
    )


@app.command()
def pseudo(
    source: Annotated[Path, typer.Argument(help="Ensemble or run folder whose test probabilities to use.")],
    out: Annotated[Path, typer.Option(help="Folder for the pseudo-labelled dataset (then set data.pseudo to it).")],
    data: Annotated[Path | None, typer.Option(help="Dataset folder (default: the source's).")] = None,
    min_confidence: Annotated[
        float, typer.Option(help="Keep images whose least confident class reaches this (0..1).")
    ] = 0.8,
    max_images: Annotated[int | None, typer.Option(help="Keep at most this many (the most confident).")] = None,
    soft: Annotated[
        bool, typer.Option(help="Mark uncertain pixels (0.1 < p < 0.9) to be ignored by the loss.")
    ] = False,
    exist_ok: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    force: ForceAlias = False,
) -> None:
    """Pseudo-labels from confident test predictions, written as a dataset in the same layout."""
    from compkit.stages.pseudo import pseudo as run

    exist_ok = exist_ok or force
    run(source, out, data=data, min_confidence=min_confidence, max_images=max_images, soft=soft, exist_ok=exist_ok)


@app.command()
def augment(
    out: Annotated[Path, typer.Option(help="Folder for the augmented dataset (originals + new samples).")],
    mosaic: Annotated[int, typer.Option(help="RICAP-style mosaics of four images to add.")] = 0,
    rotate: Annotated[list[float] | None, typer.Option(help="Rotation in degrees; repeat for several.")] = None,
    flip: Annotated[bool, typer.Option(help="Mirror the rotated copies (or add mirrored copies).")] = False,
    seed: Annotated[int, typer.Option(help="Random seed for the mosaics.")] = 0,
    exist_ok: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    data_arg: PositionalData = None,
    data: DataOption = None,
    force: ForceAlias = False,
) -> None:
    """Offline augmentation (mosaics, rotations, flips) with exactly transformed labels -> a new dataset."""
    from compkit.stages.augment import augment as run

    data = _dataset(data_arg, data)
    run(data, out, mosaics=mosaic, rotations=rotate or [], flip=flip, seed=seed, exist_ok=exist_ok or force)


@app.command()
def eda(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report folder: fingerprint.json and eda.html (default reports/eda, or reports/eda-2, ... when taken)."
        ),
    ] = None,
    gallery: Annotated[int, typer.Option(help="Images with their labels drawn in the gallery.")] = 8,
    exist_ok: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
    data_arg: PositionalData = None,
    data: DataOption = None,
) -> None:
    """Dataset report: class areas, overlaps, intensities, meta data, outliers and plots (HTML)."""
    from compkit.stages.eda import eda as run

    data = _dataset(data_arg, data)
    run(data, out, gallery=gallery, exist_ok=exist_ok)


@app.command()
def inspect(
    source: Annotated[Path, typer.Argument(help="Run, fold or ensemble folder.")],
    split: Annotated[
        _choices(["val", "test"]), typer.Option(help="val (out-of-fold predictions) or test (needs ground truth).")
    ] = "val",
    data: Annotated[Path | None, typer.Option(help="Dataset folder (default: the source's).")] = None,
    gt: Annotated[Path | None, typer.Option(help="Ground truth for --split test (default: DATA_gt).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report folder: inspect.json and inspect.html (default reports/inspect, or -2, ... when taken)."
        ),
    ] = None,
    exist_ok: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Error analysis: dice per class, worst images with missed/extra pixels drawn, confused classes (HTML)."""
    from compkit.stages.inspect import inspect as run

    run(source, split=split, data=data, gt=gt, out=out, exist_ok=exist_ok)


@app.command()
def bundle(
    out: Annotated[Path, typer.Argument(help="Folder to write: wheels/, weights/, runs/, INSTALL.md.")],
    python: Annotated[
        str | None, typer.Option(help="The target's Python, e.g. 3.11 (default: the profile's, else this one).")
    ] = None,
    platform: Annotated[
        list[str] | None,
        typer.Option(
            help="The target's platform tags, e.g. manylinux_2_28_x86_64 (repeat; default: the profile's, else this machine's)."
        ),
    ] = None,
    for_: Annotated[
        _choices(["none", "torch", "kaggle"]),
        typer.Option("--for", help="What the target already has, left out: kaggle (its GPU image), torch, none."),
    ] = "none",
    weights: Annotated[
        list[str] | None, typer.Option(help="Recipes or encoders whose cached weights to include (repeat).")
    ] = None,
    runs: Annotated[list[Path] | None, typer.Option(help="Runs to include as inference-only copies (repeat).")] = None,
    wheel: Annotated[
        Path | None, typer.Option(help="compkit's wheel (default: built from the checkout compkit runs from).")
    ] = None,
    exist_ok: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Offline install bundle: compkit's wheel and the dependencies the target lacks (pip resolves), weights, runs, INSTALL.md."""
    from compkit.stages.bundle import bundle as run

    run(
        out, python=python, platforms=platform, profile=for_, weights=weights, runs=runs, wheel=wheel, exist_ok=exist_ok
    )


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Folder for the demo's data, runs, ensembles and submission.")] = Path(
        "demo"
    ),
    patients: Annotated[int, typer.Option(help="Synthetic training patients.")] = 40,
    budget: Annotated[
        str, typer.Option(help="Time budget of the whole demo (10m, 1h): the planned recipe fills it.")
    ] = "10m",
    recipe: Annotated[
        str, typer.Option(help="Recipe to train: plan (planned for --budget) or any recipe name or path.")
    ] = "plan",
) -> None:
    """The whole pipeline on synthetic data: synth, split, plan, train, predict, ensemble, submit, score."""
    from compkit.stages.demo import demo as run

    run(workdir, patients=patients, budget=budget, recipe=recipe)


recipes_app = typer.Typer(
    cls=_CompkitGroup,
    name="recipes",
    help="The recipes compkit knows: list them (one line each), show one resolved, copy one to start your own.",
    invoke_without_command=True,
)
app.add_typer(recipes_app)


@recipes_app.callback()
def recipes_main(ctx: typer.Context) -> None:
    """List the recipes (name, model, size, batch, description) when no subcommand is given."""
    if ctx.invoked_subcommand is None:
        from compkit.stages.recipes import list_recipes

        list_recipes()


@recipes_app.command("list")
def recipes_list() -> None:
    """Every recipe with one line each."""
    from compkit.stages.recipes import list_recipes

    list_recipes()


@recipes_app.command("show", context_settings=KEY_VALUE_ARGUMENTS)
def recipes_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Recipe name or path.")],
    set_: SetOption = None,
) -> None:
    """Print the resolved recipe: extends merged, --set applied, every default filled in."""
    from compkit.stages.recipes import show

    show(name, _overrides(ctx, set_))


@recipes_app.command("copy")
def recipes_copy(
    name: Annotated[str, typer.Argument(help="Recipe name or path.")],
    file: Annotated[Path, typer.Argument(help="YAML file to write (then compkit train --recipe FILE).")],
    exist_ok: Annotated[bool, typer.Option(help="Replace FILE if it exists.")] = False,
) -> None:
    """Copy a recipe to FILE to start your own."""
    from compkit.stages.recipes import copy

    copy(name, file, exist_ok=exist_ok)


weights_app = typer.Typer(
    cls=_CompkitGroup,
    name="weights",
    help="Pretrained weights: pull them into the cache, list it, export it for an offline machine.",
    no_args_is_help=True,
)
app.add_typer(weights_app)
CacheOption = Annotated[
    Path | None,
    typer.Option(
        "--cache",
        help="Weights folder (default: $COMPKIT_WEIGHTS, else the Hugging Face hub cache and ~/.cache/compkit/weights).",
    ),
]
ReferencesHelp = (
    "Recipes (hrnet, path/to/recipe.yaml) or encoders and release files (resnet34, resnet50.ssl, tu-resnet18, "
    "tu-convnext_tiny.fb_in22k, yolov8x-seg)."
)


@weights_app.command("pull")
def weights_pull(
    references: Annotated[list[str], typer.Argument(help=ReferencesHelp)],
    cache: CacheOption = None,
) -> None:
    """Download the pretrained weights recipes or encoders need into the cache."""
    from compkit.stages.weights import pull as run

    run(references, cache=cache)


@weights_app.command("list")
def weights_list(cache: CacheOption = None) -> None:
    """Show the cached weights (name, tag, size, path, recipes served) and what recipes still lack."""
    from compkit.stages.weights import list_weights as run

    run(cache=cache)


@weights_app.command("export")
def weights_export(
    out: Annotated[
        Path, typer.Argument(help="Folder to write (attach it to the offline machine, e.g. as a Kaggle dataset).")
    ],
    references: Annotated[
        list[str] | None, typer.Argument(help=ReferencesHelp + " Default: every cached entry.")
    ] = None,
    cache: CacheOption = None,
) -> None:
    """Copy cached weights into a folder that an offline machine uses with COMPKIT_WEIGHTS=DIR (or --cache DIR)."""
    from compkit.stages.weights import export as run

    run(out, references or [], cache=cache)


def main() -> None:
    from compkit.util.locks import install_signal_handlers

    install_signal_handlers()  # here, not at import: the Python API leaves a notebook's signals alone
    app(prog_name="compkit")


if __name__ == "__main__":
    main()
