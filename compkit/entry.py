"""Stage modules that can be called: ``compkit.train(...)`` is the ``train`` function of ``compkit/train.py``.

Python sets ``compkit.train`` to the submodule as soon as it is imported, so the module itself is made callable
(its class becomes :class:`StageModule`); its attributes stay as they are.
"""
from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


class StageModule(types.ModuleType):
    __entry__: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__entry__(*args, **kwargs)


def callable_stage(module_name: str, entry: Callable[..., Any]) -> None:
    """Make ``module_name`` callable as ``entry`` (call at the end of a stage module)."""
    module = sys.modules[module_name]
    module.__class__ = StageModule
    module.__entry__ = entry
