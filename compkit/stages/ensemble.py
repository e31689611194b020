"""``compkit ensemble``: soft or hard voting of prediction artifacts -> ``ensembles/<name>/``.

Members are fold, run or ensemble folders (a run's folds are averaged first, soft voting within a model family)
or submission CSVs (hard-voted row by row, as teams vote across families). Everything streams image by image.
When every member has out-of-fold stores for all training images, one threshold per class is tuned on the OOF
ensemble and per-class postprocessing is kept where it raises OOF dice.

Output: ``test/`` (a probability store), ``oof/`` (when available), ``members.json``, ``thresholds.json``,
``postprocess.json``; for CSV members ``vote.csv`` instead of the stores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from compkit.data import SegmentationDataset, open_dataset
from compkit.data.cache import build_cache
from compkit.util.errors import CompkitError
from compkit.util.fileio import AtomicFolder, atomic_write, write_json
from compkit.data.splits import fingerprint, load_splits
from compkit.stores.members import MEMBERS_FILE, POSTPROCESS_FILE, THRESHOLDS_FILE, VOTE_CSV, Member, check_member_split, current_splits_file, open_member
from compkit.evaluation.metrics import dice_from_counts
from compkit.training.runs import claim_output_folder
from compkit.evaluation.postprocess import apply_rule, candidate_rules, median_component_area
from compkit.stores.probabilities import Store, StoreWriter, quantise
from compkit.evaluation.thresholds import THRESHOLD_GRID, OofTuner
from compkit.submission.layouts import RowWriter, submission_layout, validate

METHODS = ("soft", "hard")


def _check_members(members: list[Member]) -> None:
    first = members[0]
    for m in members[1:]:
        if m.classes != first.classes:
            raise CompkitError(m.path, f"member's classes differ from {first.path}'s")
        if sorted(m.image_ids) != sorted(first.image_ids):
            raise CompkitError(m.path, f"member's test images differ from {first.path}'s ({len(m.image_ids)} vs {len(first.image_ids)})")
        image_id = first.image_ids[0]
        if m.box(image_id) != first.box(image_id):
            raise CompkitError(m.path, f"member's stores cover another part of the images than {first.path}'s (data.crop_border differs)")


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
        table.add_row(m.name, m.description, str(len(m.test_stores)), f"{r[0]}x{r[1]}" + ("" if r == resolution else " (resampled)"), f"{w:g}")
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


def _tune(
    oof_ids: list[str],
    read_oof,
    dataset: SegmentationDataset,
    resolution: tuple[int, int],
    method: str,
    fixed: np.ndarray | None,
    console: Console,
    cropped: bool = False,
    groups: list[Any] | None = None,
) -> tuple[Table, dict[str, float], dict[str, dict], dict[str, float]]:
    """Thresholds and postprocessing per class, chosen on the OOF images. The table shows them scored on the same
    images (in-sample, optimistic) and cross-validated: for each fold (``groups``: the fold of each image), chosen
    on the other folds' images and scored on its own; the returned figures hold both means."""
    classes = list(dataset.classes)
    if resolution[0] != resolution[1]:
        raise CompkitError(None, f"OOF tuning needs square stores, got {resolution}")
    cache = build_cache(dataset, resolution[0], console=console, crop=cropped)  # truth framed as the stores are
    tuner = OofTuner(len(classes))
    areas: list[list[float]] = [[] for _ in classes]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("tuning thresholds on OOF", total=len(oof_ids))
        for image_id in oof_ids:
            truth, keep = _truth(cache, image_id)
            tuner.add(quantise(read_oof(image_id) * keep, "uint8"), truth)
            for c in range(len(classes)):
                areas[c].append(median_component_area(truth[c]))
            progress.advance(task)
    before = tuner.dice(np.full(len(classes), 0.5)).mean(axis=0)
    if fixed is not None:  # hard voting: the threshold is the vote rule
        thresholds, tuned = fixed, tuner.dice(fixed).mean(axis=0)
    else:
        thresholds, tuned = tuner.best_thresholds()

    # Cross-validation: each fold's thresholds chosen on the other folds' images.
    group = np.asarray(groups if groups is not None else [0] * len(oof_ids), dtype=object)
    folds = list(dict.fromkeys(group.tolist()))
    if fixed is not None:
        fold_thresholds = {f: fixed for f in folds}
    elif len(folds) > 1:
        grid = np.stack([tuner.dice(np.full(len(classes), t)) for t in THRESHOLD_GRID])  # (T, images, C)
        fold_thresholds = {f: THRESHOLD_GRID[grid[:, group != f, :].mean(axis=1).argmax(axis=0)] for f in folds}
    else:
        fold_thresholds = {}

    # Postprocessing candidates, scored per image and class on the OOF masks thresholded at every threshold in use
    # (the in-sample one and each fold's), so both figures are chosen by the same rule.
    median_area = np.array([np.median([a for a in col if a > 0]) if any(a > 0 for a in col) else 0.0 for col in areas])
    candidates = [candidate_rules(a) for a in median_area]
    scores: list[dict[float, np.ndarray]] = [{} for _ in classes]  # class -> threshold -> (images, rules) dice
    for c in range(len(classes)):
        for t in {float(thresholds[c]), *(float(ft[c]) for ft in fold_thresholds.values())}:
            scores[c][t] = np.zeros((len(oof_ids), len(candidates[c])))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("choosing postprocessing on OOF", total=len(oof_ids))
        for n, image_id in enumerate(oof_ids):
            truth, keep = _truth(cache, image_id)
            probs = read_oof(image_id) * keep
            for c in range(len(classes)):
                g = truth[c]
                for t, table_of_t in scores[c].items():
                    pred = probs[c] > t
                    for r, rule in enumerate(candidates[c]):
                        m = apply_rule(pred, rule)
                        table_of_t[n, r] = dice_from_counts(np.count_nonzero(m & g), np.count_nonzero(m), np.count_nonzero(g))
            progress.advance(task)

    def choose(per_rule: np.ndarray) -> int:
        means = per_rule.mean(axis=0)
        best = int(np.argmax(means))
        return best if best != 0 and means[best] > means[0] + 1e-9 else 0

    rules: dict[str, dict] = {}
    after = tuned.copy()
    cross = np.full(len(classes), np.nan)
    for c, name in enumerate(classes):
        in_sample = scores[c][float(thresholds[c])]
        best = choose(in_sample)
        if best != 0:
            rules[name] = candidates[c][best]
        after[c] = in_sample[:, best].mean()
        if fold_thresholds:
            held_out = np.zeros(len(oof_ids))
            for f, ft in fold_thresholds.items():
                per_image = scores[c][float(ft[c])]
                rule = choose(per_image[group != f]) if (group != f).any() else 0
                held_out[group == f] = per_image[group == f, rule]
            cross[c] = held_out.mean()

    cv_note = f"cross-validated over {len(folds)} folds" if fold_thresholds else "no cross-validated figure: one fold"
    table = Table(
        title=f"OOF dice per class ({len(oof_ids)} images, {method} ensemble)",
        caption="in-sample: thresholds and postprocessing chosen and scored on the same OOF images (optimistic); "
        f"cross-validated: chosen on the other folds' OOF images, scored on each held-out fold ({cv_note})",
    )
    for column in ("class", "at 0.5", "threshold", "tuned (in-sample)", "postprocess", "after (in-sample)", "after (cross-validated)"):
        table.add_column(column, justify="right" if column != "class" else "left")
    for c, name in enumerate(classes):
        rule = rules.get(name, {}).get("rule", "-")
        cv_text = "-" if np.isnan(cross[c]) else f"{cross[c]:.4f}"
        table.add_row(name, f"{before[c]:.4f}", f"{thresholds[c]:.3f}", f"{tuned[c]:.4f}", rule, f"{after[c]:.4f}", cv_text)
    cv_mean = "-" if np.isnan(cross).all() else f"[bold]{np.nanmean(cross):.4f}"
    table.add_row("[bold]mean", f"[bold]{before.mean():.4f}", "", f"[bold]{tuned.mean():.4f}", "", f"[bold]{after.mean():.4f}", cv_mean)
    figures = {"oof_dice_at_0.5": float(before.mean()), "oof_dice_in_sample": float(after.mean())}
    if not np.isnan(cross).all():
        figures["oof_dice_cross_validated"] = float(np.nanmean(cross))
    return table, {name: float(t) for name, t in zip(classes, thresholds, strict=True)}, rules, figures


def _csv_vote(members: list[Member], weights: np.ndarray, votes: int | None, dataset: SegmentationDataset, folder: Path, console: Console) -> None:
    layout = submission_layout(dataset)
    readers = [validate(m.path, dataset, check_rle=True, layout=layout) for m in members]
    shapes = {layout.names[s.image_id]: dataset.image_shape(s) for s in dataset.samples}
    k = (votes if votes is not None else int(weights.sum() // 2) + 1)
    if not 1 <= k <= weights.sum():
        raise CompkitError("--votes", f"must be between 1 and {int(weights.sum())}, got {k}")
    with atomic_write(folder / VOTE_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = RowWriter(handle, layout)
        with Progress(console=console, transient=True) as progress:
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


def ensemble(
    paths: list[str | Path],
    method: str = "soft",
    weights: list[float] | None = None,
    votes: int | None = None,
    name: str | None = None,
    data: str | Path | None = None,
    out_dir: str | Path = "ensembles",
    resolution: int | None = None,
    exist_ok: bool = False,
    mixed_folds: bool = False,
    console: Console | None = None,
) -> Path:
    """Combine ``paths`` into ``out_dir/<name>/``; returns that folder (a default name that is taken moves on to
    ``name-2``; a given one is replaced only with ``exist_ok``). Members stored at different resolutions
    are resampled image by image to ``resolution`` (default: the largest member's)."""
    console = console or Console()
    if method not in METHODS:
        raise CompkitError("--method", f"must be soft or hard, got {method!r}")
    if not paths:
        raise CompkitError(None, "no members given (e.g. `compkit ensemble runs/*`)")
    members = [open_member(p, mixed_folds) for p in paths]
    w = _weights(weights, members, method)
    data_root = data or next((m.data_root for m in members if m.data_root), None)
    kinds = {m.kind for m in members}
    if len(kinds) > 1:
        csv_member = next(m for m in members if m.kind == "csv")
        raise CompkitError(csv_member.path, "CSV members are hard-voted with other CSVs only (ensemble the runs' stores instead)")
    if data_root is None:
        raise CompkitError(None, "cannot tell which dataset the members predict: pass --data DATA")
    default = Path(out_dir) / (name or "+".join(m.name for m in members)[:80])
    with claim_output_folder(default, explicit=name is not None, exist_ok=exist_ok, option="--name") as folder:
        return _write_ensemble(folder, members, w, kinds, method, votes, data_root, resolution, console)


def _write_ensemble(folder: Path, members: list[Member], w, kinds: set[str], method: str, votes: int | None, data_root, resolution: int | None, console: Console) -> Path:
    """The ensemble of :func:`ensemble`, built in a staging folder and swapped into ``folder`` whole."""
    atomic = AtomicFolder(folder)
    staging = atomic.staging
    try:
        info: dict[str, Any] = {
            "method": "hard" if kinds == {"csv"} else method,
            "kind": "csv" if kinds == {"csv"} else "stores",
            "members": [
                {"path": str(m.path), "weight": float(x), "folds": len(m.test_stores), "families": m.families}
                for m, x in zip(members, w, strict=True)
            ],
            "families": sorted({f for m in members for f in m.families}),
            "votes": votes,
            "data_root": str(data_root),
        }
        if kinds == {"csv"}:
            test = open_dataset(data_root, "test")
            _csv_vote(members, w, votes, test, staging, console)
            write_json(staging / MEMBERS_FILE, info)
            atomic.commit()
            console.print(f"[green]wrote[/green] {folder / VOTE_CSV} (hard vote of {len(members)} CSVs)")
            return folder

        _check_members(members)
        classes = members[0].classes
        target = common_resolution(members, resolution)
        console.print(members_table(members, w, target))
        thresholds = [m.threshold_vector() for m in members]
        combine = Combiner(method, w, thresholds)
        info.update(classes=classes, resolution=list(target), member_resolutions=[list(m.resolution) for m in members])
        dtype = "float16" if method == "hard" else "uint8"
        with StoreWriter(staging / "test", classes, target, dtype) as store, Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{method} ensemble of {len(members)} members", total=len(members[0].image_ids))
            for image_id in members[0].image_ids:
                probs = combine([m.test_probs(image_id, target) for m in members])
                store.write(image_id, probs, members[0].original_size(image_id), members[0].box(image_id))
                progress.advance(task)

        oof_indexes = [m.oof_index() for m in members]
        oof_ids = sorted(oof_indexes[0])
        train = open_dataset(data_root, "train")
        complete = bool(oof_ids) and all(sorted(ix) == oof_ids for ix in oof_indexes) and set(oof_ids) == {s.image_id for s in train.samples}
        fixed = np.full(len(classes), _vote_threshold(w, votes), np.float32) if method == "hard" else None
        if complete:
            for m in members:
                check_member_split(m, data_root)
            splits_file = current_splits_file(members[0], data_root)
            if splits_file.is_file():
                info.update(splits_fingerprint=fingerprint(load_splits(data_root, splits_file)), splits_file=str(splits_file))

            def read_oof(image_id: str) -> np.ndarray:
                return combine([ix[image_id].read(image_id, target) for ix in oof_indexes])

            with StoreWriter(staging / "oof", classes, target, dtype) as store:
                for image_id in oof_ids:
                    store.write(image_id, read_oof(image_id), oof_indexes[0][image_id].original_size(image_id), oof_indexes[0][image_id].box(image_id))
            cropped = any(oof_indexes[0][i].box(i) is not None for i in oof_ids)
            # Tune on the store just written: one read per image instead of combining every member again,
            # and the same quantised values that `compkit submit` thresholds.
            oof_store = Store(staging / "oof")
            fold_of = [str(oof_indexes[0][i].folder) for i in oof_ids]  # one store per fold
            table, tuned, rules, figures = _tune(oof_ids, oof_store.read, train, target, method, fixed, console, cropped, fold_of)
            console.print(table)
            info.update(figures)
            write_json(staging / THRESHOLDS_FILE, tuned)
            write_json(staging / POSTPROCESS_FILE, rules)
            info["oof_images"] = len(oof_ids)
        else:
            console.print("[yellow]no complete out-of-fold predictions for every member: thresholds not tuned[/yellow]")
            if fixed is not None:
                write_json(staging / THRESHOLDS_FILE, {c: float(t) for c, t in zip(classes, fixed, strict=True)})
        write_json(staging / MEMBERS_FILE, info)
        atomic.commit()
    finally:
        atomic.abort()
    console.print(f"[green]wrote[/green] {folder} ({method} vote of {len(members)} members: {', '.join(m.name for m in members)})")
    console.print(f"next: compkit submit {folder}")
    return folder
