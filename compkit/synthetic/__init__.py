"""Synthetic datasets in real competitions' layouts, by kind: each generator writes ``data`` (and test labels
into ``gt``) and returns a one-line summary."""

# Every module that registers a kind, imported here so that SYNTH_KINDS always lists them all (in this order).
from compkit.synthetic import handbone, lesions  # noqa: F401
from compkit.synthetic.base import SYNTH_KINDS, SynthRequest

__all__ = ["SYNTH_KINDS", "SynthRequest"]
