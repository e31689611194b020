"""Experiment trackers (``train.loggers``): TensorBoard, MLflow and Weights & Biases, beside the CSV that is always written.

A registry: each tracker is a class with a ``name``, the package it needs and the ``compkit[extra]`` that installs it;
:class:`Tracking` fans every call out to the trackers a recipe names. Only :mod:`compkit.training.results` drives it, so both
families log the same scalars (every column of a ``results.csv`` row), the resolved recipe as parameters and the
fold's images (``results.png``, validation overlays)."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any, ClassVar

from compkit.util.errors import CompkitError
from compkit.util.registry import Registry, doc_summary


class Tracker:
    """One tracking backend for one fold folder."""

    name: ClassVar[str]
    package: ClassVar[str]  # the module it imports
    extra: ClassVar[str]  # pip install 'compkit[extra]'

    def __init__(self, folder: Path, params: dict[str, Any], settings: dict[str, Any]):
        self.folder = folder

    def scalars(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def image(self, name: str, path: Path, step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


TRACKERS: Registry[type[Tracker]] = Registry("logger", option="train.loggers")
MLFLOW_STORE = "mlruns"  # the default local MLflow store, beside the run folders


def register(cls: type[Tracker]) -> type[Tracker]:
    """Class decorator: register a tracker under its ``name`` (described by its docstring's first line)."""
    return TRACKERS.register(cls.name, cls, doc_summary(cls.__doc__))


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}`` (lists and None as text)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def _image_array(path: Path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


@register
class TensorBoardTracker(Tracker):
    """Event files in the fold folder (``tensorboard --logdir runs``)."""

    name, package, extra = "tensorboard", "tensorboard", "tensorboard"

    def __init__(self, folder, params, settings):
        super().__init__(folder, params, settings)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))
        self.writer.add_text("recipe", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)

    def scalars(self, step, values):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def image(self, name, path, step):
        self.writer.add_image(name, _image_array(path), step, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()


@register
class MlflowTracker(Tracker):
    """A local file store under the runs folder (``runs/mlruns``) unless ``train.tracking_uri`` names another;
    experiment = the run's name, MLflow run = the fold."""

    name, package, extra = "mlflow", "mlflow", "mlflow"

    def __init__(self, folder, params, settings):
        super().__init__(folder, params, settings)
        import mlflow

        uri = settings.get("tracking_uri") or local_mlflow_uri(folder)
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store (no database to set up, readable offline) behind this switch.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = folder.parent.name
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(
            experiment_id, run_name=folder.name, tags={"compkit.folder": str(folder.absolute())}
        ).info.run_id
        for key, value in params.items():
            self.client.log_param(self.run_id, key, str(value)[:500])

    def scalars(self, step, values):
        for key, value in values.items():
            self.client.log_metric(self.run_id, key.replace("/", "."), value, step=step)

    def image(self, name, path, step):
        self.client.log_artifact(self.run_id, str(path), artifact_path="images")

    def close(self):
        self.client.set_terminated(self.run_id)


def local_mlflow_uri(folder: Path) -> str:
    """The default MLflow store of a fold folder: ``<runs>/mlruns`` (runs/NAME/foldK -> runs/mlruns)."""
    return (folder.absolute().parent.parent / MLFLOW_STORE).as_uri()


@register
class WandbTracker(Tracker):
    """Weights & Biases, offline (files under the fold folder, ``wandb sync`` later) unless ``WANDB_MODE`` says otherwise."""

    name, package, extra = "wandb", "wandb", "wandb"

    def __init__(self, folder, params, settings):
        super().__init__(folder, params, settings)
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=settings.get("wandb_project") or "compkit",
            name=f"{folder.parent.name}/{folder.name}",
            dir=str(folder),
            config=params,
            mode=os.environ.get("WANDB_MODE", "offline"),
            reinit=True,
        )

    def scalars(self, step, values):
        self.run.log(values, step=step)

    def image(self, name, path, step):
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def close(self):
        self.run.finish()
        # Offline, the run's records are written by wandb's service process; shutting it down waits until they are
        # on disk (the next fold starts a fresh one).
        self.wandb.teardown()


def check_loggers(names: list[str]) -> None:
    """Unknown names and missing packages fail before a fold writes anything, in one line naming the extra."""
    for name in names:
        cls = TRACKERS.get(name)
        if importlib.util.find_spec(cls.package) is None:
            raise CompkitError(
                "train.loggers", f"{name} needs the {cls.package} package: pip install 'compkit[{cls.extra}]'"
            )


class Tracking:
    """Every tracker a recipe names, for one fold; each call goes to all of them."""

    def __init__(self, folder: Path, names: list[str], recipe: dict[str, Any], settings: dict[str, Any] | None = None):
        check_loggers(names)
        params = flatten(recipe)
        self.trackers = [TRACKERS[n](folder, params, settings or {}) for n in names]

    def epoch(self, row: dict[str, Any]) -> None:
        """A results row's numeric columns (``val_dice_femur`` -> ``val/dice_femur``), at step = epoch."""
        if not self.trackers:
            return
        values = {}
        for key, value in row.items():
            if key in ("epoch",):
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(number):
                continue
            section, _, rest = key.partition("_")
            values[f"{section}/{rest}" if section in ("train", "val") and rest else key] = number
        for tracker in self.trackers:
            tracker.scalars(int(row["epoch"]), values)

    def image(self, name: str, path: Path, step: int) -> None:
        for tracker in self.trackers:
            tracker.image(name, path, step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
