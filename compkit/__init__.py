"""compkit: a toolkit for Kaggle-style medical image segmentation competitions.

The Python API mirrors the commands: ``compkit.synth``, ``split``, ``train``, ``predict``, ``ensemble``,
``submit``, ``score``, ``eda``, ``pseudo``, ``inspect``, ``augment`` take the same arguments as the subcommands
(as keyword arguments) and return what they wrote; ``compkit.load_run(path)`` gives a trained run whose
``.predict(image)`` returns per-class probabilities at the image's size. Everything is imported on first use,
so ``import compkit`` stays quick.
"""
import importlib as _importlib
import os as _os

# albumentations checks PyPI for a newer version on import: never touch the network from compkit.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# ultralytics reads these when it is imported: no probes or downloads, and no unpickling or eval of user files.
_os.environ["YOLO_OFFLINE"] = "1"
_os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"

__version__ = "0.1.0"

_API = {
    "synth": "compkit.synth",
    "split": "compkit.split",
    "train": "compkit.train",
    "predict": "compkit.predict",
    "ensemble": "compkit.ensemble",
    "submit": "compkit.submit",
    "score": "compkit.score",
    "eda": "compkit.eda",
    "pseudo": "compkit.pseudo",
    "inspect": "compkit.inspect_errors",
    "augment": "compkit.augment_offline",
    "demo": "compkit.demo",
}
__all__ = [*_API, "load_run", "__version__"]


def __getattr__(name: str):
    if name in _API:
        return _importlib.import_module(_API[name])  # a callable stage module: compkit.train(...) trains
    if name == "load_run":
        return _importlib.import_module("compkit.run_model").load_run
    raise AttributeError(f"module 'compkit' has no attribute {name!r}")
