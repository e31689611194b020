"""Class lists. The class list belongs to the dataset; the 29 hand-bone classes are the default."""

from __future__ import annotations

HANDBONE_CLASSES: tuple[str, ...] = (
    *(f"finger-{i}" for i in range(1, 20)),
    "Trapezium",
    "Trapezoid",
    "Capitate",
    "Hamate",
    "Scaphoid",
    "Lunate",
    "Triquetrum",
    "Pisiform",
    "Radius",
    "Ulna",
)
