"""compkit: a toolkit for Kaggle-style medical image segmentation competitions."""
import os as _os

# albumentations checks PyPI for a newer version on import: never touch the network from compkit.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# ultralytics reads these when it is imported: no probes or downloads, and no unpickling or eval of user files.
_os.environ["YOLO_OFFLINE"] = "1"
_os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"

__version__ = "0.1.0"
