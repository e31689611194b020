"""``compkit check-data``: how compkit reads a dataset folder, and the ``dataset.yaml`` it proposes.

Prints the format (a ``dataset.yaml``, a registered layout, or an auto-detected one), the splits with their
numbers of images and labels per class, unmatched files (images without labels, label files without images,
with the first few names), the values found in the mask files, the polygons clipped to the image (per class, how
many and how far out), the image sizes and bit depths, and what the reader
decided on its own (e.g. a CSV's RLE order, and why). Where detection is unsure (or two readings are possible) it
proposes a ``dataset.yaml``; ``--write`` writes it (or the reading in use) to ``DATA/dataset.yaml``, ``--out FILE``
elsewhere (for read-only data: its ``root:`` then points back at the data).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from compkit.data import SegmentationDataset, open_dataset
from compkit.data.described import DescribedDataset, spec_to_yaml, validate_spec
from compkit.data.formats import DESCRIPTION_FILE
from compkit.data.layouts import Survey, survey
from compkit.data.raster import clip_summary, describe_clips, polygon_clips
from compkit.data.splits import patient_of
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import REPLACE_FLAG, CompkitError
from compkit.util.fileio import atomic_write, writable_folder
from compkit.util.imageio import describe_image, read_label_image

SHOWN = 3  # names listed per kind of unmatched file
VALUES_SHOWN = 8


def _names(items: list[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    if not total:
        return "-"
    more = f", ... ({total})" if total > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def split_report(dataset: SegmentationDataset, limit: int, console: Console) -> dict[str, Any]:
    """Counts, unmatched files, mask values, polygons clipped to the image, sizes and bit depths of one split (masks
    read for ``limit`` images)."""
    labelled = [s for s in dataset.samples if s.label_path is not None]
    unlabelled = [s.image_id for s in dataset.samples if s.label_path is None]
    sizes: Counter = Counter()
    kinds: Counter = Counter()
    values: dict[str, set] = {}
    present = np.zeros(len(dataset.classes), np.int64)
    area = np.zeros(len(dataset.classes), np.float64)
    checked = labelled[:limit]
    clips = []
    tagged: list[tuple[str, int, int]] = []  # (image id, EXIF orientation, the orientation it is read with)
    with transient_progress(console) as progress:
        task = progress.add_task(f"reading the {dataset.split} split", total=len(dataset.samples))
        for i, sample in enumerate(dataset.samples):
            shape = dataset.image_shape(sample)
            sizes[f"{shape[1]}x{shape[0]}"] += 1
            tag = dataset.exif_tag(sample)
            if tag != 1:
                tagged.append((sample.image_id, tag, dataset.orientation(sample)))
            if i < limit:
                kinds[describe_image(sample.image_path)] += 1
            progress.advance(task)
        task = progress.add_task(f"reading {len(checked)} label sets", total=len(checked))
        for sample in checked:
            mask = dataset.read_mask(sample)
            clips += polygon_clips(sample.polygons, mask.shape[1:], dataset.classes, sample.label_path)
            pixels = mask.reshape(len(dataset.classes), -1)
            present += pixels.any(axis=1)
            area += pixels.mean(axis=1)
            for path in dataset.source_files(sample)[1:]:
                if path.suffix.lower() in (".csv", ".json", ".npy") or not path.is_file():
                    continue
                label = read_label_image(path)
                kind = f"{path.parent.name.replace(sample.image_path.stem, '*')}/*{path.suffix.lower()}"
                found = values.setdefault(kind, set())
                if len(found) <= 64:
                    if label.ndim == 2:
                        found.update(np.unique(label).tolist())
                    else:  # colour masks: (B, G, R) triples as OpenCV stores them, shown as R,G,B
                        found.update(
                            tuple(v[::-1]) for v in np.unique(label.reshape(-1, label.shape[2]), axis=0).tolist()
                        )
            progress.advance(task)
    return {
        "images": len(dataset.samples),
        "labelled": len(labelled),
        "checked": len(checked),
        "classes": {
            c: {"images": int(present[k]), "area": float(area[k] / max(1, len(checked)))}
            for k, c in enumerate(dataset.classes)
        },
        "unlabelled": unlabelled,
        "unmatched_labels": dataset.unmatched_labels(),
        "mask_values": {k: sorted(v, key=str) for k, v in values.items()},
        "clipped_polygons": clip_summary(clips, dataset.classes),
        "sizes": dict(sizes.most_common()),
        "kinds": dict(kinds.most_common()),
        "exif_orientation": _orientation_report(tagged),
        "notes": list(dataset.notes),
    }


def _orientation_report(tagged: list[tuple[str, int, int]]) -> dict[str, Any]:
    """EXIF-tagged images: how many, their orientation values, the first few, and which were turned as tagged."""
    return {
        "images": len(tagged),
        "orientations": dict(sorted(Counter(tag for _, tag, _ in tagged).items())),
        "first": [image_id for image_id, _, _ in tagged[:SHOWN]],
        "turned": [image_id for image_id, _, used in tagged if used != 1],
    }


def describe_orientations(report: dict[str, Any]) -> str:
    """One line: ``2 images (orientation 6: 2): a.jpg, b.jpg; read as stored, the pixels that were labelled``."""
    counts = ", ".join(f"orientation {tag}: {n}" for tag, n in report["orientations"].items())
    images = f"{report['images']} image{'s' if report['images'] > 1 else ''}"
    line = f"{images} ({counts}): {_names(report['first'], report['images'])}; "
    turned = report["turned"]
    as_stored = report["images"] - len(turned)
    decided = (
        [f"{as_stored} read as stored (the tag ignored: the stored pixels are what was labelled)"] if as_stored else []
    )
    if turned:
        decided.append(f"{len(turned)} turned as tagged (their masks fit only the turned image): {_names(turned)}")
    return line + "; ".join(decided)


def _print_split(console: Console, split: str, report: dict[str, Any]) -> None:
    table = Table(title=f"{split}: {report['images']} images, {report['labelled']} with labels")
    table.add_column("class")
    table.add_column(f"images with it (of {report['checked']})", justify="right")
    table.add_column("mean area", justify="right")
    for name, stats in report["classes"].items():
        table.add_row(name, str(stats["images"]), f"{stats['area']:.2%}")
    if report["labelled"]:
        console.print(table)
    else:
        console.print(f"[bold]{split}[/bold]: {report['images']} images, no labels")
    facts = Table(show_header=False, box=None, padding=(0, 2))
    facts.add_row("images without labels", _names(report["unlabelled"]))
    facts.add_row("label files without images", _names(report["unmatched_labels"]))
    for kind, values in report["mask_values"].items():
        shown = ", ".join(map(str, values[:VALUES_SHOWN])) + (
            f", ... ({len(values)} values)" if len(values) > VALUES_SHOWN else ""
        )
        facts.add_row(f"values in {kind}", shown)
    if report["clipped_polygons"]:
        facts.add_row("polygons clipped to the image", describe_clips(report["clipped_polygons"]))
    facts.add_row(
        "image sizes (w x h)",
        ", ".join(f"{s} ({n})" for s, n in list(report["sizes"].items())[:5])
        + (" ..." if len(report["sizes"]) > 5 else ""),
    )
    facts.add_row("image kinds", ", ".join(f"{k} ({n})" for k, n in report["kinds"].items()))
    if report["exif_orientation"]["images"]:
        facts.add_row("EXIF orientation tags", describe_orientations(report["exif_orientation"]))
    for note in report["notes"]:
        facts.add_row("note", note)
    console.print(facts)


def _open(found: Survey, split: str) -> SegmentationDataset:
    spec = found.spec
    if spec is not None:  # a description (written or proposed): unlabelled images are listed, not refused
        return DescribedDataset.from_spec(
            found.root,
            validate_spec(spec, found.description or found.root),
            split,
            source=found.description or found.root,
            lenient=True,
        )
    return open_dataset(found.description or found.root, split)


def description_text(root: Path, described: Any, doubts: list[str], target: Path | None = None) -> str:
    """The ``dataset.yaml`` text for ``root``; written to ``target`` outside the data, it names the data as ``root:``
    relative to itself (as described.py reads it)."""
    text = f"# compkit check-data: how to read {root.name} (edit freely)\n" + "".join(
        f"# unsure: {d}\n" for d in doubts
    )
    if target is not None and target.parent.resolve() != root.resolve():
        data, folder = root.resolve(), target.parent.resolve()
        # Relative, so that both can move together (/kaggle/working -> ../input/x); absolute when they share only /.
        absolute = os.path.commonpath([data, folder]) == data.anchor
        where = str(data) if absolute else os.path.relpath(data, folder)
        text += f"# the data{'' if absolute else ', relative to this file'}\n" + yaml.safe_dump(
            {"root": where}, allow_unicode=True, width=1000
        )
    return text + spec_to_yaml(described)


def _print_format(found: Survey, console: Console) -> None:
    """The format compkit reads, or (unsure) every reading it sees with its doubts."""
    if found.description is not None:
        console.print(f"format: [bold]{found.format}[/bold], described by {found.description}")
    elif found.sure:
        console.print(
            f"format: [bold]{found.format}[/bold] (detected)"
            + (f"; also readable as {', '.join(found.others)}" if found.others else "")
        )
    else:
        console.print(
            f"[yellow]not sure how to read {found.root}[/yellow]: compkit needs a {DESCRIPTION_FILE}. What it sees:"
        )
        for k, reading in enumerate(found.readings, start=1):
            console.print(f"  {k}. {reading.summary}")
            for doubt in reading.doubts:
                console.print(f"     - {doubt}")
        if len(found.readings) > 1:
            console.print(
                "two or more readings are possible: the proposal below takes the first; edit it if that is not your data"
            )


def _write_description(
    found: Survey, described: Any, doubts: list[str], out: str | Path | None, exist_ok: bool, console: Console
) -> Path:
    """The description written into the data folder, or to ``out``; its path."""
    target = Path(out) if out is not None else found.root / DESCRIPTION_FILE
    if out is None and not writable_folder(found.root):
        raise CompkitError(
            target,
            f"{found.root} is read-only: pass --out FILE to write the description elsewhere (its root: points back at the data)",
        )
    if target.exists() and not exist_ok:
        raise CompkitError(target, f"already exists (pass {REPLACE_FLAG} to replace it)")
    with atomic_write(target, "w", encoding="utf-8") as handle:
        handle.write(description_text(found.root, described, doubts, target))
    how = (
        f"compkit now reads {found.root} through it"
        if out is None
        else f"pass --data {target} to read {found.root} through it"
    )
    console.print(f"[green]wrote[/green] {target}: {how}")
    return target


def check_data(
    data: str | Path,
    write: bool = False,
    exist_ok: bool = False,
    limit: int = 500,
    console: Console | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Print how compkit reads ``data``; with ``write``, write the proposed (or used) ``dataset.yaml`` into the data
    folder, or to ``out`` (which implies ``write``: for read-only data). Returns the report (format, sure, splits,
    proposal, written). ``exist_ok``: replace an existing description."""
    console = console or output_console()
    found = survey(data)
    if found.format is None:
        raise CompkitError(
            data,
            "found no layout compkit can read: no dataset.yaml, no known format, no images with masks paired by name and no "
            f"CSV of run-length encodings; write a {DESCRIPTION_FILE} (see docs/datasets.md, 'Bring your own data')",
        )
    proposal = found.proposal
    use_proposal = not found.sure and proposal is not None and proposal.spec
    _print_format(found, console)

    report: dict[str, Any] = {
        "format": found.format,
        "sure": found.sure,
        "splits": {},
        "proposal": None,
        "written": None,
    }
    train = _open(found, "train")
    datasets = {"train": train}
    if train.has_split("test"):
        datasets["test"] = _open(found, "test")
    for split, dataset in datasets.items():
        report["splits"][split] = split_report(dataset, limit, console)
        _print_split(console, split, report["splits"][split])

    described = train.describe()
    doubts = list(proposal.doubts) if use_proposal else []
    unlabelled = report["splits"]["train"]["unlabelled"]
    if unlabelled and isinstance(train, DescribedDataset) and train.spec.missing == "error":
        problem = f"{len(unlabelled)} training images have no labels: training stops until the description says missing: empty or missing: skip"
        console.print(f"[yellow]{problem}[/yellow]")
        doubts.append(problem)
    text = description_text(found.root, described, doubts)
    if use_proposal:
        report["proposal"] = text
        console.print(f"proposed {DESCRIPTION_FILE} ({len(text.splitlines())} lines):")
        console.print(text, markup=False, highlight=False)
    report["patients"] = _print_grouping(train, console)
    if write or out is not None:
        report["written"] = _write_description(found, described, doubts, out, exist_ok, console)
    elif use_proposal:
        how = "--write" if writable_folder(found.root) else f"--out {DESCRIPTION_FILE} (the data folder is read-only)"
        console.print(f"write it with `compkit check-data {data} {how}`")
    console.print(f"next: {_next_step(data, found.root, report)}")
    return report


def _print_grouping(train: SegmentationDataset, console: Console) -> dict[str, Any]:
    """How the folds will group the training images into patients (a patient's images never split across folds)."""
    originals = [s for s in train.samples if not s.meta.get("augmented")]
    patients = {patient_of(s) for s in originals}
    grouping = {"images": len(originals), "patients": len(patients), "by": train.patients_from}
    if len(patients) < len(originals):
        console.print(
            f"patients: {len(originals)} training images of {len(patients)} patients, grouped by {train.patients_from}; "
            "`compkit split` keeps each patient's images in one fold"
        )
    else:
        console.print(
            f"patients: every training image is its own group ({train.patients_from}); if several images show one "
            "patient, say how to tell (patient: {column: NAME} or a regex in dataset.yaml) before splitting"
        )
    return grouping


def _next_step(data: str | Path, root: Path, report: dict[str, Any]) -> str:
    """The command after check-data: the split (after writing the proposal where one is pending), beside read-only
    data with ``--out``."""
    pending = report["proposal"] is not None and report["written"] is None
    writable = writable_folder(root)
    target = report["written"] or (DESCRIPTION_FILE if pending and not writable else data)
    split = f"compkit split --data {target}" + ("" if writable else " --out splits.json")
    return f"the command above, then {split}" if pending else split
