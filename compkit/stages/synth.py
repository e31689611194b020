"""``compkit synth``: a synthetic dataset in a real competition's exact layout (hand bones, fundus lesions,
skin lesions; the generators live in :mod:`compkit.synthetic`). Test labels go to ``DATA_gt`` beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from compkit.data.labelled import ground_truth_dir
from compkit.synthetic import SYNTH_KINDS, SynthRequest
from compkit.util.console import output_console, transient_progress
from compkit.util.errors import REPLACE_FLAG, CompkitError
from compkit.util.fileio import AtomicFolder


def _prepare_output(path: Path, exist_ok: bool) -> None:
    empty_dir = path.is_dir() and not any(path.iterdir())
    if path.exists() and not empty_dir and not exist_ok:
        raise CompkitError(path, f"already exists and is not empty (use {REPLACE_FLAG} to replace it)")


def synth(
    data: str | Path,
    patients: int = 40,
    test_patients: int = 10,
    size: int = 512,
    seed: int = 0,
    exist_ok: bool = False,
    kind: str = "handbone",
    console: Console | None = None,
    options: dict | None = None,
) -> Path:
    """Write a synthetic dataset of ``kind`` to ``data`` (and test labels to ``data``_gt). Returns ``data``.
    ``options``: the generator's variant parameters (:mod:`compkit.synthetic`: contrast, noise, bone_width, aspect,
    forearm_out, lesion_scale), e.g. for data the defaults were not tuned on."""
    console = console or output_console()
    data = Path(data).absolute()
    gt = ground_truth_dir(data)
    generate = SYNTH_KINDS.get(kind)
    if patients < 1 or test_patients < 0:
        raise CompkitError(None, "--patients must be at least 1 and --test-patients at least 0")
    if size < 64:
        raise CompkitError(None, f"--size {size} is too small (at least 64 px)")
    for target in (data, gt):
        _prepare_output(target, exist_ok)
    data_folder, gt_folder = AtomicFolder(data), AtomicFolder(gt)
    try:
        with transient_progress(console) as progress:
            request = SynthRequest(
                data_folder.staging, gt_folder.staging, patients, test_patients, size, seed, progress
            )
            summary = generate(request, **(options or {}))
        data_folder.commit()
        if any(gt_folder.staging.iterdir()):
            gt_folder.commit()
        else:  # no test labels this time: an older DATA_gt would no longer match DATA
            gt_folder.abort()
            shutil.rmtree(gt, ignore_errors=True)
    except OSError as e:
        raise CompkitError(data, f"cannot write: {e.strerror or e}") from None
    finally:
        data_folder.abort()
        gt_folder.abort()
    console.print(f"[green]synthetic dataset[/green] {data}: {summary}, {size} px; test labels in {gt}")
    console.print(f"next: compkit eda {data}")
    return data
