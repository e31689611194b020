"""``compkit ensemble``: soft or hard voting of prediction artifacts -> ``ensembles/<name>/``.

Members are fold, run or ensemble folders (a run's folds are averaged first, soft voting within a model family)
or submission CSVs (hard-voted row by row, as teams vote across families). Everything streams image by image.
When every member has out-of-fold stores for all training images, one threshold per class is tuned on the OOF
ensemble and per-class postprocessing is kept where it raises OOF dice.

Output: ``test/`` (a probability store), ``oof/`` (when available), ``members.json``, ``thresholds.json``,
``postprocess.json``; for CSV members ``vote.csv`` instead of the stores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from compkit.data import SegmentationDataset, open_dataset
from compkit.data.cache import build_cache
from compkit.data.splits import fingerprint, load_splits
from compkit.evaluation.metrics import dice_from_counts
from compkit.evaluation.postprocess import apply_rule, candidate_rules, median_component_area
from compkit.evaluation.thresholds import THRESHOLD_GRID, ClassChoice, OofTuner, confirmed_choice
from compkit.stores.members import (
    ENSEMBLES_DIR,
    MEMBERS_FILE,
    OOF_DICE_CSV,
    POSTPROCESS_FILE,
    THRESHOLDS_FILE,
    VOTE_CSV,
    Member,
    check_member_split,
    current_splits_file,
    describe_tuning,
    open_member,
)
from compkit.stores.probabilities import OOF_STORE, Store, StoreWriter, quantise
from compkit.submission.layouts import RowWriter, submission_layout, validate
from compkit.training.runs import claim_output_folder
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import CompkitError
from compkit.util.fileio import AtomicFolder, atomic_write, write_csv, write_json

METHODS = ("soft", "hard")
POSTPROCESS_CHOICES = ("cv", "none")


def _check_members(members: list[Member]) -> None:
    first = members[0]
    for m in members[1:]:
        if m.classes != first.classes:
            raise CompkitError(m.path, f"member's classes differ from {first.path}'s")
        if sorted(m.image_ids) != sorted(first.image_ids):
            counts = f"{len(m.image_ids)} vs {len(first.image_ids)}"
            raise CompkitError(m.path, f"member's test images differ from {first.path}'s ({counts})")
        image_id = first.image_ids[0]
        if m.box(image_id) != first.box(image_id):
            raise CompkitError(
                m.path,
                f"member's stores cover another part of the images than {first.path}'s (data.crop_border differs)",
            )


def common_resolution(members: list[Member], resolution: int | None) -> tuple[int, int]:
    """Where members meet: ``--resolution N`` (N x N), else the largest member's store resolution."""
    if resolution is not None:
        if resolution < 8:
            raise CompkitError("--resolution", f"must be at least 8 pixels, got {resolution}")
        return (resolution, resolution)
    return max((m.resolution for m in members), key=lambda r: r[0] * r[1])


def members_table(members: list[Member], weights: np.ndarray, resolution: tuple[int, int]) -> Table:
    table = Table(title=f"members (combined at {resolution[0]}x{resolution[1]})")
    for column in ("member", "family", "folds", "resolution", "weight"):
        table.add_column(column, justify="right" if column in ("folds", "weight") else "left")
    for m, w in zip(members, weights, strict=True):
        r = m.resolution
        shown = f"{r[0]}x{r[1]}" + ("" if r == resolution else " (resampled)")
        table.add_row(m.name, m.description, str(len(m.test_stores)), shown, f"{w:g}")
    return table


def _weights(weights: list[float] | None, members: list[Any], method: str) -> np.ndarray:
    if weights is None:
        return np.ones(len(members), np.float32)
    if len(weights) != len(members):
        raise CompkitError("--weights", f"{len(weights)} weights for {len(members)} members")
    w = np.asarray(weights, np.float32)
    if (w <= 0).any():
        raise CompkitError("--weights", "weights must be positive")
    if method == "hard" and not np.all(w == np.round(w)):
        raise CompkitError("--weights", "hard voting counts votes: weights must be whole numbers")
    return w


def _vote_threshold(weights: np.ndarray, votes: int | None) -> float:
    """Fraction of weighted votes above which a pixel is kept: at least ``votes`` (default: a majority)."""
    total = float(weights.sum())
    k = votes if votes is not None else int(total // 2) + 1
    if not 1 <= k <= total:
        raise CompkitError("--votes", f"must be between 1 and {int(total)}, got {k}")
    return (k - 0.5) / total


class Combiner:
    """Soft: weighted mean of member probabilities. Hard: weighted fraction of members above their thresholds."""

    def __init__(self, method: str, weights: np.ndarray, thresholds: list[np.ndarray]):
        self.method, self.weights, self.thresholds = method, weights / weights.sum(), thresholds

    def __call__(self, probs: list[np.ndarray]) -> np.ndarray:
        total = np.zeros_like(probs[0], dtype=np.float32)
        for w, p, t in zip(self.weights, probs, self.thresholds, strict=True):
            total += w * ((p > t[:, None, None]) if self.method == "hard" else p)
        return total


def _truth(cache, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """An OOF image's cached truth and the pixels that count (all, or those inside the field of view)."""
    i = cache.position[image_id]
    truth = cache.mask(i)
    ignore = cache.ignore(i)
    keep = np.ones_like(truth) if ignore is None else (ignore == 0).astype(np.uint8)
    return truth * keep, keep


@dataclass(frozen=True)
class _OofImages:
    """The OOF images to tune on: how to read each one's ensembled probabilities, the training set holding their
    truth, the stores' resolution (and whether they are cropped to the field of view), and each image's fold."""

    image_ids: list[str]
    read: Callable[[str], np.ndarray]
    dataset: SegmentationDataset
    resolution: tuple[int, int]
    cropped: bool = False
    groups: list[Any] | None = None  # the fold of each image; None: one fold

    def fold_of_each(self) -> np.ndarray:
        return np.asarray(self.groups if self.groups is not None else [0] * len(self.image_ids), dtype=object)


@dataclass(frozen=True)
class _Thresholds:
    """Per class: the base threshold (0.5, or hard voting's vote rule), the one chosen on all OOF images, and each
    fold's, chosen on the other folds' images (none with one fold); ``group``: the fold of each OOF image."""

    base: np.ndarray
    in_sample: np.ndarray
    per_fold: dict[Any, np.ndarray]
    group: np.ndarray

    @property
    def folds(self) -> list[Any]:
        return list(dict.fromkeys(self.group.tolist()))

    def in_use(self, c: int) -> set[float]:
        """Class ``c``'s thresholds that postprocessing candidates are scored at."""
        return {float(self.base[c]), float(self.in_sample[c]), *(float(ft[c]) for ft in self.per_fold.values())}

    def fold_thresholds(self, c: int) -> dict[Any, float]:
        return {f: float(ft[c]) for f, ft in self.per_fold.items()}


@dataclass(frozen=True)
class _Choices:
    """Per class, what was kept and its figures (:class:`ClassChoice`); the means are what members.json records."""

    classes: list[str]
    per_class: list[ClassChoice]
    candidates: list[list[dict]]

    def column(self, name: str) -> np.ndarray:
        return np.array([getattr(choice, name) for choice in self.per_class])

    @property
    def cross_validated(self) -> bool:
        return not np.isnan(self.column("kept_cross")).all()

    def thresholds(self) -> dict[str, float]:
        return {name: choice.threshold for name, choice in zip(self.classes, self.per_class, strict=True)}

    def rules(self) -> dict[str, dict]:
        return {
            name: self.candidates[c][choice.rule]
            for c, (name, choice) in enumerate(zip(self.classes, self.per_class, strict=True))
            if choice.rule
        }

    def figures(self) -> dict[str, float]:
        figures = {
            "oof_dice_at_0.5": float(self.column("at_base").mean()),
            "oof_dice_in_sample": float(self.column("tuned_in_sample").mean()),
        }
        if self.cross_validated:
            figures["oof_dice_tuned_cross_validated"] = float(self.column("tuned_cross").mean())
            figures["oof_dice_cross_validated"] = float(self.column("kept_cross").mean())
        return figures


def _tune(
    oof: _OofImages, method: str, fixed: np.ndarray | None, postprocess: str, console: Console
) -> tuple[Table, _Choices]:
    """Thresholds and postprocessing per class, chosen on the OOF images and kept only where cross-validation
    confirms them (:func:`confirmed_choice`; each fold is ``oof.groups``). The table shows the full tuning scored
    in-sample (optimistic) and cross-validated, and what was kept. ``fixed``: the thresholds to keep (hard voting:
    the vote rule); ``postprocess``: 'cv' (rules where confirmed) or 'none'."""
    classes = list(oof.dataset.classes)
    if oof.resolution[0] != oof.resolution[1]:
        raise CompkitError(None, f"OOF tuning needs square stores, got {oof.resolution}")
    # The truth framed as the stores are.
    cache = build_cache(oof.dataset, oof.resolution[0], console=console, crop=oof.cropped)
    tuner, areas = _histograms(oof, cache, console)
    base = fixed if fixed is not None else np.full(len(classes), 0.5, np.float32)
    thresholds = fixed if fixed is not None else tuner.best_thresholds()[0]
    group = oof.fold_of_each()
    chosen = _Thresholds(base, thresholds, _fold_thresholds(tuner, group, fixed, len(classes)), group)
    use_rules = postprocess == "cv"
    candidates = [candidate_rules(a) if use_rules else [{"rule": "none"}] for a in _median_areas(areas)]
    scores = _rule_scores(oof, cache, chosen, candidates, console)
    per_class = [
        confirmed_choice(
            scores[c], float(base[c]), float(thresholds[c]), chosen.fold_thresholds(c), group, rules=use_rules
        )
        for c in range(len(classes))
    ]
    choices = _Choices(classes, per_class, candidates)
    return _oof_table(_oof_rows(choices), chosen, method), choices


def _histograms(oof: _OofImages, cache, console: Console) -> tuple[OofTuner, list[list[float]]]:
    """One pass over the OOF images: the tuner's histograms, and per class each image's median component area."""
    classes = oof.dataset.classes
    tuner = OofTuner(len(classes))
    areas: list[list[float]] = [[] for _ in classes]
    with transient_progress(console) as progress:
        task = progress.add_task("tuning thresholds on OOF", total=len(oof.image_ids))
        for image_id in oof.image_ids:
            truth, keep = _truth(cache, image_id)
            tuner.add(quantise(oof.read(image_id) * keep, "uint8"), truth)
            for c in range(len(classes)):
                areas[c].append(median_component_area(truth[c]))
            progress.advance(task)
    return tuner, areas


def _fold_thresholds(
    tuner: OofTuner, group: np.ndarray, fixed: np.ndarray | None, num_classes: int
) -> dict[Any, np.ndarray]:
    """Cross-validation: each fold's thresholds chosen on the other folds' images (``fixed`` ones kept as they are;
    none with one fold)."""
    folds = list(dict.fromkeys(group.tolist()))
    if len(folds) < 2:
        return {}
    if fixed is not None:
        return {f: fixed for f in folds}
    grid = np.stack([tuner.dice(np.full(num_classes, t)) for t in THRESHOLD_GRID])  # (T, images, C)
    return {f: THRESHOLD_GRID[grid[:, group != f, :].mean(axis=1).argmax(axis=0)] for f in folds}


def _median_areas(areas: list[list[float]]) -> np.ndarray:
    """Per class: the median over images of the median component area (images without the class left out)."""
    return np.array([np.median([a for a in col if a > 0]) if any(a > 0 for a in col) else 0.0 for col in areas])


def _rule_scores(
    oof: _OofImages, cache, chosen: _Thresholds, candidates: list[list[dict]], console: Console
) -> list[dict[float, np.ndarray]]:
    """Postprocessing candidates, scored per image and class on the OOF masks thresholded at every threshold in use
    (the base, the in-sample one and each fold's), so every figure is chosen by the same rule: class -> threshold ->
    (images, rules) dice."""
    scores: list[dict[float, np.ndarray]] = [{} for _ in candidates]
    for c in range(len(candidates)):
        for t in chosen.in_use(c):
            scores[c][t] = np.zeros((len(oof.image_ids), len(candidates[c])))
    with transient_progress(console) as progress:
        task = progress.add_task("choosing postprocessing on OOF", total=len(oof.image_ids))
        for n, image_id in enumerate(oof.image_ids):
            truth, keep = _truth(cache, image_id)
            probs = oof.read(image_id) * keep
            for c in range(len(candidates)):
                g = truth[c]
                for t, table_of_t in scores[c].items():
                    pred = probs[c] > t
                    for r, rule in enumerate(candidates[c]):
                        m = apply_rule(pred, rule)
                        table_of_t[n, r] = dice_from_counts(
                            np.count_nonzero(m & g), np.count_nonzero(m), np.count_nonzero(g)
                        )
            progress.advance(task)
    return scores


OOF_COLUMNS = {  # oof_dice.csv's columns -> the OOF table's headings ({base}: "0.5", or "the vote rule")
    "class": "class",
    "dice_at_base": "at {base}",
    "tuned_threshold": "tuned threshold",
    "tuned_postprocess": "tuned postprocess",
    "dice_tuned_in_sample": "tuned (in-sample)",
    "dice_tuned_cross_validated": "tuned (cross-validated)",
    "kept_threshold": "kept threshold",
    "kept_postprocess": "kept postprocess",
    "dice_kept_cross_validated": "kept (cross-validated)",
}


_MEAN_COLUMNS = {  # the figures averaged over classes in the mean row
    "dice_at_base": "at_base",
    "dice_tuned_in_sample": "tuned_in_sample",
    "dice_tuned_cross_validated": "tuned_cross",
    "dice_kept_cross_validated": "kept_cross",
}


def _oof_rows(choices: _Choices) -> list[dict[str, Any]]:
    """Per class, then the mean: what the OOF table shows and ``oof_dice.csv`` holds (None: not cross-validated)."""

    def figure(value: float) -> float | None:
        return None if np.isnan(value) else round(float(value), 6)

    def rule_name(c: int, index: int) -> str:
        return choices.candidates[c][index]["rule"] if index else "none"

    rows: list[dict[str, Any]] = []
    for c, (name, choice) in enumerate(zip(choices.classes, choices.per_class, strict=True)):
        rows.append(
            {
                "class": name,
                "dice_at_base": figure(choice.at_base),
                "tuned_threshold": round(float(choice.tuned_threshold), 4),
                "tuned_postprocess": rule_name(c, choice.tuned_rule),
                "dice_tuned_in_sample": figure(choice.tuned_in_sample),
                "dice_tuned_cross_validated": figure(choice.tuned_cross),
                "kept_threshold": round(float(choice.threshold), 4),
                "kept_postprocess": rule_name(c, choice.rule),
                "dice_kept_cross_validated": figure(choice.kept_cross),
            }
        )
    means = {k: figure(choices.column(attr).mean()) for k, attr in _MEAN_COLUMNS.items()}
    rows.append({"class": "mean", **{k: means.get(k) for k in OOF_COLUMNS if k != "class"}})
    return rows


def _oof_table(rows: list[dict[str, Any]], chosen: _Thresholds, method: str) -> Table:
    cv_note = (
        f"cross-validated over {len(chosen.folds)} folds"
        if chosen.per_fold
        else "one fold: nothing can be cross-validated, so 0.5 and no postprocessing are kept"
    )
    table = Table(
        title=f"OOF dice per class ({len(chosen.group)} images, {method} ensemble)",
        caption="tuned: threshold and postprocessing chosen on every OOF image, scored on the same images (in-sample, "
        "optimistic) and cross-validated (chosen on the other folds, scored on each held-out fold); kept: only what "
        f"raised the cross-validated figure, which `compkit submit` applies ({cv_note}; every figure in {OOF_DICE_CSV})",
    )
    base = "0.5" if method == "soft" else "the vote rule"
    for key, heading in OOF_COLUMNS.items():
        table.add_column(heading.format(base=base), justify="left" if key == "class" else "right")
    for row in rows:
        mean = row["class"] == "mean"
        cells = []
        for key in OOF_COLUMNS:
            value = row[key]
            text = "-" if value is None and key.startswith("dice_") else "" if value is None else str(value)
            if isinstance(value, float):
                text = f"{value:.4f}" if key.startswith("dice_") else f"{value:.3f}"
            if key.endswith("_postprocess") and value == "none":
                text = "-"
            cells.append(f"[bold]{text}" if mean and text else text)
        table.add_row(*cells)
    return table


def _csv_vote(
    members: list[Member],
    weights: np.ndarray,
    votes: int | None,
    dataset: SegmentationDataset,
    folder: Path,
    console: Console,
) -> None:
    layout = submission_layout(dataset)
    readers = [validate(m.path, dataset, check_rle=True, layout=layout) for m in members]
    shapes = {layout.names[s.image_id]: dataset.image_shape(s) for s in dataset.samples}
    k = votes if votes is not None else int(weights.sum() // 2) + 1
    if not 1 <= k <= weights.sum():
        raise CompkitError("--votes", f"must be between 1 and {int(weights.sum())}, got {k}")
    with atomic_write(folder / VOTE_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = RowWriter(handle, layout)
        with transient_progress(console) as progress:
            task = progress.add_task("hard-voting CSV rows", total=len(readers[0]))
            for rows in zip(*readers, strict=True):
                name, cls = rows[0].image_name, rows[0].class_name
                shape = shapes[name]
                total = np.zeros(shape, np.float32)
                for w, row in zip(weights, rows, strict=True):
                    total += w * layout.decode(row.rle, shape)
                writer.add(name, cls, layout.encode(total >= k))
                progress.advance(task)
        handle.flush()
        validate(handle.name, dataset, layout=layout)


@dataclass(frozen=True)
class _EnsembleSpec:
    """What an ensemble is made of: its members and their weights, how they vote, the dataset they predict, and
    the resolution asked for (``--resolution``; None: the largest member's)."""

    members: list[Member]
    weights: np.ndarray
    kinds: set[str]  # the members' kinds: all "csv" (hard-voted rows) or all "stores"
    method: str
    votes: int | None
    data_root: str | Path
    resolution: int | None
    tune: bool = True  # False (--no-tune): thresholds 0.5 (or the vote rule), no postprocessing, asked for
    postprocess: str = "cv"  # "cv": rules kept where cross-validation confirms them; "none": never

    @property
    def csv_vote(self) -> bool:
        return self.kinds == {"csv"}

    @property
    def store_dtype(self) -> str:
        """Hard votes are fractions of the weights: uint8 would round them."""
        return "float16" if self.method == "hard" else "uint8"


def ensemble(
    paths: list[str | Path],
    method: str = "soft",
    weights: list[float] | None = None,
    votes: int | None = None,
    name: str | None = None,
    data: str | Path | None = None,
    out: str | Path = ENSEMBLES_DIR,
    resolution: int | None = None,
    exist_ok: bool = False,
    mixed_folds: bool = False,
    tune: bool = True,
    postprocess: str = "cv",
    console: Console | None = None,
) -> Path:
    """Combine ``paths`` into ``out/<name>/``; returns that folder (a default name that is taken moves on to
    ``name-2``; a given one is replaced only with ``exist_ok``). Members stored at different resolutions
    are resampled image by image to ``resolution`` (default: the largest member's). Thresholds and
    postprocessing are tuned on the members' out-of-fold stores; a trained fold whose store is missing is an
    error naming it, unless ``tune`` is False (0.5 asked for). A tuned threshold or postprocessing rule is kept
    only where it raises the cross-validated OOF dice; ``postprocess`` 'none' tunes thresholds only."""
    console = console or output_console()
    if method not in METHODS:
        raise CompkitError("--method", f"must be soft or hard, got {method!r}")
    if postprocess not in POSTPROCESS_CHOICES:
        raise CompkitError("--postprocess", f"must be {' or '.join(POSTPROCESS_CHOICES)}, got {postprocess!r}")
    if not paths:
        raise CompkitError(None, "no members given (e.g. `compkit ensemble runs/*`)")
    members = [open_member(p, mixed_folds) for p in paths]
    w = _weights(weights, members, method)
    data_root = data or next((m.data_root for m in members if m.data_root), None)
    kinds = {m.kind for m in members}
    if len(kinds) > 1:
        csv_member = next(m for m in members if m.kind == "csv")
        raise CompkitError(
            csv_member.path, "CSV members are hard-voted with other CSVs only (ensemble the runs' stores instead)"
        )
    if data_root is None:
        raise CompkitError(None, "cannot tell which dataset the members predict: pass --data DATA")
    default = Path(out) / (name or "+".join(m.name for m in members)[:80])
    spec = _EnsembleSpec(members, w, kinds, method, votes, data_root, resolution, tune, postprocess)
    if tune and not spec.csv_vote:
        _check_tuning_pieces(members)
    with claim_output_folder(default, explicit=name is not None, exist_ok=exist_ok, option="--name") as folder:
        return _write_ensemble(folder, spec, console)


def _members_info(spec: _EnsembleSpec) -> dict[str, Any]:
    """``members.json`` as far as the members tell it: how they are combined and what each brings."""
    return {
        "method": "hard" if spec.csv_vote else spec.method,
        "kind": "csv" if spec.csv_vote else "stores",
        "members": [
            {"path": str(m.path), "weight": float(x), "folds": len(m.test_stores), "families": m.families}
            for m, x in zip(spec.members, spec.weights, strict=True)
        ],
        "families": sorted({f for m in spec.members for f in m.families}),
        "votes": spec.votes,
        "data_root": str(spec.data_root),
    }


def _write_ensemble(folder: Path, spec: _EnsembleSpec, console: Console) -> Path:
    """The ensemble of :func:`ensemble`, built in a staging folder and swapped into ``folder`` whole."""
    members = spec.members
    atomic = AtomicFolder(folder)
    staging = atomic.staging
    try:
        info = _members_info(spec)
        if spec.csv_vote:
            _csv_vote(members, spec.weights, spec.votes, open_dataset(spec.data_root, "test"), staging, console)
            write_json(staging / MEMBERS_FILE, info)
            atomic.commit()
            console.print(f"[green]wrote[/green] {folder / VOTE_CSV} (hard vote of {len(members)} CSVs)")
            return folder

        _check_members(members)
        target = common_resolution(members, spec.resolution)
        console.print(members_table(members, spec.weights, target))
        combine = Combiner(spec.method, spec.weights, [m.threshold_vector() for m in members])
        info.update(
            classes=members[0].classes,
            resolution=list(target),
            member_resolutions=[list(m.resolution) for m in members],
        )
        _write_test_store(spec, combine, target, staging, console)
        _write_oof_and_thresholds(spec, combine, target, staging, info, console)
        write_json(staging / MEMBERS_FILE, info)
        atomic.commit()
    finally:
        atomic.abort()
    names = ", ".join(m.name for m in members)
    console.print(f"[green]wrote[/green] {folder} ({spec.method} vote of {len(members)} members: {names})")
    if "oof_dice_cross_validated" in info:
        console.print(f"OOF {describe_tuning(info)}")
    console.print(f"next: compkit submit {folder}")
    return folder


def _write_test_store(
    spec: _EnsembleSpec, combine: Combiner, target: tuple[int, int], staging: Path, console: Console
) -> None:
    """The members' test predictions combined image by image into ``staging/test`` at ``target``."""
    members = spec.members
    with (
        StoreWriter(staging / "test", members[0].classes, target, spec.store_dtype) as store,
        transient_progress(console) as progress,
    ):
        task = progress.add_task(f"{spec.method} ensemble of {len(members)} members", total=len(members[0].image_ids))
        for image_id in members[0].image_ids:
            probs = combine([m.test_probs(image_id, target) for m in members])
            store.write(image_id, probs, members[0].original_size(image_id), members[0].box(image_id))
            progress.advance(task)


@dataclass(frozen=True)
class _OofStores:
    """The members' out-of-fold stores: per member, the store that holds each image."""

    indexes: list[dict[str, Store]]

    @property
    def image_ids(self) -> list[str]:
        return sorted(self.indexes[0])

    def cover(self, train: SegmentationDataset) -> bool:
        """Whether every member has OOF predictions for exactly the training images."""
        ids = self.image_ids
        return (
            bool(ids)
            and all(sorted(ix) == ids for ix in self.indexes)
            and set(ids) == {s.image_id for s in train.samples}
        )

    def first(self, image_id: str) -> Store:
        """The first member's store of an image: its original size, box and fold."""
        return self.indexes[0][image_id]

    def combined(self, combine: Combiner, image_id: str, target: tuple[int, int]) -> np.ndarray:
        return combine([ix[image_id].read(image_id, target) for ix in self.indexes])


def _check_tuning_pieces(members: list[Member]) -> None:
    """Every trained fold of a run member must bring its out-of-fold store: without it the thresholds and
    postprocessing tuned locally cannot be tuned again here, and a silent 0.5 would change the submission."""
    for member in members:
        if member.folds_without_oof:
            fold = member.folds_without_oof[0]
            raise CompkitError(
                fold / OOF_STORE,
                "missing: thresholds and postprocessing are tuned on every fold's out-of-fold store. Bring it with "
                "the run (`compkit predict --out` and `compkit export run` carry it), predict it (`compkit predict "
                f"{member.path} --split val`), or ensemble at 0.5 with --no-tune "
                "(or `compkit submit --tuning-from ensembles/NAME` to reuse a local ensemble's)",
            )


def _coverage_gap(members: list[Member], oof: _OofStores, train: SegmentationDataset) -> str | None:
    """Why the out-of-fold stores cannot tune thresholds (they must cover exactly the training images, for every
    member), in words for the console and ``members.json``; None when they can."""
    if oof.cover(train):
        return None
    wanted = {s.image_id for s in train.samples}
    for member in members:
        covered = set(member.oof_index())
        if member.untuned and not covered:
            return f"{member.name}: {member.untuned}"
        if not covered:
            return f"{member.name} has no out-of-fold predictions"
        if covered != wanted:
            have = len(covered & wanted)
            folds = f"{len(member.oof_stores)} fold" + ("s" if len(member.oof_stores) > 1 else "")
            hint = "; train every fold (--fold all) to tune" if have < len(wanted) else ""
            return (
                f"{member.name}'s out-of-fold predictions ({folds}) cover {have} of {len(wanted)} training images{hint}"
            )
    return "the members' out-of-fold predictions cover different images"


def _record_splits(spec: _EnsembleSpec, info: dict[str, Any]) -> None:
    """Every member's OOF stores must come from the dataset's current splits; ``info`` records which ones."""
    for m in spec.members:
        check_member_split(m, spec.data_root)
    splits_file = current_splits_file(spec.members[0], spec.data_root)
    if splits_file.is_file():
        fingerprint_of_splits = fingerprint(load_splits(spec.data_root, splits_file))
        info.update(splits_fingerprint=fingerprint_of_splits, splits_file=str(splits_file))


def _write_oof_store(
    spec: _EnsembleSpec, oof: _OofStores, combine: Combiner, target: tuple[int, int], staging: Path
) -> None:
    """The members' OOF predictions combined image by image into ``staging/oof`` at ``target``."""
    with StoreWriter(staging / "oof", spec.members[0].classes, target, spec.store_dtype) as store:
        for image_id in oof.image_ids:
            first = oof.first(image_id)
            probs = oof.combined(combine, image_id, target)
            store.write(image_id, probs, first.original_size(image_id), first.box(image_id))


def _write_oof_and_thresholds(
    spec: _EnsembleSpec,
    combine: Combiner,
    target: tuple[int, int],
    staging: Path,
    info: dict[str, Any],
    console: Console,
) -> None:
    """With complete OOF predictions: the OOF ensemble, and thresholds and postprocessing tuned on it (``info``
    gains the figures); without them, hard voting's thresholds (the vote rule) only."""
    classes = spec.members[0].classes
    oof = _OofStores([m.oof_index() for m in spec.members])
    train = open_dataset(spec.data_root, "train")
    fixed = None  # hard voting: the vote rule is the threshold
    if spec.method == "hard":
        fixed = np.full(len(classes), _vote_threshold(spec.weights, spec.votes), np.float32)
    untuned = "--no-tune" if not spec.tune else _coverage_gap(spec.members, oof, train)
    if untuned is not None:
        rule = "the vote rule" if fixed is not None else "0.5"
        console.print(f"[yellow]thresholds not tuned ({untuned}): {rule}, no postprocessing[/yellow]")
        info["untuned"] = untuned
        if fixed is not None:
            write_json(staging / THRESHOLDS_FILE, {c: float(t) for c, t in zip(classes, fixed, strict=True)})
        return
    _record_splits(spec, info)
    _write_oof_store(spec, oof, combine, target, staging)
    oof_ids = oof.image_ids
    # Tune on the store just written: one read per image instead of combining every member again,
    # and the same quantised values that `compkit submit` thresholds.
    images = _OofImages(
        oof_ids,
        Store(staging / "oof").read,
        train,
        target,
        cropped=any(oof.first(i).box(i) is not None for i in oof_ids),
        groups=[str(oof.first(i).folder) for i in oof_ids],  # one store per fold
    )
    table, choices = _tune(images, spec.method, fixed, spec.postprocess, console)
    console.print(table)
    info.update(choices.figures(), postprocess_choice=spec.postprocess)
    write_json(staging / THRESHOLDS_FILE, choices.thresholds())
    write_json(staging / POSTPROCESS_FILE, choices.rules())
    write_csv(staging / OOF_DICE_CSV, _oof_rows(choices))
    info["oof_images"] = len(oof_ids)
