"""compkit: a toolkit for Kaggle-style medical image segmentation competitions.

The Python API mirrors the commands: ``compkit.synth``, ``split``, ``train``, ``tune``, ``runs``, ``predict``, ``ensemble``,
``submit``, ``score``, ``eda``, ``pseudo``, ``inspect``, ``augment`` take the same arguments as the subcommands
(as keyword arguments) and return what they wrote; ``compkit.load_run(path)`` gives a trained run whose
``.predict(image)`` returns per-class probabilities at the image's size. Everything is imported on first use,
so ``import compkit`` stays quick.
"""

import importlib as _importlib

# Importing compkit changes nothing in the host process: the settings albumentations and ultralytics read are set
# where compkit imports them (compkit.training.augmentation, compkit.pretrained.ultralytics_env).

__version__ = "0.1.0"

# name -> (module, function): ``compkit.train(...)`` is ``compkit.stages.train.train(...)``.
_API = {
    "synth": ("compkit.stages.synth", "synth"),
    "split": ("compkit.stages.split", "split"),
    "plan": ("compkit.stages.plan", "plan"),
    "train": ("compkit.stages.train", "train"),
    "tune": ("compkit.stages.tune", "tune"),
    "runs": ("compkit.stages.runs", "runs"),
    "predict": ("compkit.stages.predict", "predict"),
    "predict_source": ("compkit.stages.predict", "predict_source"),
    "ensemble": ("compkit.stages.ensemble", "ensemble"),
    "submit": ("compkit.stages.submit", "submit"),
    "score": ("compkit.stages.score", "score"),
    "eda": ("compkit.stages.eda", "eda"),
    "pseudo": ("compkit.stages.pseudo", "pseudo"),
    "inspect": ("compkit.stages.inspect", "inspect"),
    "augment": ("compkit.stages.augment", "augment"),
    "check_data": ("compkit.stages.check_data", "check_data"),
    "encode_labels": ("compkit.stages.encode_labels", "encode_labels"),
    "demo": ("compkit.stages.demo", "demo"),
    "export_run": ("compkit.stages.export", "export_run"),
    "export_onnx": ("compkit.stages.export", "export_onnx"),
    "load_run": ("compkit.inference.loaded_run", "load_run"),
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        module, function = _API[name]
        return getattr(_importlib.import_module(module), function)
    raise AttributeError(f"module 'compkit' has no attribute {name!r}")
