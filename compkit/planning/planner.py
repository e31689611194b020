"""Planning: a recipe fitted to a dataset's fingerprint, this machine (a short measured probe) and a time budget.

nnU-Net's idea, in compkit's terms: the fingerprint (:mod:`compkit.planning.fingerprint`) decides the input size (the
smallest structure should keep :data:`MIN_STRUCTURE_PIXELS` pixels, the thinnest :data:`MIN_WIDTH_PIXELS` of width;
patches at that size where whole images do not fit the budget), the augmentation (flips only where no class is
side-specific, rotation from the spread of orientations, intensity changes for X-rays) and the loss weights; a few
timed training steps of a few candidate models on this machine decide the model and batch size; the budget decides
the epochs, the validation interval and the TTA. Every decision comes with a line saying why; the result is an
ordinary recipe that ``extends`` a base recipe, so people can read and edit it.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console

from compkit.data import open_dataset
from compkit.data.splits import load_splits, splits_path
from compkit.planning.fingerprint import fingerprint_of
from compkit.pretrained.weights import hub_encoder_weights, locate, weights_cache
from compkit.training.device import resolve_device
from compkit.training.recipe import ModelConfig, Recipe, load_recipe
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError
from compkit.util.fileio import atomic_write

MIN_STRUCTURE_PIXELS = 64  # the smallest class's mean area at the training size should stay above this
# The thinnest class's median structure width must stay this wide at the training scale: thinner, a vessel or a
# fracture line vanishes in the downsampling (DRIVE at 64 px: pixel F1 0.40). The size never gives way below it:
# the model trains on patches instead.
MIN_WIDTH_PIXELS = 2.0
MIN_PATCH = 128  # px: smaller patches see too little context (and the encoder's deepest features are 4 px)
STEPS_PER_EPOCH = 16  # patches: each image is drawn often enough per epoch (train.repeats) for this many steps
RARE_FRACTION = 0.01  # a class covering less of the image than this gets foreground-biased patches
FOREGROUND_SHARE = 0.33  # of the patches, centred on a labelled structure (nnU-Net's oversampling)
# Optimizer steps per fold below which the model is undertrained: the size gives way first. Measured on the demo's
# hand bones: 400 steps at 288 px reached validation dice 0.69-0.72 where `tiny` (720 steps at 192 px) reaches 0.92.
MIN_STEPS = 600
TARGET_STEPS = 700  # a larger candidate model is only worth it if it still gets this many steps per fold
WHOLE_IMAGE_LIMIT = {"cpu": 512, "cuda": 1024}  # above this the model trains on crops
# Above this it predicts by sliding window. A forward pass needs a fraction of a training step's memory, and one whole
# image costs less than overlapping windows over it (DRIVE at 576 px: 4 windows of 512 px, 3x the pixels).
PREDICT_WHOLE_LIMIT = {"cpu": 1024, "cuda": 1024}
PROBE_SECONDS = 3.0  # each candidate is timed for at least this long
CPU_BATCH = 2  # batch norm needs two images; on a CPU more, smaller steps beat larger batches
SIZE_STEP = 32  # input sizes are multiples of this (encoders downsample by 32)
# The probe leaves out data loading, augmentation and the epoch's bookkeeping. Measured on the thin hand bones at
# 320 px on 2 CPU cores: training ran at 0.79x the probe's speed, validation (prediction, dice and loss per class at
# full size) at 0.6x its forward passes, and each epoch spent about 0.2 s saving checkpoints and results.csv.
SAFETY = 0.8
VALIDATION_SHARE = 0.6
EPOCH_OVERHEAD_S = 0.3
VALIDATIONS = 10  # validations per fold: enough to keep the best checkpoint, few enough not to eat the training time
# ... and at most this share of the fold's time (DRIVE: 10 validations of 10 images at 576 px took half the fold).
VALIDATION_TIME_SHARE = 0.15
FIXED_OVERHEAD_S = 15.0  # caches, process start, ensembling and submission
BASE_RECIPE = "tiny"
PLAN_NAME = "plan"  # `compkit train --recipe plan` plans before training

# The candidate models the probe times: light decoders (small data, CPU), encoders of growing capacity.
LIGHT_DECODER = [128, 64, 32, 16, 16]
CANDIDATES = (
    {"arch": "Unet", "encoder": "tu-regnety_002", "params": {"decoder_channels": LIGHT_DECODER}},
    {"arch": "Unet", "encoder": "tu-regnety_004", "params": {"decoder_channels": LIGHT_DECODER}},
    {"arch": "Unet", "encoder": "resnet18", "params": {"decoder_channels": LIGHT_DECODER}},
)
# On a GPU: the shipped GPU recipes' models (UNet++ as in the hand-bone reports), smp's default decoders.
GPU_CANDIDATES = (
    {"arch": "Unet", "encoder": "resnet34", "params": {}},
    {"arch": "UnetPlusPlus", "encoder": "resnet34", "params": {}},
    {"arch": "UnetPlusPlus", "encoder": "efficientnet-b5", "params": {}},
    {"arch": "UnetPlusPlus", "encoder": "tu-hrnet_w64", "params": {}},
)
PRETRAINED_LR = (
    1.0e-3  # an ImageNet encoder is fine-tuned, not learnt: the GPU recipes' rate (tiny's 5e-3 is for scratch)
)


def parse_budget(text: str | float | int) -> float:
    """``10m``, ``6h``, ``90s``, ``1h30m`` or a number of seconds -> seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|m|min|s)?", text.strip().lower())
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(h|min|m|s)?", "", text.strip().lower()).strip():
            raise CompkitError("--budget", f"{text!r} is not a duration such as 10m, 6h, 90s or 1h30m")
        unit = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0, "": 1.0}
        seconds = sum(float(n) * unit[u] for n, u in parts)
    if seconds <= 0:
        raise CompkitError("--budget", f"must be more than 0 seconds, got {text!r}")
    return seconds


def parse_memory(text: str | None) -> int | None:
    """``24GB``, ``512MB``, ``24G`` -> bytes (None: None)."""
    if text is None:
        return None
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not found:
        raise CompkitError("--memory", f"{text!r} is not a memory size such as 24GB or 512MB")
    return int(float(found.group(1)) * 1024 ** " kmgt".index(found.group(2) or " "))


def describe_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _gb(n: float) -> str:
    if n < 2**20:
        return "under 1 MB"
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


@dataclass
class Probe:
    """A candidate model timed on this machine: training images per second and peak memory per image."""

    arch: str
    encoder: str
    params: dict[str, Any]
    size: int
    batch: int
    images_per_second: float
    peak_bytes: int
    parameters: int
    predict_images_per_second: float = 0.0  # forward passes alone (prediction and validation)

    def speed_at(self, size: int) -> float:
        """Throughput at another input size: the work grows with the pixel count."""
        return self.images_per_second * (self.size / size) ** 2

    def predict_speed_at(self, size: int) -> float:
        return self.predict_images_per_second * (self.size / size) ** 2

    def memory_at(self, size: int, batch: int) -> float:
        return self.peak_bytes * (size / self.size) ** 2 * batch / self.batch

    @property
    def label(self) -> str:
        return f"{self.arch}/{self.encoder}"


@dataclass
class Plan:
    recipe: dict[str, Any]  # what the plan changes of the base recipe (with ``extends``)
    reasons: list[str]
    probes: list[Probe] = field(default_factory=list)
    budget_s: float = 0.0

    def to_yaml(self) -> str:
        header = "".join(f"# {line}\n" for line in ["Planned by `compkit plan`: each line says why.", *self.reasons])
        return header + yaml.safe_dump(self.recipe, sort_keys=False, allow_unicode=True, width=1000)


class SavedForBackward:
    """Counts the bytes autograd keeps for backward during a forward pass (the activations), each storage once.

    The CPU allocator keeps no peak statistics, and the process's memory growth reads about 0 once freed memory is
    reused; what a training step holds at its peak (before backward frees it) is what autograd saved."""

    def __init__(self, *already_counted: torch.Tensor) -> None:
        self._storages = {t.untyped_storage().data_ptr() for t in already_counted}
        self.bytes = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._storages:
            self._storages.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def probe_model(
    candidate: dict[str, Any], classes: int, size: int, batch: int, device: torch.device, steps: int = 3
) -> Probe:
    """Time ``steps`` training steps (after one warm-up step) of a randomly initialised candidate on random data."""
    from compkit.training.losses import create_loss
    from compkit.training.models import create_model

    torch.manual_seed(0)
    model = create_model(ModelConfig(family="smp", encoder_weights=None, **candidate), classes, pretrained=False).to(
        device
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = create_loss({"bce": 0.5, "dice": 0.5}).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = (torch.rand(batch, classes, size, size, device=device) > 0.9).float()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            logits = model(x)
        loss = criterion(logits.float(), y)
        loss.backward()
        optimizer.step()

    def timed(work) -> float:
        """Seconds ``work`` takes on the device (CUDA runs asynchronously: synchronise around it)."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - began

    model.train()
    parameters = list(model.parameters())
    activations = SavedForBackward(x, y, *parameters)
    with activations.hooks():
        step()  # warm-up: allocations, oneDNN primitives, cudnn autotuning
    durations = []
    probe_started = time.perf_counter()
    # The median step of at least `steps` and at least PROBE_SECONDS (at most 4x `steps`): one slow step on a busy
    # machine must not decide the plan.
    while len(durations) < steps or (
        time.perf_counter() - probe_started < PROBE_SECONDS and len(durations) < 4 * steps
    ):
        durations.append(timed(step))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:  # what a step holds at most: weights, gradients, optimizer state, the batch and the saved activations
        state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        peak = 2 * _bytes(parameters) + _bytes(state) + _bytes([x, y]) + activations.bytes
    seconds = float(sorted(durations)[len(durations) // 2])
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
        timed(lambda: model(x))  # warm-up: eval mode takes other kernels
        forwards = [timed(lambda: model(x)) for _ in range(steps)]
    forward_seconds = float(sorted(forwards)[len(forwards) // 2])
    return Probe(
        candidate["arch"],
        candidate["encoder"],
        dict(candidate.get("params", {})),
        size,
        batch,
        batch / seconds,
        peak,
        sum(p.numel() for p in parameters),
        batch / forward_seconds,
    )


def _round_size(size: float) -> int:
    return max(SIZE_STEP * 2, int(math.ceil(size / SIZE_STEP)) * SIZE_STEP)


SIDE_EVIDENCE_IMAGES = 8  # a class seen in fewer images says nothing about sides


def _specific(stats: dict[str, Any], axis: str, images: int) -> list[str]:
    """Classes that always lie on one side along ``axis`` (x: left/right, y: top/bottom): a flip would make them lie."""
    found = []
    for name, s in stats.items():
        if s["frequency"] < 0.2 or s["frequency"] * images < SIDE_EVIDENCE_IMAGES:
            continue
        offset = abs(s[f"centroid_{axis}_mean"] - 0.5)
        if offset > 0.1 and offset > 2 * s[f"centroid_{axis}_std"]:
            found.append(name)
    return found


def fold_sizes(data: Path, dataset_size: int, folds: int | None, splits_file: str | None) -> tuple[int, int, int]:
    """(folds, training images per fold, validation images per fold) from the splits file, else from ``folds``."""
    if folds is None and splits_path(data, splits_file).is_file():
        split = load_splits(data, splits_file)["folds"]
        train = max(len(f["train"]) for f in split)
        return len(split), train, max(len(f["val"]) for f in split)
    folds = folds or 2
    if folds < 2:
        raise CompkitError("--folds", f"must be at least 2, got {folds}")
    val = math.ceil(dataset_size / folds)
    return folds, dataset_size - val, val


@dataclass(frozen=True)
class PlanMachine:
    """The machine a plan is for: ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``) and its ``memory`` (``24GB``,
    ``512MB``; None: what the device has)."""

    device: str = "auto"
    memory: str | None = None


@dataclass(frozen=True)
class _InputSize:
    """The planned image size; the patch it trains on (random crops at that size, each image drawn ``repeats`` times
    per epoch, some centred on a rare class's structures) and the window it predicts in, where it does not train or
    predict whole images."""

    size: int
    window: int | None = None
    crop: int | None = None
    repeats: int = 1
    foreground: bool = False

    @property
    def train_size(self) -> int:
        return self.crop or self.size


@dataclass(frozen=True)
class _Schedule:
    epochs: int
    val_every: int
    per_fold_s: float  # each fold's training seconds: train.time_budget


def _device_memory(device: torch.device) -> int:
    """What ``device`` has: a GPU's own memory, else this machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _test_images(data: Path, dataset: Any) -> int:
    try:
        return len(open_dataset(data, "test")) if dataset.has_split("test") else 0
    except CompkitError:
        return 0


@dataclass
class _Planner:
    """What every phase of one plan shares: the dataset's fingerprint and folds, the machine, the budget, the fixed
    costs so far, and the reasons (one per decision, in the order decided). Each method decides one thing."""

    base: str
    device_setting: str  # the recipe's train.device: "auto" stays "auto"
    device: torch.device
    budget_s: float
    started: float  # time.time() when planning began: the time planning takes counts among the fixed costs
    fp: dict[str, Any]
    n_folds: int
    n_train: int  # training images per fold
    n_val: int  # validation images per fold
    test_images: int
    memory_bytes: int
    memory_note: str  # where memory_bytes comes from
    reasons: list[str] = field(default_factory=list)
    fixed: float = 0.0  # seconds of the budget no fold trains in, as of the last refresh_fixed()

    @classmethod
    def open(
        cls,
        data: str | Path,
        budget: str | float,
        machine: PlanMachine,
        folds: int | None,
        base: str,
        console: Console,
        splits: str | None,
    ) -> _Planner:
        """Parse the arguments, fingerprint the dataset and count its folds (the arguments are checked first)."""
        started = time.time()
        budget_s = parse_budget(budget)
        memory_bytes = parse_memory(machine.memory)
        device = resolve_device(machine.device, "--device")
        base_recipe = load_recipe(base)
        data = Path(data)
        dataset = open_dataset(data, "train")
        test_images = _test_images(data, dataset)
        with transient_progress(console) as progress:
            fp = fingerprint_of(dataset, progress=progress)
        n_folds, n_train, n_val = fold_sizes(data, len(dataset), folds, splits or base_recipe.data.splits)
        memory_note = "--memory" if memory_bytes is not None else "this machine's"
        if memory_bytes is None:
            memory_bytes = _device_memory(device)
        device_setting = str(device) if machine.device != "auto" else "auto"
        return cls(
            base,
            device_setting,
            device,
            budget_s,
            started,
            fp,
            n_folds,
            n_train,
            n_val,
            test_images,
            memory_bytes,
            memory_note,
        )

    @property
    def kind(self) -> str:
        return self.device.type

    @property
    def classes(self) -> int:
        return len(self.fp["classes"])

    @property
    def whole_image_limit(self) -> int:
        return WHOLE_IMAGE_LIMIT[self.kind]

    @property
    def smallest_class(self) -> tuple[str, float, int]:
        """The smallest class: its name, its mean area in pixels at the original size, and that size."""
        rec = self.fp["recommendation"]
        return rec["smallest_class"], max(float(rec["smallest_class_area"]), 1e-6), int(rec["original_size"])

    def smallest_area_at(self, size: int) -> float:
        _, area, original = self.smallest_class
        return area * (size / original) ** 2

    def say(self, reason: str) -> None:
        self.reasons.append(reason)

    def refresh_fixed(self) -> None:
        """The fixed costs as of now: caches, process start, ensembling, 5 % of the budget and planning so far."""
        self.fixed = FIXED_OVERHEAD_S + 0.05 * self.budget_s + (time.time() - self.started)

    @property
    def candidates(self) -> tuple[dict[str, Any], ...]:
        """The models to time: light U-Nets on a CPU, the GPU recipes' models on a GPU."""
        return CANDIDATES if self.kind == "cpu" else GPU_CANDIDATES

    def cached_weights(self, encoder: str) -> tuple[bool, str | None]:
        """Whether ``encoder``'s ImageNet weights are in the weights cache, and what `compkit weights pull` takes
        to fetch them (None: nobody publishes any)."""
        try:
            weights = hub_encoder_weights(encoder, True)
        except CompkitError:
            return False, None
        return locate(weights, weights_cache()) is not None, weights.reference

    def probe(self, candidate: dict[str, Any], size: int) -> Probe:
        return probe_model(candidate, self.classes, size, 2 if self.kind == "cpu" else 8, self.device)

    def steps_at(self, p: Probe, size: int, batch: int, train_size: int | None = None) -> float:
        """Optimizer steps per fold that ``p`` gets at ``size`` and ``batch``, training on ``train_size`` px (default:
        whole images, or the whole-image limit): each fold's share of the budget less the fixed costs (as of the last
        :meth:`refresh_fixed`) and VALIDATIONS validations of whole images, spent training."""
        train_size = train_size or min(size, self.whole_image_limit)
        speed = p.speed_at(train_size) * SAFETY
        per_fold = (self.budget_s - self.fixed) / self.n_folds
        validation_s = self.validations(p, size, per_fold) * self.validation_seconds(p, size)
        per_image_s = 1 / speed + EPOCH_OVERHEAD_S / max(self.n_train, 1)  # an epoch's overhead, shared by its images
        return max(0.0, per_fold - validation_s) / per_image_s / batch

    def validation_seconds(self, p: Probe, size: int) -> float:
        """One validation: the fold's validation images predicted whole at ``size``."""
        return self.n_val / (p.predict_speed_at(size) * VALIDATION_SHARE)

    def validations(self, p: Probe, size: int, per_fold: float) -> int:
        """Validations per fold: VALIDATIONS, fewer where they would take more than VALIDATION_TIME_SHARE of it."""
        affordable = int(VALIDATION_TIME_SHARE * per_fold / self.validation_seconds(p, size))
        return max(1, min(VALIDATIONS, affordable))

    def say_data_and_budget(self) -> None:
        fp, classes = self.fp, self.classes
        sizes = ", ".join(f"{s} x{n}" for s, n in fp["image_sizes"].items())
        self.say(
            f"data: {fp['images']} training images ({sizes}), {classes} class{'es' if classes > 1 else ''}; "
            f"{self.n_folds} folds of {self.n_train} training / {self.n_val} validation images, "
            f"{self.test_images} test images"
        )
        self.say(
            f"budget: {describe_seconds(self.budget_s)} for the whole pipeline on {self.kind} "
            f"({_gb(self.memory_bytes)} {self.memory_note} memory)"
        )

    @property
    def thinnest_class(self) -> tuple[str, float] | None:
        """The class of the thinnest structures (lowest median width, px at the original size), or None."""
        widths = {
            name: float(s["width_median"])
            for name, s in self.fp["per_class"].items()
            if s.get("frequency") and s.get("width_median")
        }
        if not widths:
            return None
        name = min(widths, key=widths.__getitem__)
        return name, widths[name]

    def width_floor(self) -> int:
        """The size below which the thinnest class's structures fall under MIN_WIDTH_PIXELS (at most the original)."""
        thinnest, original = self.thinnest_class, self.smallest_class[2]
        if thinnest is None:
            return 2 * SIZE_STEP
        return min(_round_size(original * MIN_WIDTH_PIXELS / thinnest[1]), _round_size(original))

    def area_size(self) -> int:
        """The size at which the smallest class keeps MIN_STRUCTURE_PIXELS of area (at most the original size)."""
        _, area, original = self.smallest_class
        return min(_round_size(original * math.sqrt(MIN_STRUCTURE_PIXELS / area)), _round_size(original))

    def needed_size(self) -> int:
        return max(self.area_size(), self.width_floor())

    def _width_note(self, size: int) -> str:
        thinnest = self.thinnest_class
        if thinnest is None:
            return ""
        name, width = thinnest
        original = self.smallest_class[2]
        return (
            f"{name}, the thinnest class, is {width:.1f} px wide (median) at {original} px and "
            f"{width * size / original:.1f} px at {size} px (at least {MIN_WIDTH_PIXELS:g} px wanted)"
        )

    def input_size(self, first: Probe, needed: int, floor: int) -> int:
        """``needed``, smaller (not below ``floor``, the width floor) while the lightest candidate (``first``) gets
        fewer than MIN_STEPS steps per fold on whole images."""
        size = needed
        while size - SIZE_STEP >= max(floor, 2 * SIZE_STEP) and self.steps_at(first, size, CPU_BATCH) < MIN_STEPS:
            size -= SIZE_STEP
        smallest, area, original = self.smallest_class
        at_size = self.smallest_area_at(size)
        area_note = (
            f"{smallest}, the smallest class, averages {area:.0f} px at {original} px and {at_size:.0f} px at "
            f"{size} px (at least {MIN_STRUCTURE_PIXELS} px wanted)"
        )
        width_note = self._width_note(size)
        if size < needed:
            self.say(
                f"input size {size} px (bound by the budget): {needed} px would keep the structures' area and width, "
                f"but the budget allows fewer than {MIN_STEPS} steps per fold there; {area_note}"
                + (f"; {width_note}" if width_note else "")
            )
        elif needed == floor and floor > self.area_size():
            capped = " (the original size: never upsampled)" if floor >= _round_size(original) else ""
            self.say(f"input size {size} px (bound by the structures' width{capped}): {width_note}; {area_note}")
        else:
            self.say(
                f"input size {size} px (bound by the smallest class's area): {area_note}"
                + (f"; {width_note}" if width_note else "")
            )
        return size

    def patches(self, first: Probe, size: int) -> _InputSize:
        """Whole images where they fit the device and the budget; else random patches at ``size``: the largest
        multiple of SIZE_STEP (at least MIN_PATCH) that gets MIN_STEPS steps per fold, each image drawn often enough
        for STEPS_PER_EPOCH steps per epoch, foreground-biased where a class is rare. Images larger than the device
        predicts whole predict in overlapping windows."""
        limit = self.whole_image_limit
        predict_limit = PREDICT_WHOLE_LIMIT[self.kind]
        window = predict_limit if size > predict_limit else None
        if size <= limit and self.steps_at(first, size, CPU_BATCH, size) >= MIN_STEPS:
            return _InputSize(size)
        crop = min(size - SIZE_STEP, limit)
        while crop - SIZE_STEP >= MIN_PATCH and self.steps_at(first, size, CPU_BATCH, crop) < MIN_STEPS:
            crop -= SIZE_STEP
        crop = max(crop, min(MIN_PATCH, size))
        if crop >= size:  # images no larger than the smallest patch: a patch would be the whole image
            return _InputSize(size, window)
        repeats = max(1, math.ceil(STEPS_PER_EPOCH * CPU_BATCH / max(self.n_train, 1)))
        smallest = self.smallest_class[0]
        fraction = self.smallest_area_at(size) / (size * size)
        foreground = fraction < RARE_FRACTION
        whole = self.steps_at(first, size, CPU_BATCH)  # whole images (or the whole-image limit)
        why = (
            f"whole {size} px images are too large for {self.kind} training"
            if size > limit
            else f"whole {size} px images get {whole:.0f} steps per fold in this budget ({MIN_STEPS} wanted) and the "
            "size cannot shrink without thinning the structures"
        )
        sampling = (
            f"{FOREGROUND_SHARE:.0%} of them centred on a labelled structure ({smallest} covers {fraction:.2%} of "
            f"the image, under {RARE_FRACTION:.0%})"
            if foreground
            else f"uniformly ({smallest} covers {fraction:.1%} of the image: no foreground bias needed)"
        )
        predicting = (
            f"predicts in overlapping {window} px windows (Gaussian-blended)"
            if window
            else f"predicts whole {size} px images (the network is fully convolutional)"
        )
        self.say(
            f"patches {crop} px: {why}; trains on random {crop} px crops of the {size} px images "
            f"({self.steps_at(first, size, CPU_BATCH, crop):.0f} steps per fold), each image {repeats}x per epoch, "
            f"sampled {sampling}; {predicting}"
        )
        return _InputSize(size, window, crop, repeats, foreground)

    def probe_candidates(self, first: Probe, inputs: _InputSize) -> list[Probe]:
        """The candidates timed at the training size (``first`` again if it was timed there)."""
        candidates = self.candidates
        lightest = first if first.size == inputs.train_size else self.probe(candidates[0], inputs.train_size)
        probes = [lightest]
        # Larger candidates are slower: only worth timing if the lightest has room.
        if self.steps_at(lightest, inputs.size, CPU_BATCH, inputs.train_size) >= TARGET_STEPS:
            probes += [self.probe(c, inputs.train_size) for c in candidates[1:]]
        else:
            self.say(
                f"larger candidates not probed: the lightest gets fewer than {TARGET_STEPS} steps per fold already"
            )
        for p in probes:
            self.say(
                f"probe: {p.label} ({p.parameters / 1e6:.1f} M parameters) at {p.size} px, batch {p.batch}: "
                f"{p.images_per_second:.1f} images/s training, {p.predict_images_per_second:.1f} predicting, "
                f"peak memory {_gb(p.peak_bytes)}"
            )
        return probes

    def choose_model(self, probes: list[Probe], inputs: _InputSize) -> Probe:
        """The largest candidate that still gets TARGET_STEPS steps per fold (among those whose ImageNet weights
        are cached, where any is: a pretrained encoder converges in a fraction of the steps), else the fastest."""
        size = inputs.size
        affordable = [p for p in probes if self.steps_at(p, size, CPU_BATCH, inputs.train_size) >= TARGET_STEPS]
        if not affordable:
            chosen = max(probes, key=lambda p: p.images_per_second)
            self.say(
                f"model {chosen.label}: the fastest candidate; none gets {TARGET_STEPS} optimizer steps per fold "
                "in this budget"
            )
            return chosen
        pretrained = [p for p in affordable if self.cached_weights(p.encoder)[0]]
        chosen = max(pretrained or affordable, key=lambda p: p.parameters)
        largest = max(affordable, key=lambda p: p.parameters)
        why = "the largest candidate" + (" with cached ImageNet weights" if pretrained else "")
        self.say(
            f"model {chosen.label}: {why} that still gets {TARGET_STEPS}+ optimizer steps per "
            f"fold ({self.steps_at(chosen, size, CPU_BATCH, inputs.train_size):.0f} at batch {CPU_BATCH})"
        )
        if largest.parameters > chosen.parameters:
            _, reference = self.cached_weights(largest.encoder)
            self.say(
                f"{largest.label} would also fit but its ImageNet weights are not in the weights cache: "
                f"`compkit weights pull {reference}`, then plan again"
            )
        return chosen

    def encoder_weights(self, chosen: Probe) -> str | None:
        """ImageNet weights where the cache has them (never a download: the plan must train offline), else from
        scratch with the command that would fill the cache."""
        cached, reference = self.cached_weights(chosen.encoder)
        if cached:
            self.say(
                f"encoder weights: ImageNet ({reference}, in the weights cache): fine-tuned at lr {PRETRAINED_LR:g}, "
                "converging in a fraction of the steps from scratch"
            )
            return "imagenet"
        if reference is None:
            self.say(f"encoder weights: none ({chosen.encoder} has no published pretrained weights)")
        else:
            self.say(
                f"encoder weights: none, from scratch: {chosen.encoder}'s ImageNet weights are not in the weights "
                f"cache (`compkit weights pull {reference}` fills it where there is network; then plan again)"
            )
        return None

    def batch_size(self, chosen: Probe, inputs: _InputSize) -> int:
        """As large as memory allows (60 % of it), but at least 8 steps per epoch. On a CPU the throughput per image
        barely grows with the batch, so the smallest batch norm allows (2) gives the most optimizer steps; the input
        size was chosen for that many steps (batch 4 halved the demo's 400 steps at 288 px)."""
        limit = CPU_BATCH if self.kind == "cpu" else 32
        train_size, drawn = inputs.train_size, self.n_train * inputs.repeats
        batch = 2  # batch norm needs two images
        for b in (4, 8, 16, 32):
            if b <= limit and chosen.memory_at(train_size, b) <= 0.6 * self.memory_bytes and drawn / b >= 8:
                batch = b
        cpu_note = "; on a CPU more steps beat larger batches" if self.kind == "cpu" else ""
        self.say(
            f"batch {batch}: {_gb(chosen.memory_at(train_size, batch))} estimated peak memory of "
            f"{_gb(self.memory_bytes)}; {math.ceil(drawn / batch)} steps per epoch" + cpu_note
        )
        return batch

    def side_specific_classes(self) -> dict[str, list[str]]:
        """Per axis (x, y), the classes a flip along it would misplace."""
        fp = self.fp
        return {"x": _specific(fp["per_class"], "x", fp["images"]), "y": _specific(fp["per_class"], "y", fp["images"])}

    def schedule(self, chosen: Probe, inputs: _InputSize, tta: str) -> _Schedule:
        """Epochs that fill each fold's share of the budget, less the fixed costs and the fold's prediction (out-of-fold
        and test images, ``tta``'s views of each), with VALIDATIONS validations per fold (fewer where they would take
        more than VALIDATION_TIME_SHARE of it)."""
        speed = chosen.speed_at(inputs.train_size) * SAFETY
        val_speed = chosen.predict_speed_at(inputs.size) * VALIDATION_SHARE
        views = {"none": 1, "hflip": 2, "vflip": 2, "d4": 8}[tta]
        predict_s = (self.n_val + self.test_images) * views / val_speed
        per_fold = max(1.0, (self.budget_s - self.fixed) / self.n_folds - predict_s)
        validations = self.validations(chosen, inputs.size, per_fold)
        validation_s = self.validation_seconds(chosen, inputs.size)
        train_epoch_s = self.n_train * inputs.repeats / speed + EPOCH_OVERHEAD_S
        epochs = max(1, min(1000, int(max(0.0, per_fold - validations * validation_s) / train_epoch_s)))
        val_every = max(1, round(epochs / validations))
        epoch_s = train_epoch_s + validation_s / val_every
        self.say(
            f"epochs {epochs} per fold x {self.n_folds} folds: {describe_seconds(per_fold)} per fold at "
            f"~{epoch_s:.1f} s per epoch ({speed:.1f} images/s, {SAFETY:.0%} of the probe), after "
            f"{describe_seconds(self.fixed)} of fixed costs and {describe_seconds(predict_s)} of prediction "
            "per fold"
        )
        share = "" if validations == VALIDATIONS else f", at most {VALIDATION_TIME_SHARE:.0%} of the fold's time"
        self.say(
            f"schedule onecycle over the {epochs} epochs, validating every {val_every} epoch(s) (~{validation_s:.0f} s "
            f"each{share}); train.time_budget {per_fold:.0f} s per fold stops training early (keeping the best "
            "checkpoint) if this machine is slower than probed"
        )
        return _Schedule(epochs, val_every, per_fold)

    def augmentation(self, flips: dict[str, list[str]], inputs: _InputSize) -> list[dict[str, Any]]:
        """From the data: flips where no class is side-specific, rotation, intensity; first the patch crop."""
        aug = [*self.flip_augmentation(flips), self.rotation_augmentation(), *self.intensity_augmentation()]
        if inputs.crop:
            crop = inputs.crop
            aug[:0] = [{"name": "RandomCrop", "height": crop, "width": crop, "pad_if_needed": True}]
            if inputs.foreground:  # a share of the crops on a labelled structure; the rest fall through to RandomCrop
                # The training mask stacks the labels over the ignore masks: only the labels' channels count.
                ignored = list(range(self.classes, 2 * self.classes))
                aug.insert(
                    0,
                    {
                        "name": "CropNonEmptyMaskIfExists",
                        "height": crop,
                        "width": crop,
                        "ignore_channels": ignored,
                        "p": FOREGROUND_SHARE,
                    },
                )
        return aug

    def flip_augmentation(self, flips: dict[str, list[str]]) -> list[dict[str, Any]]:
        aug: list[dict[str, Any]] = []
        if flips["x"]:
            self.say(f"no horizontal flip: {', '.join(flips['x'][:3])} always lie on one side")
        else:
            aug.append({"name": "HorizontalFlip", "p": 0.5})
            self.say(f"horizontal flip: no class seen in {SIDE_EVIDENCE_IMAGES}+ images keeps to the left or right")
        if flips["y"]:
            self.say(f"no vertical flip: {', '.join(flips['y'][:3])} always lie at the top or bottom")
        else:
            aug.append({"name": "VerticalFlip", "p": 0.5})
            self.say(f"vertical flip: no class seen in {SIDE_EVIDENCE_IMAGES}+ images keeps to the top or bottom")
        return aug

    def rotation_augmentation(self) -> dict[str, Any]:
        spread = self.fp.get("rotation_std", 0.0)
        rotation = int(min(30, max(10, round(2 * spread))))
        self.say(
            f"rotation up to {rotation} degrees (twice the {spread:.1f} degree spread of the labelled area's "
            "orientation, within 10..30), scale 0.9..1.1, shift 5 %"
        )
        return {
            "name": "Affine",
            "rotate": [-rotation, rotation],
            "scale": [0.9, 1.1],
            "translate_percent": [-0.05, 0.05],
            "p": 0.5,
        }

    def intensity_augmentation(self) -> list[dict[str, Any]]:
        if self.fp.get("grey_fraction", 0.0) >= 0.5:
            self.say("intensity: brightness, contrast and gamma (grey images, X-ray-like exposure varies)")
            return [
                {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
                {"name": "RandomGamma", "gamma_limit": [80, 120], "p": 0.3},
            ]
        self.say("intensity: mild brightness and contrast (colour images: colour carries meaning)")
        return [{"name": "RandomBrightnessContrast", "brightness_limit": 0.1, "contrast_limit": 0.1, "p": 0.5}]

    def dice_weight(self, size: int) -> float:
        """Small structures weigh more through dice: the loss is bce (1 - this) + dice (this)."""
        smallest = self.smallest_class[0]
        fraction = self.smallest_area_at(size) / (size * size)
        dice = 0.7 if fraction < 0.01 else 0.5
        self.say(
            f"loss bce {1 - dice:.1f} + dice {dice:.1f}: {smallest} covers {fraction:.2%} of the image"
            + (" (under 1 %: dice, which weighs every class alike, gets more weight)" if dice > 0.5 else "")
        )
        return dice

    def say_tta(self, tta: str, flips: dict[str, list[str]]) -> None:
        self.say(f"TTA {tta}: " + _tta_reason(tta, flips, self.budget_s))

    def recipe(
        self,
        inputs: _InputSize,
        chosen: Probe,
        batch: int,
        schedule: _Schedule,
        aug: list[dict[str, Any]],
        dice: float,
        tta: str,
        weights: str | None = None,
    ) -> dict[str, Any]:
        """The recipe the decisions make, extending the base recipe; checked to be a valid recipe."""
        model = {
            "family": "smp",
            "arch": chosen.arch,
            "encoder": chosen.encoder,
            "encoder_weights": weights,
            "params": chosen.params,
        }
        train = {
            "epochs": schedule.epochs,
            "batch_size": batch,
            "early_stop": None,
            "val_every": schedule.val_every,
            "repeats": inputs.repeats,
            "time_budget": round(schedule.per_fold_s, 1),
            "device": self.device_setting,
        }
        recipe: dict[str, Any] = {
            "name": PLAN_NAME,
            "extends": self.base,
            "data": {"image_size": inputs.size},
            "model": model,
            "loss": {"bce": round(1 - dice, 2), "dice": dice},
            "sched": {"name": "onecycle", "pct_start": 0.1},
            "aug": aug,
            "train": train,
            "infer": {"tta": tta, "window": inputs.window},
        }
        if weights is not None:
            recipe["optim"] = {"lr": min(PRETRAINED_LR, load_recipe(self.base).optim.lr)}
        if self.kind == "cuda":
            train["amp"] = True  # mixed precision: about twice the images per second on tensor cores
        Recipe.model_validate({k: v for k, v in recipe.items() if k != "extends"})  # the plan is a valid recipe
        return recipe


def plan_recipe(
    data: str | Path,
    budget: str | float = "10m",
    machine: PlanMachine | None = None,
    folds: int | None = None,
    base: str = BASE_RECIPE,
    console: Console | None = None,
    splits: str | None = None,
) -> Plan:
    """Plan a recipe for ``data`` on ``machine`` (default: this one, its own memory) within ``budget`` (the whole
    pipeline: training every fold, prediction with TTA, ensembling); returns the plan with one reason per decision.
    ``splits``: the splits file whose folds it plans for (default: the base recipe's, else the dataset's
    ``splits.json``); ``folds``: how many to assume when there is none."""
    planner = _Planner.open(data, budget, machine or PlanMachine(), folds, base, console or output_console(), splits)
    planner.say_data_and_budget()
    needed = planner.needed_size()
    planner.refresh_fixed()  # what the probes below see of each fold's share of the budget
    # A first probe of the lightest candidate says how many steps each size affords.
    first = planner.probe(planner.candidates[0], min(needed, planner.whole_image_limit))
    inputs = planner.patches(first, planner.input_size(first, needed, planner.width_floor()))
    probes = planner.probe_candidates(first, inputs)
    chosen = planner.choose_model(probes, inputs)
    weights = planner.encoder_weights(chosen)
    batch = planner.batch_size(chosen, inputs)
    planner.refresh_fixed()  # the epochs fill what is left once planning (the probes included) has taken its time
    flips = planner.side_specific_classes()
    tta = _choose_tta(flips, planner.budget_s)
    schedule = planner.schedule(chosen, inputs, tta)
    aug = planner.augmentation(flips, inputs)
    dice = planner.dice_weight(inputs.size)
    planner.say_tta(tta, flips)
    recipe = planner.recipe(inputs, chosen, batch, schedule, aug, dice, tta, weights)
    return Plan(recipe, planner.reasons, probes, planner.budget_s)


def _choose_tta(flips: dict[str, list[str]], budget_s: float) -> str:
    if not flips["x"] and not flips["y"] and budget_s >= 1800:
        return "d4"
    if not flips["x"]:
        return "hflip"
    return "vflip" if not flips["y"] else "none"


def _tta_reason(tta: str, flips: dict[str, list[str]], budget_s: float) -> str:
    if tta == "d4":
        return "flips and 90-degree turns are all label-preserving and the budget (30 min or more) pays for 8 views"
    if tta == "none":
        return "no flip preserves the labels"
    if not flips["x"] and not flips["y"]:
        return "2 views; d4 (8 views) needs a budget of 30 min or more"
    return "the only label-preserving flip"


def write_plan(plan: Plan, path: Path) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(plan.to_yaml())
    return path
