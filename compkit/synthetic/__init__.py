"""Synthetic datasets in real competitions' layouts, by kind: each generator writes ``data`` (and test labels
into ``gt``) and returns a one-line summary."""
from compkit.synthetic.handbone import write_handbone
from compkit.synthetic.lesions import write_fundus, write_isic

SYNTH_KINDS = {"handbone": write_handbone, "fundus": write_fundus, "isic": write_isic}

__all__ = ["SYNTH_KINDS"]
