"""Synthetic fundus-lesion (FGADR Seg-set layout) and skin-lesion (ISIC / HAM10000 layout) datasets, so the
``masks`` and ``isic`` formats can be tried without the real data. Kinds of ``compkit synth --kind``."""

from __future__ import annotations

import csv

import cv2
import numpy as np

from compkit.synthetic.base import SYNTH_KINDS, SynthRequest
from compkit.util.fileio import write_png

FUNDUS_LESIONS = ("Microaneurysms", "Hemohedge", "HardExudate", "SoftExudate", "IRMA", "Neovascularization")
# (count range, radius range in px at 512, colour BGR delta, drawn as: dot/blob/line)
LESION_STYLE = {
    "Microaneurysms": ((0, 14), (1.5, 2.5), (-40, -60, -10), "dot"),
    "Hemohedge": ((0, 5), (4, 9), (-60, -90, -40), "blob"),
    "HardExudate": ((0, 9), (2, 5), (-20, 90, 110), "blob"),
    "SoftExudate": ((0, 3), (6, 11), (50, 70, 70), "blob"),
    "IRMA": ((0, 2), (6, 12), (-30, -50, -20), "line"),
    "Neovascularization": ((0, 1), (10, 18), (-30, -60, -20), "line"),
}


def _fundus(
    size: int, rng: np.random.Generator, lesion_scale: float = 1.0, contrast: float = 1.0
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    scale = size / 512
    image = np.zeros((size, size, 3), np.float32)
    centre = (size // 2 + int(rng.normal(0, 4 * scale)), size // 2 + int(rng.normal(0, 4 * scale)))
    radius = int(size * rng.uniform(0.42, 0.47))
    disk = np.zeros((size, size), np.uint8)
    cv2.circle(disk, centre, radius, 255, -1, cv2.LINE_AA)
    base = np.array([rng.uniform(20, 50), rng.uniform(60, 100), rng.uniform(150, 200)], np.float32)  # BGR orange-red
    image[:] = base
    yy, xx = np.mgrid[:size, :size]
    vignette = 1 - 0.35 * (((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / radius**2)
    image *= vignette[..., None].clip(0.4, 1)
    disc = (centre[0] + int(radius * rng.choice([-0.45, 0.45])), centre[1] + int(rng.normal(0, 10 * scale)))
    cv2.circle(image, disc, int(28 * scale), (150, 210, 240), -1, cv2.LINE_AA)
    for _ in range(8):  # vessels from the disc
        angle = rng.uniform(0, 2 * np.pi)
        pts = [disc]
        for _ in range(6):
            angle += rng.normal(0, 0.3)
            last = pts[-1]
            pts.append((int(last[0] + 40 * scale * np.cos(angle)), int(last[1] + 40 * scale * np.sin(angle))))
        cv2.polylines(image, [np.array(pts, np.int32)], False, (20, 30, 110), max(1, int(3 * scale)), cv2.LINE_AA)
    masks = {}
    for name, ((lo, hi), (rmin, rmax), delta, kind) in LESION_STYLE.items():
        mask = np.zeros((size, size), np.uint8)
        for _ in range(int(rng.integers(lo, hi + 1))):
            r = rng.uniform(0, radius * 0.85)
            a = rng.uniform(0, 2 * np.pi)
            c = (int(centre[0] + r * np.cos(a)), int(centre[1] + r * np.sin(a)))
            rad = max(1, int(rng.uniform(rmin, rmax) * scale * lesion_scale))
            if kind == "line":
                pts = np.array(
                    [(c[0] + int(rad * np.cos(t)), c[1] + int(rad * np.sin(2 * t))) for t in np.linspace(0, 3, 7)],
                    np.int32,
                )
                cv2.polylines(mask, [pts], False, 255, max(1, int(2 * scale)), cv2.LINE_AA)
            elif kind == "blob":
                cv2.ellipse(
                    mask,
                    c,
                    (rad, max(1, int(rad * rng.uniform(0.6, 1.0)))),
                    rng.uniform(0, 180),
                    0,
                    360,
                    255,
                    -1,
                    cv2.LINE_AA,
                )
            else:
                cv2.circle(mask, c, rad, 255, -1, cv2.LINE_AA)
        mask = (mask.astype(np.float32) * (disk / 255.0)).astype(np.uint8)  # lesions live inside the eye
        image += (mask[..., None] / 255.0) * np.array(delta, np.float32) * contrast
        masks[name] = mask
    image = cv2.GaussianBlur(image, (0, 0), 0.7 * scale) + rng.normal(0, 3, image.shape)
    image *= (disk / 255.0)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), masks


@SYNTH_KINDS.register("fundus", description="fundus photographs, 6 lesion classes (the FGADR Seg-set layout)")
def write_fundus(request: SynthRequest, *, lesion_scale: float = 1.0, contrast: float = 1.0) -> str:
    """FGADR-like: Original_Images/ plus one <Lesion>_Masks/ folder per class; masks written only where present.
    Variants (defaults: the standard data): ``lesion_scale`` scales lesion sizes, ``contrast`` their colour change."""
    data, gt, size, seed, patients = request.data, request.gt, request.size, request.seed, request.patients
    rows = []
    task = request.progress.add_task("synthesising fundus images", total=request.total)
    for pid in range(1, request.total + 1):
        split = "train" if pid <= patients else "test"
        for eye in (1, 2):
            rng = np.random.default_rng([seed, pid, eye])
            image, masks = _fundus(size, rng, lesion_scale, contrast)
            name = f"{pid:04d}_{eye}.png"
            write_png(data / split / "Original_Images" / name, image)
            label_root = data / split if split == "train" else gt
            for lesion in FUNDUS_LESIONS:
                (label_root / f"{lesion}_Masks").mkdir(parents=True, exist_ok=True)
                if masks[lesion].any():
                    write_png(label_root / f"{lesion}_Masks" / name, masks[lesion])
            grade = min(4, sum(int(masks[n].any()) for n in FUNDUS_LESIONS))
            rows.append((name, f"P{pid:04d}", grade))
        request.progress.advance(task)
    with open(data / "DR_Seg_Grading_Label.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "patient", "grade"))
        writer.writerows(rows)
    classes = f"{len(FUNDUS_LESIONS)} lesion classes"
    return f"{2 * patients} train images, {2 * request.test_patients} test images (fundus, {classes})"


def _skin(size: int, rng: np.random.Generator, contrast: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    skin = np.array([rng.uniform(120, 180), rng.uniform(140, 190), rng.uniform(190, 235)], np.float32)
    image = np.empty((size, size, 3), np.float32)
    image[:] = skin
    yy, xx = np.mgrid[:size, :size] / size
    image *= (1 - 0.15 * (xx - 0.5) ** 2 - 0.2 * (yy - 0.5) ** 2)[..., None]
    angles = np.sort(rng.uniform(0, 2 * np.pi, 14))
    radius = size * rng.uniform(0.15, 0.32) * (1 + rng.normal(0, 0.12, len(angles)))
    centre = size / 2 + rng.normal(0, size * 0.06, 2)
    pts = np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], 1).astype(np.int32)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [cv2.convexHull(pts)], 255, cv2.LINE_AA)
    darkness = rng.uniform(0.35, 0.65) * contrast
    lesion = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), size / 200)
    image *= (1 - darkness * lesion)[..., None]
    for _ in range(int(rng.integers(0, 6))):  # hairs, an ISIC classic
        p = rng.integers(0, size, 4)
        cv2.line(image, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), (30, 30, 40), max(1, size // 300), cv2.LINE_AA)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), (mask >= 128).astype(np.uint8) * 255


@SYNTH_KINDS.register("isic", description="dermoscopy images, 1 class (the ISIC 2018 / HAM10000 layout)")
def write_isic(request: SynthRequest, *, contrast: float = 1.0) -> str:
    """ISIC 2018 / HAM10000-like: ISIC_x.jpg with ISIC_x_segmentation.png, and HAM10000_metadata.csv (one lesion,
    one or two images: folds group by lesion_id). ``contrast`` scales how much darker lesions are than the skin
    (default: the standard data)."""
    data, gt, size, seed, patients = request.data, request.gt, request.size, request.seed, request.patients
    rows = []
    number = 24306
    task = request.progress.add_task("synthesising skin lesions", total=request.total)
    for lid in range(1, request.total + 1):
        split = "train" if lid <= patients else "test"
        rng = np.random.default_rng([seed, lid])
        dx = str(rng.choice(["nv", "mel", "bkl", "bcc"], p=[0.6, 0.15, 0.15, 0.1]))
        age, sex = int(rng.integers(20, 85)) // 5 * 5, str(rng.choice(["male", "female"]))
        site = str(rng.choice(["back", "lower extremity", "trunk", "face"]))
        for _ in range(1 + int(rng.random() < 0.4)):
            image, mask = _skin(size, rng, contrast)
            image_id = f"ISIC_{number:07d}"
            number += 1
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            (data / split / "images").mkdir(parents=True, exist_ok=True)
            (data / split / "images" / f"{image_id}.jpg").write_bytes(buf.tobytes())
            label_root = data / split / "masks" if split == "train" else gt / "masks"
            write_png(label_root / f"{image_id}_segmentation.png", mask)
            rows.append((f"HAM_{lid:07d}", image_id, dx, "histo", age, sex, site))
        request.progress.advance(task)
    with open(data / "HAM10000_metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"))
        writer.writerows(rows)
    return f"{sum(r[1] and 1 for r in rows)} images of {request.total} lesions (skin, 1 class)"
