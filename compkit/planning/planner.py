"""Planning: a recipe fitted to a dataset's fingerprint, this machine (a short measured probe) and a time budget.

nnU-Net's idea, in compkit's terms: the fingerprint (:mod:`compkit.planning.fingerprint`) decides the input size (the
smallest structure must keep :data:`MIN_STRUCTURE_PIXELS` pixels), the augmentation (flips only where no class is
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
from rich.progress import Progress

from compkit.data import open_dataset
from compkit.data.splits import load_splits, splits_path
from compkit.training.device import resolve_device
from compkit.util.errors import CompkitError
from compkit.util.fileio import atomic_write
from compkit.planning.fingerprint import fingerprint_of
from compkit.training.recipe import ModelConfig, Recipe, load_recipe

MIN_STRUCTURE_PIXELS = 64  # the smallest class's mean area at the training size must stay above this
# Optimizer steps per fold below which the model is undertrained: the size gives way first. Measured on the demo's
# hand bones: 400 steps at 288 px reached validation dice 0.69-0.72 where `tiny` (720 steps at 192 px) reaches 0.92.
MIN_STEPS = 600
TARGET_STEPS = 700  # a larger candidate model is only worth it if it still gets this many steps per fold
WHOLE_IMAGE_LIMIT = {"cpu": 512, "cuda": 1024}  # above this the model trains on crops and predicts by sliding window
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


def probe_model(candidate: dict[str, Any], classes: int, size: int, batch: int, device: torch.device, steps: int = 3) -> Probe:
    """Time ``steps`` training steps (after one warm-up step) of a randomly initialised candidate on random data."""
    from compkit.training.losses import create_loss
    from compkit.training.models import create_model

    torch.manual_seed(0)
    model = create_model(ModelConfig(family="smp", encoder_weights=None, **candidate), classes, pretrained=False).to(device)
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
    while len(durations) < steps or (time.perf_counter() - probe_started < PROBE_SECONDS and len(durations) < 4 * steps):
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
    return Probe(candidate["arch"], candidate["encoder"], dict(candidate.get("params", {})), size, batch,
                 batch / seconds, peak, sum(p.numel() for p in parameters), batch / forward_seconds)


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


def plan_recipe(
    data: str | Path,
    budget: str | float = "10m",
    device: str = "auto",
    memory: str | None = None,
    folds: int | None = None,
    base: str = BASE_RECIPE,
    console: Console | None = None,
    splits: str | None = None,
) -> Plan:
    """Plan a recipe for ``data`` on this machine within ``budget`` (the whole pipeline: training every fold,
    prediction with TTA, ensembling); returns the plan with one reason per decision. ``splits``: the splits file
    whose folds it plans for (default: the base recipe's, else the dataset's ``splits.json``)."""
    console = console or Console()
    started = time.time()
    budget_s = parse_budget(budget)
    memory_bytes = parse_memory(memory)
    torch_device = resolve_device(device, "--device")
    kind = torch_device.type
    base_recipe = load_recipe(base)
    data = Path(data)
    dataset = open_dataset(data, "train")
    try:
        test_images = len(open_dataset(data, "test")) if dataset.has_split("test") else 0
    except CompkitError:
        test_images = 0
    with Progress(console=console, transient=True) as progress:
        fp = fingerprint_of(dataset, progress=progress)
    n_folds, n_train, n_val = fold_sizes(data, len(dataset), folds, splits or base_recipe.data.splits)
    classes = len(fp["classes"])
    reasons: list[str] = []
    say = reasons.append
    if memory_bytes is None:
        memory_bytes = torch.cuda.get_device_properties(torch_device).total_memory if kind == "cuda" else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        memory_note = "this machine's"
    else:
        memory_note = "--memory"
    say(f"data: {fp['images']} training images ({', '.join(f'{s} x{n}' for s, n in fp['image_sizes'].items())}), {classes} class{'es' if classes > 1 else ''}; "
        f"{n_folds} folds of {n_train} training / {n_val} validation images, {test_images} test images")
    say(f"budget: {describe_seconds(budget_s)} for the whole pipeline on {kind} ({_gb(memory_bytes)} {memory_note} memory)")

    # Input size: the smallest structure must keep MIN_STRUCTURE_PIXELS.
    rec = fp["recommendation"]
    original = int(rec["original_size"])
    smallest, area = rec["smallest_class"], max(float(rec["smallest_class_area"]), 1e-6)
    needed = min(_round_size(original * math.sqrt(MIN_STRUCTURE_PIXELS / area)), _round_size(original))
    # Per fold: the budget less fixed costs, less prediction (out-of-fold + test, with TTA) and ensembling.
    fixed = FIXED_OVERHEAD_S + 0.05 * budget_s + (time.time() - started)

    # A first probe of the lightest candidate says how many steps each size affords.
    probe_batch = 2 if kind == "cpu" else 8
    probe_size = min(needed, WHOLE_IMAGE_LIMIT[kind])
    first = probe_model(CANDIDATES[0], classes, probe_size, probe_batch, torch_device)

    def steps_at(p: Probe, size: int, batch: int) -> float:
        train_size = min(size, WHOLE_IMAGE_LIMIT[kind])
        speed = p.speed_at(train_size) * SAFETY
        per_fold = (budget_s - fixed) / n_folds
        epoch_s = n_train / speed + n_val / (p.predict_speed_at(size) * VALIDATION_SHARE) + EPOCH_OVERHEAD_S
        return max(0.0, per_fold / epoch_s) * math.ceil(n_train / batch)

    size = needed
    while size > 2 * SIZE_STEP and steps_at(first, size, CPU_BATCH) < MIN_STEPS:
        size -= SIZE_STEP
    at_size = area * (size / original) ** 2
    if size == needed:
        say(f"input size {size} px: {smallest}, the smallest class, averages {area:.0f} px at {original} px and "
            f"{at_size:.0f} px at {size} px (at least {MIN_STRUCTURE_PIXELS} px wanted)")
    else:
        say(f"input size {size} px: {smallest}, the smallest class, would need {needed} px to keep {MIN_STRUCTURE_PIXELS} px of area "
            f"(it has {at_size:.0f} px at {size} px), but the budget allows fewer than {MIN_STEPS} steps per fold there")
    window = None
    if size > WHOLE_IMAGE_LIMIT[kind]:
        window = WHOLE_IMAGE_LIMIT[kind]
        say(f"sliding window {window} px: images of {size} px train as random {window} px crops and predict in overlapping "
            f"{window} px windows (whole {size} px images are too large for {kind} training)")
    train_size = window or size

    # Model: every candidate timed at the chosen size; the largest that still gets TARGET_STEPS, else the fastest.
    probes = [first if first.size == train_size else probe_model(CANDIDATES[0], classes, train_size, probe_batch, torch_device)]
    if steps_at(probes[0], size, CPU_BATCH) >= TARGET_STEPS:  # larger candidates are slower: only worth timing if the lightest has room
        probes += [probe_model(c, classes, train_size, probe_batch, torch_device) for c in CANDIDATES[1:]]
    else:
        say(f"larger candidates not probed: the lightest gets fewer than {TARGET_STEPS} steps per fold already")
    for p in probes:
        say(f"probe: {p.label} ({p.parameters / 1e6:.1f} M parameters) at {p.size} px, batch {p.batch}: "
            f"{p.images_per_second:.1f} images/s training, {p.predict_images_per_second:.1f} predicting, peak memory {_gb(p.peak_bytes)}")
    affordable = [p for p in probes if steps_at(p, size, CPU_BATCH) >= TARGET_STEPS]
    chosen = max(affordable, key=lambda p: p.parameters) if affordable else max(probes, key=lambda p: p.images_per_second)
    if affordable:
        say(f"model {chosen.label}: the largest candidate that still gets {TARGET_STEPS}+ optimizer steps per fold "
            f"({steps_at(chosen, size, CPU_BATCH):.0f} at batch {CPU_BATCH})")
    else:
        say(f"model {chosen.label}: the fastest candidate; none gets {TARGET_STEPS} optimizer steps per fold in this budget")

    # Batch size: as large as memory allows (60 % of it), but at least 8 steps per epoch. On a CPU the throughput per
    # image barely grows with the batch, so the smallest batch norm allows (2) gives the most optimizer steps; the
    # size above was chosen for that many steps (batch 4 halved the demo's 400 steps at 288 px).
    limit = CPU_BATCH if kind == "cpu" else 32
    batch = 2  # batch norm needs two images
    for b in (4, 8, 16, 32):
        if b <= limit and chosen.memory_at(train_size, b) <= 0.6 * memory_bytes and n_train / b >= 8:
            batch = b
    say(f"batch {batch}: {_gb(chosen.memory_at(train_size, batch))} estimated peak memory of {_gb(memory_bytes)}; "
        f"{math.ceil(n_train / batch)} steps per epoch" + ("; on a CPU more steps beat larger batches" if kind == "cpu" else ""))

    # Epochs fill each fold's share of the budget, less the time planning took (the probes included).
    fixed = FIXED_OVERHEAD_S + 0.05 * budget_s + (time.time() - started)
    speed = chosen.speed_at(train_size) * SAFETY
    val_speed = chosen.predict_speed_at(size) * VALIDATION_SHARE
    flips = {"x": _specific(fp["per_class"], "x", fp["images"]), "y": _specific(fp["per_class"], "y", fp["images"])}
    tta = _choose_tta(flips, budget_s)
    views = {"none": 1, "hflip": 2, "vflip": 2, "d4": 8}[tta]
    predict_s = (n_val + test_images) * views / val_speed
    per_fold = max(1.0, (budget_s - fixed) / n_folds - predict_s)
    epoch_s = n_train / speed + n_val / val_speed + EPOCH_OVERHEAD_S
    epochs = max(1, int(per_fold / epoch_s))
    val_every = max(1, round(epochs / VALIDATIONS))
    epoch_s = n_train / speed + n_val / val_speed / val_every + EPOCH_OVERHEAD_S
    epochs = max(1, min(1000, int(per_fold / epoch_s)))
    say(f"epochs {epochs} per fold x {n_folds} folds: {describe_seconds(per_fold)} per fold at ~{epoch_s:.1f} s per epoch "
        f"({speed:.1f} images/s, {SAFETY:.0%} of the probe), after {describe_seconds(fixed)} of fixed costs "
        f"and {describe_seconds(predict_s)} of prediction per fold")
    say(f"schedule onecycle over the {epochs} epochs, validating every {val_every} epoch(s); train.time_budget "
        f"{per_fold:.0f} s per fold stops training early (keeping the best checkpoint) if this machine is slower than probed")

    # Augmentation from the data.
    aug: list[dict[str, Any]] = []
    if flips["x"]:
        say(f"no horizontal flip: {', '.join(flips['x'][:3])} always lie on one side")
    else:
        aug.append({"name": "HorizontalFlip", "p": 0.5})
        say(f"horizontal flip: no class seen in {SIDE_EVIDENCE_IMAGES}+ images keeps to the left or right")
    if flips["y"]:
        say(f"no vertical flip: {', '.join(flips['y'][:3])} always lie at the top or bottom")
    else:
        aug.append({"name": "VerticalFlip", "p": 0.5})
        say(f"vertical flip: no class seen in {SIDE_EVIDENCE_IMAGES}+ images keeps to the top or bottom")
    rotation = int(min(30, max(10, round(2 * fp.get("rotation_std", 0.0)))))
    aug.append({"name": "Affine", "rotate": [-rotation, rotation], "scale": [0.9, 1.1], "translate_percent": [-0.05, 0.05], "p": 0.5})
    say(f"rotation up to {rotation} degrees (twice the {fp.get('rotation_std', 0.0):.1f} degree spread of the labelled area's "
        "orientation, within 10..30), scale 0.9..1.1, shift 5 %")
    if fp.get("grey_fraction", 0.0) >= 0.5:
        aug += [{"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5}, {"name": "RandomGamma", "gamma_limit": [80, 120], "p": 0.3}]
        say("intensity: brightness, contrast and gamma (grey images, X-ray-like exposure varies)")
    else:
        aug += [{"name": "RandomBrightnessContrast", "brightness_limit": 0.1, "contrast_limit": 0.1, "p": 0.5}]
        say("intensity: mild brightness and contrast (colour images: colour carries meaning)")
    if window:
        aug.insert(0, {"name": "RandomCrop", "height": window, "width": window})

    # Loss: small structures weigh more through dice.
    fraction = at_size / (size * size)
    dice = 0.7 if fraction < 0.01 else 0.5
    say(f"loss bce {1 - dice:.1f} + dice {dice:.1f}: {smallest} covers {fraction:.2%} of the image"
        + (" (under 1 %: dice, which weighs every class alike, gets more weight)" if dice > 0.5 else ""))
    say(f"TTA {tta}: " + _tta_reason(tta, flips, budget_s))

    model: dict[str, Any] = {"family": "smp", "arch": chosen.arch, "encoder": chosen.encoder, "encoder_weights": None, "params": chosen.params}
    recipe: dict[str, Any] = {
        "name": PLAN_NAME,
        "extends": base,
        "data": {"image_size": size},
        "model": model,
        "loss": {"bce": round(1 - dice, 2), "dice": dice},
        "sched": {"name": "onecycle", "pct_start": 0.1},
        "aug": aug,
        "train": {"epochs": epochs, "batch_size": batch, "early_stop": None, "val_every": val_every, "time_budget": round(per_fold, 1),
                  "device": str(torch_device) if device != "auto" else "auto"},
        "infer": {"tta": tta, "window": window},
    }
    Recipe.model_validate({k: v for k, v in recipe.items() if k != "extends"})  # the plan is a valid recipe
    return Plan(recipe, reasons, probes, budget_s)


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
