"""compkit: a toolkit for Kaggle-style medical image segmentation competitions."""
import os as _os

# albumentations checks PyPI for a newer version on import: never touch the network from compkit.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
