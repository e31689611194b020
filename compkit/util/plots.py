"""Pictures for the HTML reports (``compkit eda``, ``compkit inspect``): figures and arrays as base64 PNG."""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def subplots(*args, figsize: tuple[float, float] | None = None, **kwargs):
    """``pyplot.subplots`` without pyplot: a figure on its own Agg canvas, so drawing chooses no backend for the host
    process (a notebook keeps its own) and leaves nothing in pyplot's figure list to close."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def figure_png(fig) -> str:
    """A matplotlib figure as base64 PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def array_png(rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 RGB image as base64 PNG."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return base64.b64encode(buf.tobytes()).decode()
