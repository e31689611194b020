"""A synthetic hand-bone dataset in exactly the competition's layout (``compkit synth --kind handbone``).

Per patient a right and a mirrored left hand: 29 bones as polygons placed like a hand's skeleton (phalanges,
metacarpals, carpals with real overlaps, radius and ulna), rendered as an X-ray (bones brighter than soft
tissue, overlapping bones brighter still), with per-patient pose, size, finger flexion and brightness,
occasional rings and wrist implants, and noise. Test ground truth is written beside the dataset in
``DATA_gt/outputs_json`` so that submissions can be scored locally.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from compkit.data.classes import HANDBONE_CLASSES
from compkit.synthetic.base import SYNTH_KINDS, SynthRequest
from compkit.util.errors import CompkitError
from compkit.util.fileio import atomic_write, write_png

# Fingers as chains of bones from the wrist outwards: (classes proximal -> distal, base (x, y), angle in degrees
# from vertical, bone lengths, bone widths), in units of the image size, for a right hand.
FINGERS = (
    (("finger-3", "finger-2", "finger-1"), (0.418, 0.700), -40.0, (0.125, 0.088, 0.062), (0.034, 0.030, 0.027)),
    (
        ("finger-7", "finger-6", "finger-5", "finger-4"),
        (0.447, 0.652),
        -9.0,
        (0.190, 0.110, 0.066, 0.048),
        (0.030, 0.027, 0.023, 0.021),
    ),
    (
        ("finger-11", "finger-10", "finger-9", "finger-8"),
        (0.503, 0.648),
        0.0,
        (0.200, 0.122, 0.078, 0.052),
        (0.032, 0.028, 0.024, 0.021),
    ),
    (
        ("finger-15", "finger-14", "finger-13", "finger-12"),
        (0.558, 0.655),
        8.0,
        (0.184, 0.114, 0.072, 0.048),
        (0.029, 0.026, 0.022, 0.020),
    ),
    (
        ("finger-19", "finger-18", "finger-17", "finger-16"),
        (0.607, 0.676),
        18.0,
        (0.158, 0.088, 0.052, 0.036),
        (0.026, 0.022, 0.019, 0.016),
    ),
)
JOINT_GAP = 0.007
# Carpal bones as ellipses (centre x, centre y, radius x, radius y, angle in degrees); neighbours overlap
# as they do in a projection X-ray, the Pisiform lying over the Triquetrum.
CARPALS = {
    "Trapezium": (0.408, 0.693, 0.031, 0.025, 30.0),
    "Trapezoid": (0.451, 0.682, 0.023, 0.021, 0.0),
    "Capitate": (0.500, 0.694, 0.029, 0.042, 0.0),
    "Hamate": (0.553, 0.698, 0.029, 0.037, -12.0),
    "Scaphoid": (0.438, 0.748, 0.043, 0.025, 35.0),
    "Lunate": (0.500, 0.760, 0.030, 0.026, 0.0),
    "Triquetrum": (0.557, 0.752, 0.027, 0.023, -20.0),
    "Pisiform": (0.575, 0.743, 0.018, 0.017, 0.0),
}
# Forearm bones (wrist end, far end, width), running off the bottom of the image.
FOREARM = {
    "Radius": ((0.458, 0.795), (0.470, 1.08), 0.088),
    "Ulna": ((0.578, 0.802), (0.572, 1.08), 0.056),
}
HAND_SCALE = 1.15  # the unit layout above, enlarged to fill the frame like a real hand X-ray
SEXES = ("남", "여")  # male, female, as the real meta file writes them


@dataclass
class Pose:
    scale: float
    angle: float
    shift: tuple[float, float]
    spread: np.ndarray  # per finger, degrees
    flex: np.ndarray  # per finger and joint, degrees
    bone: float
    tissue: float
    background: float
    noise: float
    ring: int | None  # finger index wearing a ring
    implant: bool
    width: float = 1.0  # finger and metacarpal widths, times the layout's


def _capsule(p0: np.ndarray, p1: np.ndarray, width: float, points: int = 10) -> np.ndarray:
    """A bone-like outline from p0 to p1: wider heads, narrower shaft, rounded ends."""
    axis = p1 - p0
    length = float(np.hypot(*axis)) or 1e-6
    u = axis / length
    n = np.array([-u[1], u[0]])
    t = np.linspace(0.0, 1.0, points)
    half = 0.5 * width * (0.72 + 0.28 * np.abs(2 * t - 1) ** 2)
    left = p0 + np.outer(t * length, u) + np.outer(half, n)
    right = p0 + np.outer(t * length, u) - np.outer(half, n)
    cap_angles = np.linspace(0, math.pi, 7)[1:-1]
    tip = p1 + np.outer(np.sin(cap_angles) * 0.45 * width, u) + np.outer(np.cos(cap_angles) * half[-1], n)
    base = p0 - np.outer(np.sin(cap_angles) * 0.45 * width, u) - np.outer(np.cos(cap_angles) * half[0], n)
    return np.concatenate([left, tip, right[::-1], base])


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float, jitter: np.ndarray) -> np.ndarray:
    a = np.linspace(0, 2 * math.pi, len(jitter), endpoint=False)
    r = 1.0 + jitter
    pts = np.stack([rx * r * np.cos(a), ry * r * np.sin(a)], axis=1)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return pts @ np.array([[c, s], [-s, c]]) + np.array([cx, cy])


def hand_bones(pose: Pose, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bone outlines of a right hand in unit coordinates (before the global pose)."""
    bones: dict[str, np.ndarray] = {}
    for f, (classes, base, angle, lengths, widths) in enumerate(FINGERS):
        point = np.array(base, dtype=np.float64)
        direction = angle + pose.spread[f]
        for j, (name, length, width) in enumerate(zip(classes, lengths, widths, strict=True)):
            if j:
                direction += pose.flex[f, j]
            rad = math.radians(direction)
            end = point + length * np.array([math.sin(rad), -math.cos(rad)])
            bones[name] = _capsule(point, end, width * pose.width * pose.scale**0.2)
            point = end + JOINT_GAP * np.array([math.sin(rad), -math.cos(rad)])
    for name, (cx, cy, rx, ry, ang) in CARPALS.items():
        jitter = rng.normal(0, 0.04, 18)
        bones[name] = _ellipse(cx + rng.normal(0, 0.002), cy + rng.normal(0, 0.002), rx, ry, ang, jitter)
    for name, (top, bottom, width) in FOREARM.items():
        bones[name] = _capsule(np.array(bottom), np.array(top), width, points=8)
    return bones


def _transform(points: np.ndarray, pose: Pose, mirror: bool, size: int, overhang: float = 0.0) -> np.ndarray:
    """Unit outline -> pixel points, clipped to the image (``overhang``: allowed to run on past the bottom edge by up
    to this fraction of the size)."""
    centre = np.array([0.5, 0.62])
    c, s = math.cos(math.radians(pose.angle)), math.sin(math.radians(pose.angle))
    pts = (points - centre) * (pose.scale * HAND_SCALE) @ np.array([[c, s], [-s, c]]) + centre + np.array(pose.shift)
    if mirror:
        pts[:, 0] = 1.0 - pts[:, 0]
    pts = np.rint(pts * (size - 1))
    if overhang:
        pts[:, 1] = np.clip(pts[:, 1], 0, size - 1 + round(overhang * size))
        pts[:, 0] = np.clip(pts[:, 0], 0, size - 1)
        return pts.astype(np.int32)
    return np.clip(pts, 0, size - 1).astype(np.int32)


def _patient_pose(rng: np.random.Generator, male: bool) -> Pose:
    return Pose(
        scale=float(rng.uniform(0.92, 1.04) if male else rng.uniform(0.84, 0.96)),
        angle=float(rng.normal(0, 7)),
        shift=(float(rng.normal(0, 0.02)), float(rng.normal(0, 0.015))),
        spread=rng.normal(0, 3.5, len(FINGERS)),
        flex=rng.normal(0, 4.0, (len(FINGERS), 4)),
        bone=float(rng.uniform(150, 215)),
        tissue=float(rng.uniform(45, 85)),
        background=float(rng.uniform(5, 30)),
        noise=float(rng.uniform(3, 9)),
        ring=int(rng.integers(1, 5)) if rng.random() < 0.15 else None,
        implant=bool(rng.random() < 0.05),
    )


def _hand_variant(pose: Pose, rng: np.random.Generator) -> Pose:
    """The other hand of the same patient: same build, slightly different placement."""
    return Pose(
        scale=pose.scale * float(rng.uniform(0.98, 1.02)),
        angle=pose.angle + float(rng.normal(0, 3)),
        shift=(pose.shift[0] + float(rng.normal(0, 0.01)), pose.shift[1] + float(rng.normal(0, 0.01))),
        spread=pose.spread + rng.normal(0, 1.5, len(FINGERS)),
        flex=pose.flex + rng.normal(0, 2.0, pose.flex.shape),
        bone=pose.bone * float(rng.uniform(0.95, 1.05)),
        tissue=pose.tissue,
        background=pose.background,
        noise=pose.noise,
        ring=pose.ring,
        implant=pose.implant and rng.random() < 0.5,
        width=pose.width,
    )


def render(bones: dict[str, np.ndarray], pose: Pose, size: int, rng: np.random.Generator) -> np.ndarray:
    """An X-ray-like grey image (H, W, 3) uint8 of the bones (pixel coordinates)."""
    scale = size / 512.0
    tissue = np.zeros((size, size), np.uint8)
    # Soft tissue: a thick band along each finger, the palm and the forearm.
    for chain in FINGERS:
        pts = np.concatenate([bones[c].mean(axis=0, keepdims=True) for c in chain[0]]).astype(np.int32)
        width = int(max(3, 2.3 * np.ptp(bones[chain[0][-1]][:, 0]).clip(min=1) * 0.9))
        cv2.polylines(tissue, [pts], False, 255, thickness=width)
    palm = [
        b
        for name, b in bones.items()
        if name in CARPALS or name in FOREARM or name.endswith(("-3", "-7", "-11", "-15", "-19"))
    ]
    cv2.fillPoly(tissue, [cv2.convexHull(np.concatenate(palm))], 255)
    tissue = cv2.GaussianBlur(tissue, (0, 0), 3.0 * scale)

    overlap = np.zeros((size, size), np.float32)
    for points in bones.values():
        x, y, w, h = cv2.boundingRect(points)
        roi = np.zeros((h, w), np.uint8)
        cv2.fillPoly(roi, [points - np.array([x, y], dtype=np.int32)], 1)
        overlap[y : y + h, x : x + w] += roi
        # Cortex: the bone's outline is denser than its inside.
        cv2.polylines(overlap, [points], True, 0.35, thickness=max(1, int(round(1.5 * scale))))
    bone_signal = 1.0 - np.exp(-1.1 * overlap)

    image = pose.background + pose.tissue * (tissue.astype(np.float32) / 255.0) + pose.bone * bone_signal
    if pose.ring is not None:  # a ring round a proximal phalanx: bright, unlabelled
        chain = FINGERS[pose.ring][0]
        ring = bones[chain[1]]
        cx, cy = ring.mean(axis=0)
        cv2.ellipse(image, (int(cx), int(cy)), (int(9 * scale), int(4 * scale)), 0, 0, 360, 245.0, -1)
    if pose.implant:  # a wrist plate over the radius
        top = bones["Radius"].min(axis=0)
        x0, y0 = int(top[0] + 6 * scale), int(top[1] + 25 * scale)
        cv2.rectangle(image, (x0, y0), (x0 + int(14 * scale), y0 + int(60 * scale)), 250.0, -1)
    image = cv2.GaussianBlur(image, (0, 0), 0.8 * scale)
    image += rng.normal(0.0, pose.noise, image.shape).astype(np.float32)
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return cv2.merge([grey, grey, grey])


def _annotation_json(filename: str, bones: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
    annotations = [
        {
            "id": f"{rng.integers(16**8):08x}-{rng.integers(16**4):04x}",
            "type": "poly_seg",
            "attributes": {},
            "points": points.tolist(),
            "label": name,
        }
        for name, points in ((c, bones[c]) for c in HANDBONE_CLASSES)
    ]
    return {
        "filename": filename,
        "metadata": {"synthetic": True},
        "attributes": {},
        "last_workers": {},
        "annotations": annotations,
    }


def _write_meta(path: Path, rows: list[tuple[int, int, str, float, float]]) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    # The real file has these Korean headers, a stray "_x0008_" before each sex value, and a sixth column with
    # no header and (nearly) no values, which pandas reads as "Unnamed: 5".
    sheet.append(["ID", "나이", "성별", "체중(몸무게)", "키(신장)", None])
    for n, (pid, age, sex, weight, height) in enumerate(rows):
        sheet.append([pid, age, f"_x0008_{sex}", weight, height, " " if n == 0 else None])
    with atomic_write(path, "wb") as f:
        book.save(f)


def _write_label(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


@SYNTH_KINDS.register("handbone", description="hand X-rays, 29 bones (the hand-bone competition's layout)")
def write_handbone(
    request: SynthRequest,
    *,
    contrast: float = 1.0,
    noise: float = 1.0,
    bone_width: float = 1.0,
    aspect: float = 1.0,
    forearm_out: float = 0.0,
) -> str:
    """The hand-bone layout into ``request.data`` (test labels into ``request.gt``); returns a one-line summary.
    Variants (the defaults give the standard data exactly): ``contrast`` scales the bones' brightness over the soft
    tissue, ``noise`` the noise, ``bone_width`` the fingers' and metacarpals' widths; ``aspect`` < 1 crops each image
    to a portrait ``size * aspect`` x ``size`` (width x height); ``forearm_out`` > 0 lets the Radius and Ulna polygons
    run on past the bottom edge by up to that fraction of the size, as annotators of real X-rays draw them (the
    image is the same)."""
    if not 0.3 <= aspect <= 1.0:
        raise CompkitError("aspect", f"must be within 0.3..1 (portrait crops of the square image), got {aspect}")
    if not 0.0 <= forearm_out <= 1.0:
        raise CompkitError("forearm_out", f"must be within 0..1 (a fraction of the image size), got {forearm_out}")
    data, gt, size, seed = request.data, request.gt, request.size, request.seed
    patients, test_patients = request.patients, request.test_patients
    rng = np.random.default_rng(seed)
    total = request.total
    ids = rng.permutation(np.arange(1, total + 1))  # test patients interleave with train ones, as in the real data
    test_ids = set(ids[:test_patients].tolist())
    meta_rows = []
    task = request.progress.add_task("synthesising hands", total=total)
    for pid in range(1, total + 1):
        prng = np.random.default_rng([seed, pid])
        sex = SEXES[int(prng.integers(2))]
        male = sex == "남"
        height = float(np.round(prng.normal(174 if male else 161, 6), 1))
        weight = float(np.round(prng.normal(72 if male else 57, 9), 1))
        meta_rows.append((pid, int(prng.integers(20, 71)), sex, weight, height))

        split = "test" if pid in test_ids else "train"
        folder = f"ID{pid:03d}"
        stamp = 1661130000000 + pid * 100000 + int(prng.integers(0, 50000))
        suffixed = prng.random() < 0.1  # a few real file names end in _R / _L
        pose = _patient_pose(prng, male)
        if (contrast, noise, bone_width) != (1.0, 1.0, 1.0):
            pose.bone, pose.noise, pose.width = pose.bone * contrast, pose.noise * noise, bone_width
        for hand, mirror in (("R", False), ("L", True)):
            hand_pose = pose if hand == "R" else _hand_variant(pose, prng)
            name = f"image{stamp + (0 if hand == 'R' else 7)}{'_' + hand if suffixed else ''}.png"
            unit = hand_bones(hand_pose, prng)
            bones = {k: _transform(v, hand_pose, mirror, size) for k, v in unit.items()}
            image = render(bones, hand_pose, size, prng)
            if forearm_out:  # labelled past the frame; rendered (above) within it
                bones = {**bones, **{k: _transform(unit[k], hand_pose, mirror, size, forearm_out) for k in FOREARM}}
            if aspect != 1.0:  # a portrait crop of the middle columns; outlines keep their pixel coordinates in it
                left = (size - round(size * aspect)) // 2
                image = np.ascontiguousarray(image[:, left : left + round(size * aspect)])
                bones = {k: v - np.array([left, 0], dtype=v.dtype) for k, v in bones.items()}
            write_png(data / split / "DCM" / folder / name, image)
            labels = _annotation_json(name, bones, prng)
            label_root = data / "train" if split == "train" else gt
            _write_label(label_root / "outputs_json" / folder / f"{Path(name).stem}.json", labels)
        request.progress.advance(task)
    _write_meta(data / "meta_data.xlsx", meta_rows)
    return f"{2 * patients} train images, {2 * test_patients} test images (hand bones, 29 classes)"
