"""Image and mask files as they come: palette PNGs (VOC, CVAT), RGBA, 16-bit, 0/1 and 1-bit masks, EXIF-tagged
JPEGs, names with spaces, non-ASCII names and upper-case extensions, grey and colour images mixed, RGBA images,
several sizes, a class that never occurs, a dataset reached through a symlink or on a read-only mount. Each reads
(and, where it matters, trains, predicts and submits) exactly the intended pixels."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from compkit.data import open_dataset
from compkit.data.cache import build_cache, resize_mask
from compkit.stages.check_data import check_data
from compkit.stages.eda import eda
from compkit.stages.ensemble import ensemble
from compkit.stages.predict import predict
from compkit.stages.split import split
from compkit.stages.submit import submit
from compkit.stages.train import train
from compkit.submission import rle
from compkit.util.imageio import apply_orientation
from tests.conftest import FAST, quiet
from tests.imperfect import Case, Env

VOC = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # the VOC / CVAT palette: background, class 1, 2, 3
H, W = 32, 48  # not square: a quarter turn shows


def region(shape=(H, W), box=(6, 20, 10, 30)) -> np.ndarray:
    """A 0/1 mask with one rectangle (top, bottom, left, right)."""
    mask = np.zeros(shape, np.uint8)
    top, bottom, left, right = box
    mask[top:bottom, left:right] = 1
    return mask


def picture(shape=(H, W), seed: int = 0) -> np.ndarray:
    """A BGR image with a smooth, orientation-revealing gradient (JPEG keeps it nearly exactly)."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    base = np.stack([x * 200 // max(1, width - 1), y * 200 // max(1, height - 1), np.full_like(x, 60 + seed * 20)], -1)
    return (base + rng.integers(0, 3, base.shape)).astype(np.uint8)


def write(path: Path, image: np.ndarray) -> Path:
    """cv2.imencode + tofile (non-ASCII names too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, image)
    assert ok
    buf.tofile(str(path))
    return path


def write_palette(path: Path, indices: np.ndarray, palette=VOC) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(indices.astype(np.uint8), "P")
    image.putpalette(list(palette))
    image.save(path)
    return path


def masks_layout(
    root: Path,
    images: dict[str, np.ndarray],
    masks: dict[str, dict[str, np.ndarray]] | None = None,
    mask_writer=write,
    split_name: str = "train",
) -> Path:
    """The FGADR-style masks layout: ``<split>/Original_Images/<name>`` and ``<split>/<Class>_Masks/<stem>.png``
    (``masks``: class -> mask file name -> the array ``mask_writer`` writes)."""
    for name, image in images.items():
        write(root / split_name / "Original_Images" / name, image)
    for cls, files in (masks or {}).items():
        for name, mask in files.items():
            mask_writer(root / split_name / f"{cls}_Masks" / name, mask)
    return root


def one_mask_dataset(env: Env, mask_name: str, mask: np.ndarray, mask_writer=write, image_name: str = "a.png") -> Path:
    """One image and one class mask written by ``mask_writer``."""
    shape = mask.shape[:2]
    return masks_layout(env.tmp / "data", {image_name: picture(shape)}, {"lesion": {mask_name: mask}}, mask_writer)


def read_all(data: Path, split_name: str = "train") -> dict[str, np.ndarray]:
    dataset = open_dataset(data, split_name)
    return {s.image_id: dataset.read_mask(s) for s in dataset.samples}


def assert_mask(data: Path, image_id: str, expected: np.ndarray, channel: int = 0) -> None:
    """The mask read, and the one cached for training, are ``expected`` (0/1)."""
    dataset = open_dataset(data, "train")
    np.testing.assert_array_equal(dataset.read_mask(dataset.sample(image_id))[channel], expected)
    cache = build_cache(dataset, 64, cache_dir=data.parent / "cache", console=quiet())
    np.testing.assert_array_equal(cache.mask(cache.position[image_id])[channel], resize_mask(expected[None], 64)[0])


def described(env: Env, spec: dict, files: dict[str, np.ndarray], label_writer) -> Path:
    """A dataset.yaml dataset: ``images/<name>.png`` and ``labels/<name>.png`` written by ``label_writer``."""
    data = env.tmp / "data"
    for name, label in files.items():
        write(data / "images" / f"{name}.png", picture(label.shape[:2]))
        label_writer(data / "labels" / f"{name}.png", label)
    (data / "dataset.yaml").write_text(json.dumps({"splits": {"train": "images/*.png"}, **spec}), encoding="utf-8")
    return data


# --- masks by what they mean ---------------------------------------------------------------------------------------


def palette_binary_mask(env: Env) -> None:
    """VOC / CVAT palette PNG: index 1 = RGB (128, 0, 0), grey 38 once expanded: the drawn region, not empty."""
    mask = region()
    data = one_mask_dataset(env, "a.png", mask, write_palette)
    assert_mask(data, "a.png", mask)


def palette_index_values(env: Env) -> None:
    """A palette index mask with ``values`` keyed by index, and the same keyed by the palette's R,G,B colours."""
    indices = region() + 2 * region(box=(20, 30, 2, 12))
    truth = {"liver": (indices == 1), "tumour": (indices == 2)}
    for values in (
        {0: "background", 1: "liver", 2: "tumour"},
        {"0,0,0": "background", "128,0,0": "liver", "0,128,0": "tumour"},
    ):
        data = described(env, {"label": "../labels/{stem}.png", "values": values}, {"case1": indices}, write_palette)
        dataset = open_dataset(data, "train")
        mask = dataset.read_mask(dataset.samples[0])
        for c, name in enumerate(dataset.classes):
            np.testing.assert_array_equal(mask[c], truth[name], err_msg=f"{name} keyed by {list(values)}")
        shutil.rmtree(data)
    report = check_data(
        described(
            env,
            {"label": "../labels/{stem}.png", "values": {0: "background", 1: "liver", 2: "tumour"}},
            {"case1": indices},
            write_palette,
        ),
        console=quiet(),
    )
    assert list(report["splits"]["train"]["mask_values"].values()) == [[0, 1, 2]], (
        "check-data shows the palette indices"
    )


def rgba_masks(env: Env) -> None:
    """RGBA masks: one colour drawn on transparency is the alpha (white everywhere, even where transparent: not a
    full mask); a colour mask on an opaque alpha is its colour."""
    mask = region()
    drawn = np.zeros((H, W, 4), np.uint8)
    drawn[..., :3] = 255  # tools store the transparent pixels' colour too: here white
    drawn[..., 3] = mask * 255
    data = one_mask_dataset(env, "a.png", drawn)
    assert_mask(data, "a.png", mask)
    opaque = np.dstack([np.repeat(mask[..., None] * 255, 3, axis=2), np.full((H, W), 255, np.uint8)])
    write(data / "train" / "lesion_Masks" / "a.png", opaque)
    assert_mask(data, "a.png", mask)


def masks_16bit(env: Env) -> None:
    """16-bit masks 0/65535 with an anti-aliased rim below half the range: the rim is background (as 8-bit masks
    threshold at 128); found as masks by the pairs layout too (not taken for images)."""
    mask = region()
    values = mask.astype(np.uint16) * 65535
    rim = cv2.dilate(mask, np.ones((3, 3), np.uint8)) & ~mask.astype(bool)
    values[rim.astype(bool)] = 20000
    data = one_mask_dataset(env, "a.png", values)
    assert_mask(data, "a.png", mask)
    pairs = env.tmp / "pairs"
    for k in range(3):
        write(pairs / "images" / f"case{k}.png", picture(seed=k))
        write(pairs / "masks" / f"case{k}.png", mask.astype(np.uint16) * 65535)
    dataset = open_dataset(pairs, "train")
    assert dataset.format_name == "pairs" and len(dataset) == 3
    np.testing.assert_array_equal(dataset.read_mask(dataset.samples[0])[0], mask)


def index_mask_16bit(env: Env) -> None:
    """A 16-bit label-index mask (0, 1, 2) with ``values``."""
    indices = (region() + 2 * region(box=(20, 30, 2, 12))).astype(np.uint16)
    data = described(
        env,
        {"label": "../labels/{stem}.png", "values": {0: "background", 1: "liver", 2: "tumour"}},
        {"case1": indices},
        write,
    )
    dataset = open_dataset(data, "train")
    mask = dataset.read_mask(dataset.samples[0])
    assert (
        cv2.imdecode(np.fromfile(str(data / "labels" / "case1.png"), np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    )
    np.testing.assert_array_equal(mask[dataset.classes.index("liver")], indices == 1)
    np.testing.assert_array_equal(mask[dataset.classes.index("tumour")], indices == 2)


def zero_one_mask(env: Env) -> None:
    """An 8-bit PNG mask of 0 and 1 (numpy's bool saved as is) is foreground where 1, not empty."""
    mask = region()
    data = one_mask_dataset(env, "a.png", mask)
    assert_mask(data, "a.png", mask)


def one_bit_mask(env: Env) -> None:
    """A 1-bit PNG (Pillow mode '1')."""
    mask = region()

    def write_1bit(path: Path, values: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(values.astype(bool)).save(path)

    data = one_mask_dataset(env, "a.png", mask, write_1bit)
    assert Image.open(data / "train" / "lesion_Masks" / "a.png").mode == "1"
    assert_mask(data, "a.png", mask)


# --- EXIF orientation ----------------------------------------------------------------------------------------------


def write_tagged_jpeg(path: Path, image: np.ndarray, orientation: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(image[..., ::-1])
    exif = pil.getexif()
    exif[0x0112] = orientation
    pil.save(path, exif=exif, quality=100, subsampling=0)
    return path


def exif_as_stored(env: Env) -> None:
    """A JPEG tagged orientation 6 with a PNG mask of its stored shape: read as stored (OpenCV alone would turn it
    and misalign the pair), in training, prediction and check-data alike; check-data lists it and what it decided."""
    image, mask = picture(), region()
    data = env.tmp / "data"
    write_tagged_jpeg(data / "train" / "Original_Images" / "a.jpg", image)
    write(data / "train" / "lesion_Masks" / "a.png", mask)
    write_tagged_jpeg(data / "test" / "Original_Images" / "t.jpg", image)
    assert cv2.imread(str(data / "train" / "Original_Images" / "a.jpg")).shape[:2] == (W, H), "OpenCV alone turns it"
    stored = np.asarray(Image.open(data / "train" / "Original_Images" / "a.jpg"))[..., ::-1]  # Pillow: raw pixels
    for split_name in ("train", "test"):
        dataset = open_dataset(data, split_name)
        sample = dataset.samples[0]
        read = dataset.read_image(sample)
        assert read.shape == (H, W, 3) and dataset.image_shape(sample) == (H, W)
        assert np.abs(read.astype(int) - stored.astype(int)).max() <= 2, "the stored pixels, not turned"
    assert_mask(data, "a.jpg", mask)
    report = check_data(data, console=quiet())["splits"]
    assert report["train"]["exif_orientation"] == {
        "images": 1,
        "orientations": {6: 1},
        "first": ["a.jpg"],
        "turned": [],
    }
    assert report["test"]["exif_orientation"]["images"] == 1
    shown = " ".join(env.cli("check-data", data).output.split())
    assert "EXIF orientation tags 1 image (orientation 6: 1): a.jpg; 1 read as stored" in shown


def exif_mask_fits_turned(env: Env) -> None:
    """A JPEG tagged orientation 6 whose mask fits only the turned image: the image is turned as tagged, with a
    one-line note; image and mask then agree."""
    image = picture()
    turned = apply_orientation(image, 6)
    mask = region(turned.shape[:2], box=(4, 40, 3, 12))
    data = env.tmp / "data"
    write_tagged_jpeg(data / "train" / "Original_Images" / "a.jpg", image)
    write(data / "train" / "lesion_Masks" / "a.png", mask)
    dataset = open_dataset(data, "train")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        shape = dataset.image_shape(dataset.samples[0])
        read = dataset.read_image(dataset.samples[0])
    assert shape == (W, H) and read.shape == (W, H, 3)
    assert np.abs(read.astype(int) - turned.astype(int)).max() <= 3
    [line] = stderr.getvalue().splitlines()
    assert "a.jpg" in line and "EXIF orientation 6" in line and "turned" in line
    np.testing.assert_array_equal(dataset.read_mask(dataset.samples[0])[0], mask)
    report = check_data(data, console=quiet())["splits"]["train"]["exif_orientation"]
    assert report["turned"] == ["a.jpg"]


# --- names and extensions ------------------------------------------------------------------------------------------


def names_check(names: list[str]):
    def check(env: Env) -> None:
        masks = {name: region(box=(2 + 4 * k, 20 + 2 * k, 5, 30)) for k, name in enumerate(names)}
        images = {name: picture(seed=k) for k, name in enumerate(names)}
        data = masks_layout(
            env.tmp / "data", images, {"lesion": {Path(n).with_suffix(".png").name: m for n, m in masks.items()}}
        )
        dataset = open_dataset(data, "train")
        assert sorted(s.image_id for s in dataset.samples) == sorted(names)
        for name in names:
            assert_mask(data, name, masks[name])
            np.testing.assert_array_equal(dataset.read_image(dataset.sample(name)), images[name])
        env.cli("check-data", data)

    return check


def upper_case_extensions(env: Env) -> None:
    """``.PNG``, ``.JPG``, ``.TIF`` images (masks ``.PNG`` or ``.png``) are found and paired."""
    data = env.tmp / "data"
    masks = {"a.PNG": region(), "b.JPG": region(box=(1, 9, 1, 9)), "c.TIF": region(box=(10, 30, 0, 48))}
    mask_names = {"a.PNG": "a.PNG", "b.JPG": "b.png", "c.TIF": "c.PNG"}
    for k, (name, mask) in enumerate(masks.items()):
        write(data / "train" / "Original_Images" / name, picture(seed=k))
        write(data / "train" / "lesion_Masks" / mask_names[name], mask)
    dataset = open_dataset(data, "train")
    assert sorted(s.image_id for s in dataset.samples) == sorted(masks)
    for name, mask in masks.items():
        assert_mask(data, name, mask)


# --- image kinds mixed ---------------------------------------------------------------------------------------------


def grey_and_colour_mixed(env: Env) -> None:
    """A grey PNG and a colour PNG in one dataset: both read as 3 channels with their own values."""
    grey = picture()[..., 0]
    colour = picture(seed=1)
    data = masks_layout(
        env.tmp / "data",
        {"grey.png": grey, "colour.png": colour},
        {"lesion": {"grey.png": region(), "colour.png": region()}},
    )
    assert (
        cv2.imdecode(
            np.fromfile(str(data / "train" / "Original_Images" / "grey.png"), np.uint8), cv2.IMREAD_UNCHANGED
        ).ndim
        == 2
    )
    dataset = open_dataset(data, "train")
    np.testing.assert_array_equal(dataset.read_image(dataset.sample("grey.png")), np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(dataset.read_image(dataset.sample("colour.png")), colour)
    cache = build_cache(dataset, 64, cache_dir=env.tmp / "cache", console=quiet())
    assert {cache.image(i).shape[-1] for i in range(len(cache.image_ids))} == {3}


def rgba_images(env: Env) -> None:
    """An RGBA image: the alpha is dropped, the colour kept exactly."""
    colour = picture()
    alpha = np.linspace(0, 255, H * W).reshape(H, W).astype(np.uint8)
    data = masks_layout(env.tmp / "data", {"a.png": np.dstack([colour, alpha])}, {"lesion": {"a.png": region()}})
    dataset = open_dataset(data, "train")
    np.testing.assert_array_equal(dataset.read_image(dataset.samples[0]), colour)
    assert_mask(data, "a.png", region())


# --- a trained run: several sizes, a class that never occurs ----------------------------------------------------------

SIZES = [(40, 56), (64, 48), (48, 48), (72, 64)]  # (height, width)
TEST_SIZES = [(36, 60), (80, 52)]


def sized_dataset(root: Path) -> Path:
    """Images of several sizes, each class's masks at its image's own size; class ``never`` has no pixels anywhere
    (empty mask files for half the images, none for the others)."""
    for k, shape in enumerate(SIZES):
        name = f"case{k}.png"
        height, width = shape
        masks_layout(
            root,
            {name: picture(shape, seed=k)},
            {"lesion": {name: region(shape, (height // 4, 3 * height // 4, width // 4, 3 * width // 4)) * 255}},
        )
        if k % 2:
            write(root / "train" / "never_Masks" / name, np.zeros(shape, np.uint8))
    for k, shape in enumerate(TEST_SIZES):
        write(root / "test" / "Original_Images" / f"t{k}.png", picture(shape, seed=10 + k))
    return root


def trained_sized_run(env: Env) -> tuple[Path, Path, Path]:
    """(data, runs, submission) of one short training on :func:`sized_dataset`, built once per session."""
    base = env.request.getfixturevalue("tmp_path_factory").getbasetemp() / "imperfect-sized-run"
    data, runs, out = base / "data", base / "runs", base / "submission.csv"
    if not out.is_file():
        shutil.rmtree(base, ignore_errors=True)
        sized_dataset(data)
        split(data, folds=2, seed=0, console=quiet())
        train(
            "tiny",
            data=data,
            fold="all",
            overrides=[*FAST, "train.epochs=1", "train.batch_size=2", "infer.tta=none"],
            out=runs,
            console=quiet(),
        )
        predict([runs / "tiny"], split="test", exist_ok=True, console=quiet())
        submit(ensemble([runs / "tiny"], name="e", out=base / "ens", console=quiet()), out=out, console=quiet())
    return data, runs, out


def submission_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def several_sizes(env: Env) -> None:
    """Masks are read at each image's own size; the submission encodes each test image at its original size."""
    data, _, out = trained_sized_run(env)
    for (image_id, mask), shape in zip(sorted(read_all(data).items()), SIZES, strict=True):
        assert mask.shape == (2, *shape), image_id
    header, *rows = submission_rows(out)
    assert {r[0] for r in rows} == {"t0.png", "t1.png"} and {r[1] for r in rows} == {"lesion", "never"}
    order = open_dataset(data, "test").rle_order
    for row in rows:
        shape = TEST_SIZES[int(row[0][1])]
        decoded = rle.decode(row[2], shape, order)
        assert decoded.shape == shape
        runs = [int(v) for v in row[2].split()]
        assert all(
            start + length - 1 <= shape[0] * shape[1] for start, length in zip(runs[::2], runs[1::2], strict=True)
        ), "runs fit the original size"


def class_never_present(env: Env) -> None:
    """A class with no pixels in any image trains (its validation dice is 0, not a crash), eda reports it absent,
    the ensemble's out-of-fold tuning leaves it empty (its threshold, or ``{"rule": "empty"}``), and the submission
    has its rows, every one an empty mask (what the model predicts there can only be false positives)."""
    data, runs, out = trained_sized_run(env)
    dataset = open_dataset(data, "train")
    assert dataset.classes == ("lesion", "never")
    assert not any(dataset.read_mask(s)[1].any() for s in dataset.samples)
    html = eda(data, out=env.tmp / "eda", console=quiet())
    fingerprint = json.loads((html.parent / "fingerprint.json").read_text(encoding="utf-8"))
    assert (
        fingerprint["per_class"]["never"]["frequency"] == 0.0 and fingerprint["per_class"]["lesion"]["frequency"] == 1.0
    )
    never = [r for r in submission_rows(out)[1:] if r[1] == "never"]
    assert sorted(r[0] for r in never) == ["t0.png", "t1.png"]
    assert [r[2] for r in never] == ["", ""]
    with open(runs / "tiny" / "fold0" / "results.csv", newline="", encoding="utf-8") as f:
        [epoch] = list(csv.DictReader(f))
    assert float(epoch["val_dice_never"]) >= 0.0 and float(epoch["val_dice_lesion"]) > 0.0


# --- where the dataset lives ---------------------------------------------------------------------------------------


def small_masks_dataset(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    masks = {f"case{k}.png": region(box=(2 + 3 * k, 20, 4, 40)) for k in range(3)}
    masks_layout(root, {n: picture(seed=k) for k, n in enumerate(masks)}, {"lesion": masks})
    return root, masks


def through_symlink(env: Env) -> None:
    """A dataset reached through a symlink (a mounted disk, a Kaggle input): read, checked and cached right."""
    real, masks = small_masks_dataset(env.tmp / "disk" / "real")
    link = env.tmp / "data"
    link.symlink_to(real, target_is_directory=True)
    dataset = open_dataset(link, "train")
    assert sorted(s.image_id for s in dataset.samples) == sorted(masks)
    for name, mask in masks.items():
        assert_mask(link, name, mask)
    report = check_data(link, console=quiet())
    assert report["splits"]["train"]["classes"]["lesion"]["images"] == 3


def protect(env: Env, folder: Path) -> Path:
    """``folder`` on a read-only bind mount (root ignores file modes), else made read-only by modes."""
    target = folder.with_name(folder.name + "-ro")
    target.mkdir()
    if (
        os.geteuid() == 0
        and not subprocess.run(["mount", "--bind", str(folder), str(target)], capture_output=True).returncode
    ):
        env.request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(target)], check=False))
        if not subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], capture_output=True).returncode:
            return target
    subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
    env.request.addfinalizer(lambda: subprocess.run(["chmod", "-R", "u+w", str(folder)], check=False))
    return folder if not target.is_mount() else target


def read_only_dataset(env: Env) -> None:
    """A dataset on a read-only mount: read, checked and cached (elsewhere) right, nothing written under it."""
    data, masks = small_masks_dataset(env.tmp / "data")
    data = protect(env, data)
    env.request.getfixturevalue("monkeypatch").setenv("COMPKIT_CACHE", str(env.tmp / "user-cache"))
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    dataset = open_dataset(data, "train")
    cache = build_cache(dataset, 64, console=quiet())
    for name, mask in masks.items():
        np.testing.assert_array_equal(dataset.read_mask(dataset.sample(name))[0], mask)
        np.testing.assert_array_equal(cache.mask(cache.position[name])[0], resize_mask(mask[None], 64)[0])
    env.cli("check-data", data)
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == before, "nothing written under the read-only data"
    assert any((env.tmp / "user-cache").rglob("*")), "the cache went to the user's cache folder"


CASES = [
    Case("palette-png-binary-mask", palette_binary_mask),
    Case("palette-index-mask-with-values", palette_index_values),
    Case("rgba-mask", rgba_masks),
    Case("16-bit-mask", masks_16bit),
    Case("16-bit-index-mask", index_mask_16bit),
    Case("zero-one-8-bit-mask", zero_one_mask),
    Case("1-bit-png-mask", one_bit_mask),
    Case("exif-jpeg-read-as-stored", exif_as_stored),
    Case("exif-jpeg-mask-fits-turned", exif_mask_fits_turned),
    Case("names-with-spaces", names_check(["case 1.png", "second case.png"])),
    Case("non-ascii-names", names_check(["Röntgen 01.png", "Übersicht_β.png"])),
    Case("upper-case-extensions", upper_case_extensions),
    Case("grey-and-colour-images-mixed", grey_and_colour_mixed),
    Case("rgba-images", rgba_images),
    Case("images-of-several-sizes", several_sizes),
    Case("class-with-no-pixels", class_never_present),
    Case("dataset-through-symlink", through_symlink),
    Case("dataset-on-read-only-mount", read_only_dataset),
]
