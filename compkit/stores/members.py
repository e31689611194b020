"""Reading prediction artifacts as ensemble members: a fold folder, a run folder (its folds averaged), an
ensemble folder, a bare probability store, a folder of nnU-Net probabilities, or a submission CSV. Used by
``compkit ensemble`` and ``compkit submit``.

nnU-Net: ``nnUNetv2_predict --save_probabilities`` writes ``<case>.npz`` (key ``probabilities``, (C, 1, H, W) at the
image's original size) and ``<case>.pkl`` beside each segmentation, and copies the model's ``dataset.json``. Only the
``.npz`` files are read (``np.load(allow_pickle=False)``; the ``.pkl`` never is: unpickling runs code). The
``dataset.json`` written by ``compkit export nnunet`` maps cases back to image ids and channels to classes: label
values (softmax channels, one per value) or regions (sigmoid channels, one per class).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console

from compkit.data.splits import fingerprint, load_splits, splits_path
from compkit.evaluation.postprocess import RULES
from compkit.stores.probabilities import OOF_STORE, STORE_INDEX, TEST_STORE, Store, quantise, resample
from compkit.training.runs import RECIPE_FILE, data_root_of, fold_dirs, read_run_record, recipe_difference, saved_recipe
from compkit.util.errors import CompkitError, warn
from compkit.util.fileio import read_json, read_text
from compkit.util.registry import did_you_mean

ENSEMBLES_DIR = "ensembles"  # where `compkit ensemble` writes and `compkit submit` looks, by default
MEMBERS_FILE = "members.json"
NNUNET_INFO_FILE = "dataset.json"  # nnU-Net's dataset description, copied beside its predictions
NNUNET_KEY = "compkit"  # compkit's entry in an exported nnU-Net dataset.json: classes, mode, case -> image id
THRESHOLDS_FILE = "thresholds.json"
POSTPROCESS_FILE = "postprocess.json"
VOTE_CSV = "vote.csv"
OOF_DICE_CSV = "oof_dice.csv"  # per class: OOF dice at 0.5, tuned in-sample and cross-validated, and what was kept


@dataclass
class Member:
    path: Path
    kind: str  # "stores" or "csv"
    test_stores: list[Store] = field(default_factory=list)  # averaged: the folds of one model family
    oof_stores: list[Store] = field(default_factory=list)  # each fold's validation images: a union
    folds_without_oof: list[Path] = field(default_factory=list)  # trained folds whose oof/ store is not here
    untuned: str | None = None  # an ensemble member: why its thresholds were not tuned (members.json)
    thresholds: dict[str, float] | None = None
    postprocess: dict[str, dict] | None = None
    oof_figures: dict[str, float] = field(default_factory=dict)  # an ensemble's OOF dice (members.json: oof_dice_*)
    data_root: str | None = None
    families: list[str] = field(default_factory=list)  # the model families behind it (from recipes or members.json)
    splits_fingerprints: list[str] = field(default_factory=list)  # the splits its out-of-fold stores belong to
    splits_file: str | None = None  # the splits file it was trained with (a --out one for read-only data)

    @property
    def name(self) -> str:
        return self.path.stem if self.kind == "csv" else self.path.name

    @property
    def classes(self) -> list[str]:
        return self.test_stores[0].classes

    @property
    def resolution(self) -> tuple[int, int]:
        """The store resolution (the largest, where its folds were predicted at different sizes)."""
        return max((s.resolution for s in self.test_stores), key=lambda r: r[0] * r[1])

    @property
    def description(self) -> str:
        return "/".join(self.families) if self.families else "stores"

    @property
    def image_ids(self) -> list[str]:
        return self.test_stores[0].image_ids

    def original_size(self, image_id: str) -> tuple[int, int]:
        return self.test_stores[0].original_size(image_id)

    def box(self, image_id: str) -> tuple[int, int, int, int] | None:
        return self.test_stores[0].box(image_id)

    def test_probs(self, image_id: str, resolution: tuple[int, int] | None = None) -> np.ndarray:
        """Mean probability over the member's test stores (C, h, w) float32, at ``resolution`` (default: the
        member's), each store resampled image by image where its resolution differs."""
        resolution = resolution or self.resolution
        total = self.test_stores[0].read(image_id, resolution)
        for store in self.test_stores[1:]:
            total += store.read(image_id, resolution)
        return total / len(self.test_stores) if len(self.test_stores) > 1 else total

    def test_uint8(self, image_id: str) -> np.ndarray:
        """The test probabilities quantised to uint8 (C, h, w); a single uint8 store is read as it is."""
        if len(self.test_stores) == 1 and self.test_stores[0].dtype == "uint8":
            return self.test_stores[0].read_raw(image_id)
        return quantise(self.test_probs(image_id), "uint8")

    def oof_index(self) -> dict[str, Store]:
        index: dict[str, Store] = {}
        for store in self.oof_stores:
            for image_id in store.image_ids:
                index[image_id] = store
        return index

    def threshold_vector(self) -> np.ndarray:
        if not self.thresholds:
            return np.full(len(self.classes), 0.5, np.float32)
        return np.array([self.thresholds.get(c, 0.5) for c in self.classes], np.float32)


class NnunetStore:
    """A folder of nnU-Net ``--save_probabilities`` outputs, read like a :class:`~compkit.stores.probabilities.Store`."""

    dtype = "float16"

    def __init__(self, folder: Path):
        self.folder = folder
        info_path = folder / NNUNET_INFO_FILE
        if not info_path.is_file():
            raise CompkitError(
                folder,
                f"nnU-Net predictions without {NNUNET_INFO_FILE} (nnUNetv2_predict copies it): "
                "cannot tell classes and cases",
            )
        info = read_json(info_path)
        ours = info.get(NNUNET_KEY) if isinstance(info, dict) else None
        if not isinstance(ours, dict) or not isinstance(ours.get("cases"), dict):
            raise CompkitError(
                info_path,
                f"no compkit entry: predict with a model trained on a `compkit export nnunet` dataset "
                f"(its {NNUNET_INFO_FILE} maps cases to images)",
            )
        labels = info.get("labels") or {}
        self.classes: list[str] = list(ours["classes"])
        self.data_root: str | None = ours.get("data_root")
        if ours.get("mode") == "regions":
            regions = [k for k, v in labels.items() if k not in ("background", "ignore")]
            self.channels = [regions.index(c) for c in self.classes]
        else:
            values = sorted(int(v) for k, v in labels.items() if k != "ignore")
            self.channels = [values.index(int(labels[c])) for c in self.classes]
        found = {p.stem: p for p in sorted(folder.glob("*.npz"))}
        self.entries = {
            ours["cases"][case]: {"file": path.name} for case, path in found.items() if case in ours["cases"]
        }
        unknown = sorted(set(found) - set(ours["cases"]))
        if unknown:
            problem = f"a case that {NNUNET_INFO_FILE}'s compkit entry does not know"
            raise CompkitError(folder / f"{unknown[0]}.npz", problem)
        if not self.entries:
            raise CompkitError(folder, "no <case>.npz files (run nnUNetv2_predict with --save_probabilities)")
        self.image_ids = list(self.entries)
        self._sizes: dict[str, tuple[int, int]] = {}
        self.resolution: tuple[int, int] = self.original_size(self.image_ids[0])

    def read_raw(self, image_id: str) -> np.ndarray:
        """(C, H, W) float32 probabilities of compkit's classes, at the image's original size."""
        path = self.folder / self.entries[image_id]["file"]
        try:
            with np.load(path, allow_pickle=False) as npz:
                probs = npz["probabilities"]
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise CompkitError(path, f"unreadable nnU-Net probabilities ({e})") from None
        if probs.ndim == 4 and probs.shape[1] == 1:
            probs = probs[:, 0]
        if probs.ndim != 3 or probs.shape[0] <= max(self.channels):
            raise CompkitError(
                path,
                f"probabilities of shape {probs.shape}: expected (C, 1, H, W) with {max(self.channels) + 1}+ channels",
            )
        self._sizes[image_id] = (int(probs.shape[1]), int(probs.shape[2]))
        return np.clip(probs[self.channels].astype(np.float32), 0.0, 1.0)

    def read(self, image_id: str, resolution: tuple[int, int] | None = None) -> np.ndarray:
        probs = self.read_raw(image_id)
        if not np.isfinite(probs).all():
            raise CompkitError(self.folder / self.entries[image_id]["file"], "probabilities contain NaN or infinity")
        return resample(probs, resolution) if resolution is not None else probs

    def original_size(self, image_id: str) -> tuple[int, int]:
        if image_id not in self._sizes:
            self.read_raw(image_id)
        return self._sizes[image_id]

    def box(self, image_id: str) -> None:
        return None


def is_nnunet_output(path: Path) -> bool:
    return path.is_dir() and not (path / STORE_INDEX).is_file() and next(path.glob("*.npz"), None) is not None


def _check_consistent(path: Path, stores: list[Store]) -> None:
    first = stores[0]
    for store in stores[1:]:
        for what, a, b in (
            ("classes", first.classes, store.classes),
            ("images", sorted(first.image_ids), sorted(store.image_ids)),
        ):
            if a != b:
                raise CompkitError(store.folder, f"{what} differ from {first.folder} within member {path}")


def _fold_facts(fold: Path) -> tuple[str | None, str | None]:
    """(data root, model family) a fold's recipe recorded; read leniently (a store may outlive its recipe's schema)."""
    try:
        recipe = yaml.safe_load(read_text(fold / RECIPE_FILE)) or {}
    except (CompkitError, yaml.YAMLError):
        return None, None
    if not isinstance(recipe, dict):
        return None, None
    return data_root_of(fold, (recipe.get("data") or {}).get("root")), (recipe.get("model") or {}).get("family")


def read_members_file(path: Path) -> dict[str, Any]:
    info = read_json(path)
    if not isinstance(info, dict) or info.get("kind") not in ("csv", "stores"):
        raise CompkitError(path, "not a compkit members file (needs an object with kind 'stores' or 'csv')")
    for key, kind in (("data_root", str), ("families", list), ("members", list), ("splits_fingerprint", str)):
        if info.get(key) is not None and not isinstance(info[key], kind):
            raise CompkitError(path, f"'{key}' must be a {kind.__name__}, got {type(info[key]).__name__}")
    return info


def read_per_class(path: Path, classes: list[str], what: str) -> dict:
    """An artifact that maps known class names to values (``thresholds.json``, ``postprocess.json``)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise CompkitError(path, f"must be an object {{class: {what}}}")
    unknown = next((name for name in data if name not in classes), None)
    if unknown is not None:
        raise CompkitError(path, f"unknown class {unknown!r}{did_you_mean(unknown, classes)}")
    return data


def is_fraction(value) -> bool:
    """A number strictly between 0 and 1 (booleans are not numbers here)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < 1


def read_thresholds(path: Path, classes: list[str]) -> dict[str, float]:
    """``{class: threshold}``, every threshold a number strictly between 0 and 1, every class known."""
    data = read_per_class(path, classes, "threshold")
    for name, value in data.items():
        if not is_fraction(value):
            raise CompkitError(path, f"{name}: threshold {value!r} is not a number between 0 and 1")
    return {name: float(value) for name, value in data.items()}


def read_postprocess(path: Path, classes: list[str]) -> dict[str, dict]:
    """``{class: {"rule": "largest"}}``, ``{"rule": "min_size", "min_area": fraction}`` or ``{"rule": "empty"}``."""
    data = read_per_class(path, classes, "rule")
    for name, rule in data.items():
        if not isinstance(rule, dict) or rule.get("rule") not in RULES:
            raise CompkitError(path, f"{name}: rule must be one of {', '.join(RULES)}, got {rule!r}")
        if rule["rule"] == "min_size" and not is_fraction(rule.get("min_area")):
            raise CompkitError(
                path, f"{name}: min_area {rule.get('min_area')!r} is not a fraction of the image between 0 and 1"
            )
    return data


def folds_disagree(folds: list[Path]) -> str | None:
    """Why a run's folds are not one experiment (another recipe or split in one of them), or None (also where a
    recipe cannot be read: members are read leniently, a store may outlive its recipe's schema)."""
    try:
        recipes = [saved_recipe(fold) for fold in folds]
    except CompkitError:
        return None
    for fold, recipe in zip(folds[1:], recipes[1:], strict=True):
        difference = recipe_difference(recipes[0], recipe)
        if difference:
            return f"{fold.name} differs from {folds[0].name} in {difference}"
    prints = {read_run_record(f).get("splits_fingerprint") for f in folds} - {None}
    if len(prints) > 1:
        return "its folds were trained on different splits"
    return None


def open_member(path: str | Path, mixed_folds: bool = False) -> Member:
    """``mixed_folds``: accept a run whose folds were trained with different recipes or splits."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise CompkitError(path, "submission CSV not found")
        return Member(path, "csv")
    if not path.is_dir() and any(c in str(path) for c in "*?["):  # the shell found nothing to expand it to
        raise CompkitError(
            path, "matches nothing: no runs yet (train one first: compkit train --recipe tiny --data DATA)"
        )
    if not path.is_dir():
        raise CompkitError(path, "not found (expected a run, fold or ensemble folder, a store, or a submission CSV)")
    if (path / MEMBERS_FILE).is_file():
        info = read_members_file(path / MEMBERS_FILE)
        if info["kind"] == "csv":
            return Member(path / VOTE_CSV, "csv", data_root=info.get("data_root"))
        families = list(info.get("families") or [])
        member = Member(path, "stores", [Store(path / TEST_STORE)], data_root=info.get("data_root"), families=families)
        member.splits_fingerprints = [info["splits_fingerprint"]] if info.get("splits_fingerprint") else []
        member.splits_file = info.get("splits_file")
        member.untuned = info.get("untuned")
        member.oof_figures = {k: float(v) for k, v in info.items() if k.startswith("oof_dice_")}
        if (path / OOF_STORE / STORE_INDEX).is_file():
            member.oof_stores = [Store(path / OOF_STORE)]
        if (path / THRESHOLDS_FILE).is_file():
            member.thresholds = read_thresholds(path / THRESHOLDS_FILE, member.classes)
        if (path / POSTPROCESS_FILE).is_file():
            member.postprocess = read_postprocess(path / POSTPROCESS_FILE, member.classes)
        return member
    if (path / STORE_INDEX).is_file():
        return Member(path, "stores", [Store(path)])
    if is_nnunet_output(path):
        store = NnunetStore(path)
        return Member(path, "stores", [store], data_root=store.data_root, families=["nnunet"])
    folds = fold_dirs(path)
    missing = [f for f in folds if not (f / TEST_STORE / STORE_INDEX).is_file()]
    if missing:
        raise CompkitError(missing[0], "no test store: run `compkit predict` on it first")
    disagreement = folds_disagree(folds)
    if disagreement and not mixed_folds:
        raise CompkitError(
            path, f"its folds are not one experiment: {disagreement} (pass --mixed-folds to ensemble them anyway)"
        )
    root, family = _fold_facts(folds[0])
    stores = [Store(f / TEST_STORE) for f in folds]
    member = Member(path, "stores", stores, data_root=root, families=[family] if family else [])
    member.oof_stores = [Store(f / OOF_STORE) for f in folds if (f / OOF_STORE / STORE_INDEX).is_file()]
    member.folds_without_oof = [f for f in folds if not (f / OOF_STORE / STORE_INDEX).is_file()]
    records = [read_run_record(f) for f in folds]
    member.splits_fingerprints = sorted({r["splits_fingerprint"] for r in records if r.get("splits_fingerprint")})
    member.splits_file = next((r["splits_file"] for r in records if r.get("splits_file")), None)
    _check_consistent(path, member.test_stores)
    return member


def check_covers(member: Member, dataset) -> None:
    """The member must have probabilities for every image of ``dataset`` (a stale store lacks new ones)."""
    missing = [s.image_id for s in dataset.samples if s.image_id not in member.test_stores[0].entries]
    if missing:
        raise CompkitError(
            member.path, f"no probabilities for {len(missing)} test images (first: {missing[0]}); predict again"
        )


def current_splits_file(member: Member, data_root: str | Path) -> Path:
    """The dataset's splits file; for a read-only dataset without one, the file the member's folds were trained
    with (``split --out``), where it still is."""
    own = splits_path(data_root)
    if not own.is_file() and member.splits_file and Path(member.splits_file).is_file():
        return Path(member.splits_file)
    return own


def check_member_split(member: Member, data_root: str | Path) -> None:
    """A member's OOF stores are out-of-fold only for the split they were made with: refuse when the dataset's
    splits file has changed since (its images would have trained the folds that predicted them)."""
    path = current_splits_file(member, data_root)
    if not member.splits_fingerprints or not path.is_file():
        return
    current = fingerprint(load_splits(data_root, path))
    if any(f != current for f in member.splits_fingerprints):
        raise CompkitError(
            member.path,
            f"its out-of-fold predictions were made with another split than {path} holds now: they are not "
            "out-of-fold (retrain, or restore that splits file)",
        )


def open_stores_member(source: str | Path, purpose: str) -> Member:
    """A member that has probabilities (not a CSV), for steps that need them."""
    member = open_member(source)
    if member.kind != "stores":
        raise CompkitError(source, f"{purpose} needs probabilities: give a run, fold or ensemble folder, not a CSV")
    return member


def dataset_root(member: Member, data: str | Path | None) -> str | Path:
    """The dataset a member predicts: ``--data`` if given, else the one its recipe or ensemble recorded."""
    root = data or member.data_root
    if root is None:
        raise CompkitError(member.path, "cannot tell which dataset it predicts: pass --data DATA")
    return root


def describe_tuning(figures: dict[str, Any]) -> str:
    """An ensemble's OOF figures in one line, the cross-validated one first (what a submission can expect)."""
    if "oof_dice_cross_validated" not in figures:
        if "oof_dice_at_0.5" not in figures:
            return "dice: no out-of-fold figures"
        return (
            f"dice {figures['oof_dice_at_0.5']:.4f} at 0.5 (one fold: nothing cross-validated; "
            f"{figures['oof_dice_in_sample']:.4f} tuned in-sample, optimistic)"
        )
    tuned = f"{figures['oof_dice_in_sample']:.4f} in-sample, optimistic"
    if "oof_dice_tuned_cross_validated" in figures:  # ensembles before cross-validation kept the choice lack it
        tuned += f", {figures['oof_dice_tuned_cross_validated']:.4f} cross-validated"
    return (
        f"dice {figures['oof_dice_cross_validated']:.4f} cross-validated with the kept thresholds and postprocessing "
        f"({figures['oof_dice_at_0.5']:.4f} at 0.5; tuning every class: {tuned})"
    )


def resolve_thresholds(member: Member, threshold: str, console: Console) -> np.ndarray:
    """'auto': tuned where the ensemble has them, else 0.5; 'tuned': the same, warning when there are none; or a number."""
    if threshold in ("auto", "tuned"):
        if member.thresholds:
            return member.threshold_vector()
        if threshold == "tuned":
            warn(None, f"{member.path} has no tuned thresholds (no out-of-fold stores); using 0.5", console)
        return np.full(len(member.classes), 0.5, np.float32)
    try:
        value = float(threshold)
    except ValueError:
        raise CompkitError("--threshold", f"must be a number, 'tuned' or 'auto', got {threshold!r}") from None
    if not 0 < value < 1:
        raise CompkitError("--threshold", f"must be between 0 and 1, got {value}")
    return np.full(len(member.classes), value, np.float32)


def chosen_tuning(
    member: Member, threshold: str, tuning_from: str | Path | None, postprocess: str, console: Console
) -> tuple[np.ndarray, dict[str, dict]]:
    """Per-class thresholds and postprocessing rules to apply to ``member``'s probabilities (``compkit submit``,
    ``compkit predict --source``), said in a few lines: where they come from, and the cross-validated OOF dice
    they were kept by. ``tuning_from``: an ensemble folder whose thresholds and rules to take instead."""
    if postprocess not in ("cv", "none"):
        raise CompkitError("--postprocess", f"must be cv or none, got {postprocess!r}")
    tuned = member
    if tuning_from is not None:
        if threshold not in ("auto", "tuned"):
            raise CompkitError(
                "--tuning-from", f"takes the thresholds from {tuning_from}: drop --threshold {threshold}"
            )
        tuned = open_member(tuning_from)
        if tuned.kind != "stores" or not tuned.thresholds:
            raise CompkitError(tuning_from, f"no {THRESHOLDS_FILE} to take the thresholds from (an ensemble folder)")
        if list(tuned.classes) != list(member.classes):
            raise CompkitError(tuning_from, f"its classes differ from {member.path}'s")
        thresholds, rules = tuned.threshold_vector(), tuned.postprocess or {}
        origin = f"from {tuning_from}" + (f" ({tuned.untuned})" if tuned.untuned else "")
    else:
        thresholds, rules = resolve_thresholds(member, threshold, console), member.postprocess or {}
        if threshold not in ("auto", "tuned"):
            origin = f"--threshold {threshold}"
        elif member.thresholds:
            origin = "tuned on OOF" if not member.untuned else f"not tuned ({member.untuned})"
        else:
            origin = f"0.5 (not tuned: {member.untuned})" if member.untuned else "0.5 (no tuned thresholds)"
    low, high = float(thresholds.min()), float(thresholds.max())
    spread = f"{low:.3f} for every class" if low == high else f"{low:.3f} to {high:.3f} per class ({THRESHOLDS_FILE})"
    console.print(f"thresholds: {origin}, {spread}")
    if postprocess == "none":
        rules = {}
    kept = ", ".join(f"{c} {r.get('rule')}" for c, r in rules.items()) if rules else "none"
    console.print("postprocessing: " + (kept if postprocess == "cv" else "none (--postprocess none)"))
    if threshold in ("auto", "tuned") and tuned.oof_figures:
        console.print(f"OOF {describe_tuning(tuned.oof_figures)}")
    return thresholds, rules
