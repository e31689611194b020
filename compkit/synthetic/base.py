"""What every synthetic-data generator is asked, and the registry of generators by kind (``compkit synth --kind``).

A generator is called as ``generator(request, **variant_options)``: the :class:`SynthRequest` says where to write and
how much, the keyword options (each generator's own, all with defaults that give the standard data) how the data
differs from the standard. It returns a one-line summary of what it wrote."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from compkit.util.registry import Registry


@dataclass(frozen=True)
class SynthRequest:
    """One dataset to write: ``data`` (images and training labels) and ``gt`` (test labels), ``patients`` training
    and ``test_patients`` test patients (or lesions), images of ``size`` px, random ``seed``, and the ``progress``
    display that the generator adds its task to."""

    data: Path
    gt: Path
    patients: int
    test_patients: int
    size: int
    seed: int
    progress: Progress

    @property
    def total(self) -> int:
        """Patients of both splits together."""
        return self.patients + self.test_patients


Generator = Callable[..., str]  # (request, **variant options) -> a one-line summary

SYNTH_KINDS: Registry[Generator] = Registry("synthetic dataset kind", option="--kind")
