"""One registry type for compkit's named, pluggable parts (model families, dataset formats, trackers, TTA views,
asset libraries): register under a name (a second registrant of a name is refused), look a name up (an unknown one
is one clear error with a close match suggested), list names in registration order with a short description.

Registration is explicit: the package that owns a registry imports every module that registers into it, so what
a registry lists never depends on what happened to be imported before."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from compkit.util.errors import CompkitError

T = TypeVar("T")
_OPTION = object()  # get()'s default `where`: the registry's own option


def did_you_mean(value: str, known: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` (or one that ``value`` begins), else empty."""
    known = [str(k) for k in known]
    close = difflib.get_close_matches(str(value), known, n=1, cutoff=0.6)
    close = close or [k for k in known if str(value) and k.startswith(str(value))][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, value: str, known: Iterable[Any]) -> str:
    """The one wording of "not one of these names", with a suggestion: ``unknown family 'smpp' (did you mean
    'smp'?) (known: smp, ultralytics)``."""
    known = [str(k) for k in known]
    return f"unknown {kind} {value!r}{did_you_mean(value, known)} (known: {', '.join(known)})"


def _registrant(obj: Any, depth: int) -> str:
    """What registered a name, for the duplicate error: a class or function by its qualified name, anything else
    by its type and the module that registered it."""
    if hasattr(obj, "__qualname__") and hasattr(obj, "__module__"):
        return f"{obj.__module__}.{obj.__qualname__}"
    caller = sys._getframe(depth + 1).f_globals.get("__name__", "?")
    return f"a {type(obj).__name__} registered in {caller}"


class Registry(Generic[T]):
    """Named objects of one kind, in registration order.

    ``kind`` names them in messages (``"family"``, ``"dataset format"``); ``option`` is the setting an unknown name
    is blamed on (``"model.family"``), unless :meth:`get` is told another."""

    def __init__(self, kind: str, option: str | None = None):
        self.kind = kind
        self.option = option
        self._entries: dict[str, tuple[T, str, str]] = {}  # name -> (object, description, registrant)

    def register(self, name: str, obj: Any = _OPTION, description: str = "", *, _depth: int = 1) -> Any:
        """Register ``obj`` under ``name`` and return it; without ``obj``, a decorator that does so. A name that
        another object holds already is refused, naming both (the same definition again, e.g. a module re-executed,
        replaces it)."""
        if obj is _OPTION:
            return lambda target: self.register(name, target, description, _depth=2)
        registrant = _registrant(obj, _depth)
        if name in self._entries:
            held, _, holder = self._entries[name]
            redefined = hasattr(obj, "__qualname__") and holder == registrant  # the same class, its module run again
            if held is not obj and not redefined:
                raise ValueError(f"{self.kind} {name!r} is registered twice: by {holder} and by {registrant}")
        self._entries[name] = (obj, description, registrant)
        return obj

    def unregister(self, name: str) -> None:
        """Forget a name (tests that register a part of their own put the registry back with it)."""
        self._entries.pop(name, None)

    def get(self, name: str, where: Any = _OPTION) -> T:
        """The object registered as ``name``; an unknown name raises ``CompkitError(where, ...)`` (``where``: the
        setting or file the name came from, by default the registry's ``option``)."""
        if name not in self._entries:
            raise CompkitError(self.option if where is _OPTION else where, unknown_name(self.kind, name, self._entries))
        return self._entries[name][0]

    __getitem__ = get

    def names(self, where: Callable[[T], bool] | None = None) -> list[str]:
        """Registered names in registration order; with ``where``, only those whose object it accepts."""
        return [name for name, (obj, _, _) in self._entries.items() if where is None or where(obj)]

    def items(self) -> list[tuple[str, T]]:
        return [(name, obj) for name, (obj, _, _) in self._entries.items()]

    def values(self) -> list[T]:
        return [obj for obj, _, _ in self._entries.values()]

    def describe(self) -> list[tuple[str, str]]:
        """(name, short description) of every entry, in registration order."""
        return [(name, description) for name, (_, description, _) in self._entries.items()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def doc_summary(doc: str | None) -> str:
    """A docstring's first paragraph on one line: the short description of a class registered without one."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())
