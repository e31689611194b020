"""Small datasets laid out as real public datasets and Kaggle competitions ship them (file kinds, names, quirks), for
the bring-your-own-data tests. Every builder is deterministic and writes a handful of 64-96 px images."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from compkit.submission import rle


def seeded(*seed: int) -> np.random.Generator:
    return np.random.default_rng(list(seed))


def write_gif(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(path)


def write_bmp_1bit(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask > 0).astype(np.uint8) * 255).convert("1").save(path)


def write(path: Path, image: np.ndarray, params: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image, params or [])


def write_jpeg_mask(path: Path, mask: np.ndarray) -> None:
    """A 3-channel JPEG mask with compression noise around 0 and 255, as Kvasir-SEG ships them."""
    value = (mask > 0).astype(np.uint8) * 255
    write(path, cv2.merge([value, value, value]), [cv2.IMWRITE_JPEG_QUALITY, 70])


def write_dicom(path: Path, values: np.ndarray, photometric: str = "MONOCHROME1") -> None:
    """A 12-bit DICOM X-ray (stored values; rescale slope 2, intercept -100; a window that covers them)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SecondaryCaptureImageStorage, uid, "CR"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-100"
    ds.WindowCenter, ds.WindowWidth = "3900", "8000"
    ds.PixelData = values.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def fundus(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(BGR image, vessel mask, field-of-view mask): dark vessels on an orange eye disk, black outside it."""
    fov = np.zeros((height, width), np.uint8)
    cv2.ellipse(fov, (width // 2, height // 2), (width // 2 - 3, height // 2 - 3), 0, 0, 360, 1, -1)
    vessels = np.zeros((height, width), np.uint8)
    for _ in range(4):
        points = [(int(rng.integers(8, width - 8)), int(rng.integers(8, height - 8))) for _ in range(4)]
        cv2.polylines(vessels, [np.array(points, np.int32)], False, 1, 2)
    vessels &= fov
    image = np.zeros((height, width, 3), np.float32)
    image[fov > 0] = (40, 90, 190)
    image[vessels > 0] = (20, 30, 90)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), vessels, fov


def blob(rng: np.random.Generator, height: int, width: int, count: int = 1) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    for _ in range(count):
        centre = (int(rng.integers(width // 4, 3 * width // 4)), int(rng.integers(height // 4, 3 * height // 4)))
        axes = (int(rng.integers(width // 10, width // 5)), int(rng.integers(height // 10, height // 5)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


def photo(rng: np.random.Generator, mask: np.ndarray, lesion=(60, 40, 90), skin=(150, 170, 210)) -> np.ndarray:
    image = np.zeros((*mask.shape, 3), np.float32)
    image[:] = skin
    image[mask > 0] = lesion
    image = cv2.GaussianBlur(image, (0, 0), 1.0) + rng.normal(0, 5, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def drive(root: Path, train: int = 4, test: int = 2, size: tuple[int, int] = (72, 64)) -> Path:
    """The retinal-vessel (DRIVE) layout: RGB LZW TIFF images, GIF vessel masks and field-of-view masks, a different
    name per file kind; the test set has a second annotator's masks too."""
    height, width = size
    for split, folder, first, count in (("training", "training", 21, train), ("test", "test", 1, test)):
        for k in range(count):
            n = f"{first + k:02d}"
            image, vessels, fov = fundus(seeded(first, k), height, width)
            write(root / folder / "images" / f"{n}_{split}.tif", image, [cv2.IMWRITE_TIFF_COMPRESSION, 5])
            write_gif(root / folder / "1st_manual" / f"{n}_manual1.gif", vessels)
            write_gif(root / folder / "mask" / f"{n}_{split}_mask.gif", fov)
            if split == "test":
                write_gif(root / folder / "2nd_manual" / f"{n}_manual2.gif", vessels)
    return root


def ph2(root: Path, cases: int = 5, test: int = 2) -> Path:
    """The PH2 dermoscopy layout: one folder per case under a folder with a space in its name, 24-bit BMP images of
    slightly different sizes, 1-bit BMP lesion masks (one 24-bit), a lossy JPEG copy of some masks (to be ignored).
    Test cases sit in ``test/`` the same way."""
    for k in range(cases + test):
        case = f"IMD{k + 2:03d}"
        base = (root / "PH2 Dataset images") if k < cases else (root / "test")
        height, width = 64 + 2 * (k % 2), 76
        rng = seeded(2, k)
        mask = blob(rng, height, width)
        write(base / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp", photo(rng, mask))
        lesion = base / case / f"{case}_lesion" / f"{case}_lesion.bmp"
        if k == 1:
            write(lesion, mask * 255)  # the one 24-bit mask
        else:
            write_bmp_1bit(lesion, mask)
        if k % 2 == 0:
            write_jpeg_mask(lesion.with_suffix(".jpg"), mask)
    return root


def kvasir(root: Path, train: int = 5, test: int = 2) -> Path:
    """The Kvasir-SEG polyp layout: ``images/<id>.jpg`` + ``masks/<id>.jpg`` (JPEG masks with noise); a ``test/images``
    whose masks are held out in ``<root>_gt/test/masks`` (for local scoring with ``--gt``)."""
    for k in range(train + test):
        rng = seeded(3, k)
        name = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789"), 12)) + ".jpg"
        mask = blob(rng, 80, 96)
        base = root if k < train else root / "test"
        write(
            base / "images" / name,
            photo(rng, mask, lesion=(90, 110, 200), skin=(60, 60, 140)),
            [cv2.IMWRITE_JPEG_QUALITY, 90],
        )
        # test masks go to <root>_gt (held out, for local scoring), in the same relative place
        write_jpeg_mask((base if k < train else root.with_name(root.name + "_gt") / "test") / "masks" / name, mask)
    return root


UW_CLASSES = ("large_bowel", "small_bowel", "stomach")


def kaggle_long(
    root: Path, cases: int = 3, slices: int = 2, test_cases: int = 1, size: tuple[int, int] = (80, 64)
) -> Path:
    """A Kaggle RLE competition, long format (UW-Madison GI style): 16-bit grey PNG slices ``train/<id>.png`` with ids
    ``case<N>_day<D>_slice_<S>`` (the patient is the case prefix), ``train.csv`` of ``id,class,segmentation`` with
    column-major RLE and empty cells, ``test/``, and a ``sample_submission.csv`` (``id,class,predicted``, ids without
    extension) whose rows go class by class (not image by image). The test labels are held out in
    ``<root>_gt/train.csv`` (the same kind of CSV), for local scoring with ``--gt``."""
    height, width = size
    rows, held_out, test_ids = [], [], []
    for case in range(1, cases + test_cases + 1):
        for s in range(1, slices + 1):
            image_id = f"case{case + 10}_day{case + 2}_slice_{s:04d}"
            rng = seeded(4, case, s)
            image = rng.normal(9000, 300, (height, width))
            masks = {}
            for c, name in enumerate(UW_CLASSES):
                mask = blob(rng, height, width) if (c + s) % 3 else np.zeros((height, width), np.uint8)
                image[mask > 0] = 20000 + 9000 * c
                masks[name] = mask
            folder = "train" if case <= cases else "test"
            write(root / folder / f"{image_id}.png", np.clip(image, 0, 65535).astype(np.uint16))
            labels = [(image_id, name, rle.encode(masks[name], "F")) for name in UW_CLASSES]
            if case <= cases:
                rows += labels
            else:
                test_ids.append(image_id)
                held_out += labels
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "class", "segmentation"), *rows])
    gt = root.with_name(root.name + "_gt")  # the test labels, held out for local scoring, as the same kind of CSV
    gt.mkdir(exist_ok=True)
    with open(gt / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "class", "segmentation"), *held_out])
    sample = [(i, c, "") for c in UW_CLASSES for i in reversed(test_ids)]
    with open(root / "sample_submission.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "class", "predicted"), *sample])
    return root


def kaggle_wide_dicom(root: Path, train: int = 6, test: int = 2, size: int = 64) -> Path:
    """A Kaggle X-ray competition shipping DICOM: ``train_images/<uid>.dcm`` (12-bit MONOCHROME1), ``train.csv`` in the
    wide form (``ImageId,opacity,effusion``: one RLE column per class, row-major, ``-1`` for empty), several rows for
    one image (instances, to be merged), ``test_images/``, and a wide ``sample_submission.csv`` with ``-1``; test labels
    held out in ``<root>_gt/train.csv``."""
    rows, held_out, test_ids = [], [], []
    for k in range(train + test):
        rng = seeded(5, k)
        uid = f"1.2.276.0.7230010.3.1.4.{8323329 + k}"
        values = rng.normal(1800, 40, (size, size))
        masks = {
            "opacity": blob(rng, size, size),
            "effusion": blob(rng, size, size) if k % 2 else np.zeros((size, size), np.uint8),
        }
        values[masks["opacity"] > 0] = 300  # dark in stored values: bright after MONOCHROME1 inversion
        values[masks["effusion"] > 0] = 3600
        folder = "train_images" if k < train else "test_images"
        write_dicom(root / folder / f"{uid}.dcm", np.clip(values, 0, 4095))
        if k >= train:
            test_ids.append(uid)
            held_out.append(
                (uid, rle.encode(masks["opacity"], "C") or "-1", rle.encode(masks["effusion"], "C") or "-1")
            )
            continue
        if k == 0:  # two instances of one image: two rows, merged
            top, bottom = masks["opacity"].copy(), masks["opacity"].copy()
            top[size // 2 :], bottom[: size // 2] = 0, 0
            rows.append((uid, rle.encode(top, "C") or "-1", "-1"))
            rows.append((uid, rle.encode(bottom, "C") or "-1", "-1"))
        else:
            rows.append((uid, rle.encode(masks["opacity"], "C") or "-1", rle.encode(masks["effusion"], "C") or "-1"))
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("ImageId", "opacity", "effusion"), *rows])
    with open(root / "sample_submission.csv", "w", newline="") as f:
        csv.writer(f).writerows([("ImageId", "opacity", "effusion"), *((u, "-1", "-1") for u in test_ids)])
    gt = root.with_name(root.name + "_gt")
    gt.mkdir(exist_ok=True)
    with open(gt / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("ImageId", "opacity", "effusion"), *held_out])
    return root


@contextlib.contextmanager
def read_only_modes(folder: Path) -> Iterator[Path]:
    """``folder`` with every write bit cleared (as a data set unpacked read-only, or ../shared/data), put back after."""
    paths = [folder, *folder.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in sorted(paths, key=lambda p: -len(p.parts)):
        p.chmod(modes[p] & ~0o222)
    try:
        yield folder
    finally:
        for p in paths:
            p.chmod(modes[p])
