"""ultralytics settled before it is imported (offline, safe loading, a configuration folder compkit owns, a font
copied from matplotlib), its process-wide settings put back after it runs, and its pretrained release files.

Shared by the YOLO family (:mod:`compkit.families.ultralytics`) and the weights cache (:mod:`compkit.pretrained.weights`,
which lists and pulls the release files), so it imports nothing of compkit's; torch, OpenCV, matplotlib and
ultralytics are imported only when used, so that listing the weights cache stays cheap."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from compkit.util.errors import warn

OFFLINE_AND_SAFE = ("YOLO_OFFLINE", "ULTRALYTICS_SAFE_LOAD")  # the environment ultralytics always runs with here
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


@contextlib.contextmanager
def process_settings_kept() -> Iterator[None]:
    """ultralytics changes process-wide settings (torch's thread count and deterministic mode, OpenCV's threads);
    put them back afterwards, so that what runs next in the process (another fold, an smp run) is unaffected."""
    import cv2
    import torch

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    deterministic, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        torch.utils.deterministic.fill_uninitialized_memory = fill


ANSI_CODE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ARGUMENT_DUMP = re.compile(r"^\S+: (\w+=[^,]*, ){10,}")  # print_args' "engine/trainer: agnostic_nms=False, ..." line


class PlainLines(logging.Filter):
    """ultralytics' log records as plain text (no colour codes), without its argument dump (a line of thousands of
    characters; the same arguments are in the run's ``args.yaml``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = ANSI_CODE.sub("", record.getMessage())
        if ARGUMENT_DUMP.match(text):
            return False
        record.msg, record.args = text, None
        return True


@contextlib.contextmanager
def plain_logging(stream=None) -> Iterator[None]:
    """Within the block, where ``stream`` (stdout) is not a terminal (a log file, a pipe, CI), ultralytics logs
    :class:`PlainLines`; on a terminal it logs as it always does."""
    stream = stream if stream is not None else sys.stdout
    if stream.isatty():
        yield
        return
    logger = logging.getLogger("ultralytics")
    plain = PlainLines()
    logger.addFilter(plain)
    try:
        yield
    finally:
        logger.removeFilter(plain)


def config_dir() -> Path:
    return Path(os.environ.get("COMPKIT_CONFIG_DIR", Path.home() / ".config" / "compkit")) / "ultralytics"


def prepare_offline() -> None:
    """Everything ultralytics would fetch, set or probe, settled before it is imported: no probes or downloads
    (``YOLO_OFFLINE``) and no unpickling or eval of user files (``ULTRALYTICS_SAFE_LOAD``); a user's other value of
    either is replaced with a warning, never silently."""
    for name in OFFLINE_AND_SAFE:
        if os.environ.get(name, "1") != "1":
            warn(name, f"{os.environ[name]!r} replaced by '1': compkit runs ultralytics offline and with safe loading")
        os.environ[name] = "1"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir()))
    font_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in FONTS:
        if not (font_dir / name).exists():
            shutil.copyfile(source, font_dir / name)
    with process_settings_kept():
        from ultralytics import settings  # imported only now: the environment above must be set first

    if settings.get("sync", True):
        settings.update({"sync": False})


def release_files() -> frozenset[str]:
    """ultralytics' pretrained release files (``yolov8n-seg.pt``, ``yolo11x-seg.pt``, ...)."""
    prepare_offline()
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return frozenset(n for n in GITHUB_ASSETS_NAMES if n.endswith(".pt"))


def release_tag(file_name: str) -> tuple[str, str]:
    """(model name, what it was pretrained on) of a release file."""
    stem = file_name.removesuffix(".pt")
    return stem, "imagenet" if "-cls" in stem else "oiv7" if "-oiv7" in stem else "coco"


def fetch_release_file(file_name: str, target: Path) -> None:
    """Download a release file to ``target`` with ultralytics' own downloader (progress bar, size check)."""
    prepare_offline()
    from ultralytics.utils.downloads import attempt_download_asset

    attempt_download_asset(str(target))  # a missing path whose name is a release file: downloaded to that path
