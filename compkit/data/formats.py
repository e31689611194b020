"""Dataset formats: a registry of readers that turn a folder into :class:`Sample` lists.

Every format exposes the same surface (``classes``, ``samples``, ``read_image``, ``read_mask``), so split,
train, predict and submit never branch on the format. A new format is a module that registers its class with
:func:`register_format`, imported by ``compkit/data/__init__.py`` (in detection order), so that every format is
known whatever was imported before.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from compkit.data.sample import Sample
from compkit.util.errors import CompkitError, warn
from compkit.util.fileio import image_size, read_image
from compkit.util.imageio import IMAGE_SUFFIXES, SWAPPING_ORIENTATIONS, apply_orientation, exif_orientation
from compkit.util.registry import Registry, doc_summary

DATASET_FORMATS: Registry[type[SegmentationDataset]] = Registry("dataset format")  # in detection order
IGNORE_DIR = "ignore"
DESCRIPTION_FILE = "dataset.yaml"
DESCRIBED_FORMAT = "described"  # the format that reads a dataset.yaml (compkit.data.described)


@dataclass(frozen=True)
class SubmissionConventions:
    """What a dataset says about its submission CSV beyond the RLE order; :mod:`compkit.submission` builds the
    rows from it. ``sample``: a sample submission whose header, rows, row order and image-name form the submission
    follows. ``image_name``: ``name`` (file name), ``stem``, ``path`` (the image id), ``path_stem``; None: the
    format's :meth:`SegmentationDataset.submission_name` (or, with a sample, whatever form its ids have)."""

    header: tuple[str, ...] | None = None
    empty: str = ""
    wide: bool = False
    sample: Path | None = None
    image_name: str | None = None


def ignore_file_name(image_id: str) -> str:
    return image_id.replace("/", "__") + ".npy"


def register_format(cls: type[SegmentationDataset]) -> type[SegmentationDataset]:
    """Class decorator: register a format under its ``format_name`` (described by its docstring's first line)."""
    return DATASET_FORMATS.register(cls.format_name, cls, doc_summary(cls.__doc__))


class SegmentationDataset(ABC):
    """A split (``train`` or ``test``) of a dataset on disk."""

    format_name: ClassVar[str]
    #: Flattening order of the submission's run-length encoding ("C": row-major, "F": column-major).
    rle_order: ClassVar[str] = "C"
    #: The writer of this format's own layout; formats without one are written in ``written_as``'s layout.
    writer_class: ClassVar[type | None] = None  # a compkit.data.writer.DatasetWriter
    written_as: ClassVar[str] = "masks"
    #: What groups images into patients (folds keep a patient's images together), in words for `compkit check-data`.
    patients_from: ClassVar[str] = "each image's own name (one image per patient)"

    def __init__(self, root: Path, split: str, classes: Sequence[str], samples: Sequence[Sample]):
        self.root = root
        self.split = split
        self.classes = tuple(classes)
        self.samples = list(samples)
        #: How images of more than 8 bits become 8-bit (compkit.util.imageio.INTENSITY_RULES); a recipe may override it.
        self.intensity = "auto"
        #: What the reader decided and why (e.g. an RLE order read from the labels), for `compkit check-data`.
        self.notes: list[str] = []
        #: The ``dataset.yaml`` this split was opened through, if any (set by the described format).
        self.description: Path | None = None
        self._orientations: dict[str, int] = {}  # image id -> the EXIF orientation applied (see orientation())
        self._tags: dict[str, int] = {}  # image id -> its EXIF orientation tag (see exif_tag())

    @classmethod
    @abstractmethod
    def detect(cls, root: Path) -> bool:
        """True when ``root`` looks like this format."""

    @classmethod
    @abstractmethod
    def open(
        cls, root: Path, split: str, labels: str | Path | None = None, classes: Sequence[str] | None = None
    ) -> SegmentationDataset:
        """Read the split's samples (and labels, where there are any)."""

    def has_split(self, split: str) -> bool:
        """Whether the dataset on disk has this split (e.g. a test set to predict)."""
        return False

    @property
    def has_labels(self) -> bool:
        return any(s.label_path is not None for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, image_id: str) -> Sample:
        for s in self.samples:
            if s.image_id == image_id:
                return s
        raise KeyError(image_id)

    def read_image(self, sample: Sample, intensity: str | None = None) -> np.ndarray:
        """(H, W, 3) uint8, BGR as OpenCV reads it (16-bit and DICOM images windowed by ``intensity``), as stored
        or turned by :meth:`orientation`."""
        image = read_image(sample.image_path, intensity=intensity or self.intensity)
        return apply_orientation(image, self.orientation(sample))

    def image_shape(self, sample: Sample) -> tuple[int, int]:
        height, width = image_size(sample.image_path)
        return (width, height) if self.orientation(sample) in SWAPPING_ORIENTATIONS else (height, width)

    def orientation(self, sample: Sample) -> int:
        """The EXIF orientation the sample's image is read with: 1, as stored (compkit ignores the tag: the stored
        pixels are what was labelled, see :mod:`compkit.util.imageio`), unless the image is tagged with a quarter turn,
        is not square, and its label files fit only the turned image (height and width swapped): then the tag's,
        with a one-line note. Images without labels (a test set) are always read as stored."""
        if sample.image_id not in self._orientations:
            self._orientations[sample.image_id] = self._labelled_orientation(sample)
        return self._orientations[sample.image_id]

    def exif_tag(self, sample: Sample) -> int:
        """The image's EXIF orientation tag (1 where it has none), read once per sample."""
        if sample.image_id not in self._tags:
            self._tags[sample.image_id] = exif_orientation(sample.image_path)
        return self._tags[sample.image_id]

    def _labelled_orientation(self, sample: Sample) -> int:
        tag = self.exif_tag(sample)
        if tag not in SWAPPING_ORIENTATIONS or sample.label_path is None:
            return 1
        height, width = image_size(sample.image_path)
        labels = [p for p in self.source_files(sample)[1:] if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if height == width or not labels or {image_size(p) for p in labels} != {(width, height)}:
            return 1
        warn(
            sample.image_path,
            f"stored {width}x{height} with EXIF orientation {tag}, its masks are {height}x{width}: they fit only the "
            "turned image, so the image is turned as its tag says",
        )
        return tag

    @abstractmethod
    def read_mask(self, sample: Sample, shape: tuple[int, int] | None = None) -> np.ndarray:
        """(C, H, W) uint8 multi-hot mask at the image's original size (or ``shape``)."""

    def read_ignore(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray | None:
        """(C, H, W) uint8 pixels the loss must ignore (soft pseudo-labels: uncertain pixels), or None.

        Stored beside any layout as ``<root>/ignore/<image id with / as __>.npy``: ``np.packbits`` of the mask.
        """
        path = self.ignore_file(sample)
        if not path.is_file():
            return None
        packed = np.load(path, allow_pickle=False)
        return np.unpackbits(packed, axis=-1, count=shape[0] * shape[1]).reshape(len(self.classes), *shape)

    def writer(self, out: Path) -> Any:
        """A writer of new samples like these (``compkit augment``, ``compkit pseudo``) into ``out``."""
        cls = type(self).writer_class or DATASET_FORMATS[self.written_as].writer_class
        return cls(out, self)

    def meta_files(self) -> list[Path]:
        """Files of image-level values that a written copy of these samples should carry (e.g. a meta table)."""
        return []

    def submission_name(self, sample: Sample) -> str:
        """How the submission CSV names this image."""
        return sample.image_name

    def submission_conventions(self) -> SubmissionConventions:
        """Header, empty-mask token, sample submission (see :class:`SubmissionConventions`)."""
        sample = self.root / "sample_submission.csv"
        return SubmissionConventions(sample=sample if sample.is_file() else None)

    def ignore_file(self, sample: Sample) -> Path:
        """Where the sample's ignore mask would be (see :meth:`read_ignore`); it may not exist."""
        return self.root / IGNORE_DIR / ignore_file_name(sample.image_id)

    def source_files(self, sample: Sample) -> list[Path]:
        """Every file a sample is read from: its image first, then its label files, then its ignore masks (the
        preprocessing cache re-reads the sample when one changes). Formats whose labels are not one file per sample
        (a mask per class, a field-of-view template) list their own."""
        labels = [sample.label_path] if sample.label_path is not None else []
        return [sample.image_path, *labels, *self.ignore_files(sample)]

    def ignore_files(self, sample: Sample) -> list[Path]:
        """The sample's ignore files that exist (a file appearing later changes :meth:`source_files` too)."""
        path = self.ignore_file(sample)
        return [path] if path.is_file() else []

    def dataset_files(self) -> list[Path]:
        """The files every sample is read through, beside its own (the dataset description, class list, meta
        tables): the preprocessing cache re-reads every sample when one changes. Those that exist."""
        description = self.description or self.root / DESCRIPTION_FILE
        return [p for p in dict.fromkeys([description, *self.meta_files()]) if p.is_file()]

    def unmatched_labels(self) -> list[Path]:
        """Label files that no image claimed (shown by `compkit check-data`)."""
        return []

    def describe(self) -> dict[str, Any]:
        """This dataset as a ``dataset.yaml`` mapping (a registered format is named; described ones spell it out)."""
        return {"format": self.format_name, "classes": list(self.classes)}


def dataset_folder(data: str | Path) -> Path:
    """The dataset's folder: ``data`` itself, or for a ``dataset.yaml`` path the folder it describes."""
    data = Path(data)
    if data.suffix.lower() in (".yaml", ".yml") and data.is_file():
        return DATASET_FORMATS[DESCRIBED_FORMAT].root_of(data)  # type: ignore[attr-defined]
    return data


def description_file(data: str | Path) -> Path | None:
    """The ``dataset.yaml`` that describes ``data`` (given as the file or found at the folder's root), or None."""
    data = Path(data)
    if data.suffix.lower() in (".yaml", ".yml"):
        return data
    found = data / DESCRIPTION_FILE
    return found if found.is_file() else None


def detected_formats(root: Path) -> list[str]:
    """Registered formats whose layout ``root`` has, in registration order (the specific ones first)."""
    return DATASET_FORMATS.names(where=lambda cls: cls.detect(root))


def open_dataset(
    root: str | Path,
    split: str = "train",
    format: str = "auto",
    labels: str | Path | None = None,
    classes: Sequence[str] | None = None,
) -> SegmentationDataset:
    """Open ``root`` as a dataset of the given (or detected) format.

    ``root`` is a folder or a ``dataset.yaml``; a folder with a ``dataset.yaml`` at its root is read through it.
    ``labels`` points at a separate label folder (e.g. the synthetic test ground truth in ``DATA_gt``).
    """
    root = Path(root)
    description = description_file(root)
    if description is not None and format in ("auto", DESCRIBED_FORMAT):
        if not description.is_file():
            raise CompkitError(description, "dataset description not found")
        return DATASET_FORMATS[DESCRIBED_FORMAT].open_description(description, split, labels=labels, classes=classes)  # type: ignore[attr-defined]
    if not root.is_dir():
        raise CompkitError(root, "dataset folder not found")
    if format == "auto":
        found = detected_formats(root)
        if not found:
            known = ", ".join(DATASET_FORMATS)
            raise CompkitError(
                root,
                f"not a dataset layout compkit knows (formats: {known}); `compkit check-data {root}` shows what it "
                f"sees and proposes a {DESCRIPTION_FILE}",
            )
        format = found[0]
    return DATASET_FORMATS.get(format, where=root).open(root, split=split, labels=labels, classes=classes)
