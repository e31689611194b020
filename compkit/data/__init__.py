"""Reading datasets: formats, samples, rasterisation and meta data."""

from compkit.data import coco as _coco  # noqa: F401  (each module registers its format)
from compkit.data import described as _described  # noqa: F401  (dataset.yaml; after the fixed layouts)
from compkit.data import handbone as _handbone  # noqa: F401
from compkit.data import layouts as _layouts  # noqa: F401  (auto-detected rlecsv and pairs: the most generic, last)
from compkit.data import masks as _masks  # noqa: F401
from compkit.data.classes import HANDBONE_CLASSES
from compkit.data.formats import DATASET_FORMATS, SegmentationDataset, open_dataset, register_format
from compkit.data.meta import patient_key, read_meta
from compkit.data.raster import rasterize
from compkit.data.sample import Polygon, Sample

__all__ = [
    "DATASET_FORMATS",
    "HANDBONE_CLASSES",
    "Polygon",
    "Sample",
    "SegmentationDataset",
    "open_dataset",
    "patient_key",
    "rasterize",
    "read_meta",
    "register_format",
]
