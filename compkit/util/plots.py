"""Pictures for the HTML reports (``compkit eda``, ``compkit inspect``): figures and arrays as base64 PNG."""

from __future__ import annotations

import base64
import io

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def figure_png(fig) -> str:
    """A matplotlib figure as base64 PNG (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def array_png(rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 RGB image as base64 PNG."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return base64.b64encode(buf.tobytes()).decode()
