"""Pretrained weights: what a model starts from, where it is cached, pulling it, and using it offline.

compkit downloads weights only when asked (a recipe's ``model.encoder_weights``, ``compkit weights pull``), only
into the libraries' standard caches, and reads a filled cache without any network:

- smp native encoders (``resnet34``, ``efficientnet-b5``, ``vgg19``, ...): the Hugging Face hub repository smp
  names for the tag (``smp-hub/<encoder>.<tag>`` at the revision smp pins): ``config.json`` (mean/std) and
  ``model.safetensors``.
- timm encoders (``tu-<model>``): timm's hub repository for the tag (``timm/<model>.<tag>``): ``model.safetensors``
  (``pytorch_model.bin`` where that is all it publishes), following the repository's ``main``.
- asset libraries (ultralytics' YOLO release files, :data:`ASSET_LIBRARIES`): ``<assets>/<library>/<file>``.
- a local file.

Hub entries live in the hub's standard cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``), so weights fetched once,
by compkit or any other tool, are reused. ``COMPKIT_WEIGHTS=DIR`` (or ``--cache DIR``) points everything at
``DIR/hub`` and ``DIR/<library>``: the layout ``compkit weights export DIR`` writes for offline machines. Models are
built by the libraries themselves (smp, timm), reading that cache with the hub switched offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from rich.console import Console

from compkit.pretrained.ultralytics_env import fetch_release_file, release_tag
from compkit.util.errors import CompkitError
from compkit.util.fileio import PARTIAL_MARK
from compkit.util.registry import Registry, did_you_mean

if TYPE_CHECKING:
    from compkit.training.recipe import ModelConfig

WEIGHTS_ENV = "COMPKIT_WEIGHTS"
HUB_DIR = "hub"  # a weights folder's Hugging Face hub cache (the hub's own layout below it)
SETTING = "model.encoder_weights"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order of preference
LOCAL_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar")
HUB_LIBRARIES = {"smp-hub": "smp", "timm": "timm"}  # hub namespace -> library whose encoders it serves


@dataclass(frozen=True)
class PretrainedWeights:
    """Weights a model starts from: a hub repository, an asset library's release file, or a local file."""

    name: str  # as a recipe names the model: resnet34, tu-resnet18, yolov8n-seg
    tag: str  # imagenet, a1_in1k, coco; "file" for a local file
    library: str  # smp, timm, an asset library (ultralytics), or "file"
    repo_id: str | None = None  # hub repository
    revision: str | None = None  # pinned commit (smp); None follows the repository's main (timm)
    files: tuple[tuple[str, ...], ...] = ()  # hub: per needed file, the names to try in order; the weights last
    asset: str | None = None  # an asset library's release file name
    path: str | None = None  # a local file

    @property
    def reference(self) -> str:
        """What ``compkit weights pull`` takes to fetch exactly these weights."""
        if self.asset is not None:
            return self.asset
        if self.path is not None:
            return self.path
        return f"{self.name}.{self.tag}"

    def describe(self) -> str:
        where = self.repo_id or self.asset or self.path
        return f"{self.name} {self.tag} ({where})"


@dataclass(frozen=True)
class CachedWeights:
    """Pretrained weights present on disk: a hub snapshot, an asset file or a local file."""

    name: str
    tag: str
    library: str
    files: tuple[Path, ...]  # the weights file first
    repo_id: str | None = None
    revision: str | None = None  # the snapshot's commit
    on_main: bool = False  # refs/main points at this snapshot (how unpinned libraries such as timm find it)

    @property
    def file(self) -> Path:
        return self.files[0]

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    @property
    def location(self) -> Path:
        """The folder (hub repository) or file (asset, local file) that holds the entry."""
        if self.repo_id is not None:
            return self.file.parent.parent.parent
        return self.file

    def sha256(self) -> str:
        return file_sha256(self.file)

    def record(self) -> dict:
        """What a run folder keeps about the weights a fold started from (``pretrained.json``)."""
        return {
            "name": self.name,
            "tag": self.tag,
            "library": self.library,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "file": self.file.name,
            "path": str(self.file),
            "size": self.file.stat().st_size,
            "sha256": self.sha256(),
        }

    def describe(self) -> str:
        where = f"{self.repo_id}@{self.revision[:8]}" if self.repo_id and self.revision else str(self.file)
        return f"{self.name} {self.tag} ({where}, {self.file.name} sha256 {self.sha256()[:12]})"


@dataclass(frozen=True)
class WeightsCache:
    hub: Path  # the Hugging Face hub cache (models--<org>--<name>/ folders)
    assets: Path  # <assets>/<library>/<file>
    folder: Path | None = None  # the folder given with --cache / COMPKIT_WEIGHTS; None: the standard caches

    @property
    def option(self) -> str:
        """The ``--cache`` option that names this cache in a command (empty for the standard caches)."""
        return f" --cache {shlex.quote(str(self.folder))}" if self.folder is not None else ""

    def describe(self) -> str:
        return str(self.folder) if self.folder is not None else f"{self.hub} and {self.assets}"


@dataclass(frozen=True)
class AssetLibrary:
    """A library whose pretrained weights are release files (not hub repositories), kept in ``<assets>/<name>/``."""

    name: str
    url: str  # where its files come from (to tell whether the network reaches it)
    describe: Callable[[str], tuple[str, str]]  # file name -> (model name, tag)
    fetch: Callable[[str, Path], None]  # download the named release file to a path


# Registered here, all of them, so that listing and pulling never depend on which family was imported first.
ASSET_LIBRARIES: Registry[AssetLibrary] = Registry("asset library")
ASSET_LIBRARIES.register(
    "ultralytics",
    AssetLibrary(name="ultralytics", url="https://github.com", describe=release_tag, fetch=fetch_release_file),
    "ultralytics' YOLO release files (yolov8n-seg.pt, yolo11x-seg.pt, ...)",
)


def weights_cache(folder: str | Path | None = None) -> WeightsCache:
    """``folder`` (``--cache``), else ``$COMPKIT_WEIGHTS``, else the hub's standard cache and ``~/.cache/compkit/weights``."""
    folder = folder or os.environ.get(WEIGHTS_ENV) or None
    if folder:
        return folder_cache(Path(folder).expanduser().absolute())
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return WeightsCache(default_hub_cache(), xdg / "compkit" / "weights")


def folder_cache(folder: Path) -> WeightsCache:
    """The cache of one weights folder (``--cache DIR``, an export): ``DIR/hub`` and ``DIR/<library>``."""
    return WeightsCache(folder / HUB_DIR, folder, folder)


def default_hub_cache() -> Path:
    """The hub cache as huggingface_hub resolves it, read from the environment now (not when it was imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"  # huggingface_hub's own layout
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as the environment says now (huggingface_hub reads it once, when imported)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a connection to ``url``'s host opens: one quick try, so that a machine without network is told so at
    once instead of after the download clients' retries. Behind a proxy, assume yes and let the client try."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)), timeout=timeout
        ):
            return True
    except OSError:
        return False


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime)


# ---------------------------------------------------------------------------------------------------------------
# Encoders (smp, timm): which hub repository serves a recipe's encoder and tag


def _looks_like_file(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(LOCAL_SUFFIXES) or value.startswith("~")


def local_weights(name: str, value: str) -> PretrainedWeights:
    path = Path(value).expanduser()
    if not path.is_file():
        raise CompkitError(
            value, f"{SETTING}: file not found (a local weights file, or a published tag such as imagenet)"
        )
    return PretrainedWeights(name=name, tag="file", library="file", path=str(path))


def encoder_weights(model: ModelConfig) -> PretrainedWeights | None:
    """The weights an smp model's encoder starts from (None: random initialisation)."""
    value = model.encoder_weights
    if value is None or value is False:
        return None
    if isinstance(value, str) and _looks_like_file(value):
        return local_weights(model.encoder, value)
    return hub_encoder_weights(model.encoder, value)


def hub_encoder_weights(encoder: str, tag: str | bool = True) -> PretrainedWeights:
    """The hub weights of an smp or timm encoder for ``tag`` (``True`` or ``imagenet``: the encoder's default)."""
    import segmentation_models_pytorch as smp
    from segmentation_models_pytorch.encoders import is_equivalent_to_timm_universal

    if encoder.startswith("tu-"):
        return _timm_weights(encoder[3:], tag)
    if is_equivalent_to_timm_universal(encoder):  # deprecated timm-* names: smp builds and loads them as tu-*
        name = encoder.replace("timm-", "tu-")
        return _timm_weights(name.replace("tu-", "tu-tf_")[3:] if "mobilenetv3" in name else name[3:], tag)
    if encoder not in smp.encoders.encoders:
        known = smp.encoders.get_encoder_names()
        raise CompkitError(
            "model.encoder",
            f"unknown encoder {encoder!r}{did_you_mean(encoder, known)} (or a timm encoder as tu-<name>)",
        )
    published = smp.encoders.encoders[encoder]["pretrained_settings"]
    if not published:
        raise CompkitError(SETTING, f"smp publishes no pretrained weights for {encoder}")
    if tag is True:
        tag = "imagenet" if "imagenet" in published else next(iter(published))
    if tag not in published:
        raise CompkitError(
            SETTING,
            f"{encoder} has no published weights {tag!r}{did_you_mean(str(tag), published)} (published: {', '.join(published)})",
        )
    settings = published[tag]
    return PretrainedWeights(
        name=encoder,
        tag=tag,
        library="smp",
        repo_id=settings["repo_id"],
        revision=settings["revision"],
        files=(("config.json",), ("model.safetensors",)),
    )


def _timm_tag(model: str, requested: str, tags: list[str], default: str) -> str:
    """A timm tag from what a recipe says: the exact tag, else the default or the one tag it ends with or names
    (``in22k`` -> ``fb_in22k``, ``ssl`` -> ``fb_ssl_yfcc100m_ft_in1k``)."""
    requested = requested.lstrip(".")
    if requested in tags:
        return requested
    for match in (lambda t: t.endswith(requested), lambda t: requested in t.split("_")):
        if match(default):
            return default
        found = [t for t in tags if match(t)]
        if len(found) == 1:
            return found[0]
        if found:
            raise CompkitError(
                SETTING, f"{requested!r} names several timm weights of {model}: {', '.join(found)}; pick one"
            )
    raise CompkitError(
        SETTING,
        f"timm publishes no weights {requested!r} for {model}{did_you_mean(requested, tags)} (published: {', '.join(tags)})",
    )


def _timm_weights(model_and_tag: str, requested: str | bool) -> PretrainedWeights:
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    model, named_tag = split_model_name_tag(model_and_tag)
    if not timm.is_model(model):
        raise CompkitError(
            "model.encoder", f"unknown timm encoder {'tu-' + model!r}{did_you_mean(model, timm.list_models())}"
        )
    tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{model}.*") if n.split(".", 1)[0] == model]
    if not tags:
        raise CompkitError(SETTING, f"timm publishes no pretrained weights for {model}")
    default = named_tag or get_pretrained_cfg(model).tag or tags[0]
    if named_tag and named_tag not in tags:
        raise CompkitError(
            "model.encoder", f"timm publishes no weights {named_tag!r} for {model}{did_you_mean(named_tag, tags)}"
        )
    tag = default if requested is True or requested == "imagenet" else _timm_tag(model, str(requested), tags, default)
    if named_tag and tag != named_tag:
        raise CompkitError(SETTING, f"{tag!r} contradicts the tag in model.encoder (tu-{model}.{named_tag})")
    cfg = get_pretrained_cfg(f"{model}.{tag}")
    if not cfg.hf_hub_id:
        raise CompkitError(
            SETTING,
            f"timm loads {model}.{tag} from {cfg.url}, not the Hugging Face hub: download it and set {SETTING} to the file",
        )
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    files = ((cfg.hf_hub_filename,),) if getattr(cfg, "hf_hub_filename", None) else (HUB_WEIGHT_FILES,)
    return PretrainedWeights(
        name=f"tu-{model}", tag=tag, library="timm", repo_id=repo_id, revision=revision or None, files=files
    )


def encoder_reference(reference: str) -> PretrainedWeights | None:
    """An encoder named as ``compkit weights pull`` takes it (``resnet34``, ``resnet50.ssl``, ``tu-resnet18``,
    ``tu-convnext_tiny.fb_in22k``); None when it names no smp or timm encoder."""
    import segmentation_models_pytorch as smp
    import timm

    if reference.startswith("tu-"):
        if not timm.is_model(reference[3:].split(".", 1)[0]):
            return None
        return _timm_weights(reference[3:], True)
    encoder, _, tag = reference.partition(".")
    if encoder not in smp.encoders.encoders:
        return None
    return hub_encoder_weights(encoder, tag or True)


def smp_encoder_name(model: ModelConfig, weights: PretrainedWeights | None) -> str:
    """The encoder name smp is given: timm's tag rides in the name (``tu-<model>.<tag>``), as smp asks."""
    if weights is not None and weights.library == "timm":
        return f"{weights.name}.{weights.tag}"
    return model.encoder


def encoder_normalisation(
    model: ModelConfig, cache: WeightsCache | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std (fractions of 255) the encoder's pretrained weights expect: the smp entry's ``config.json``,
    timm's pretrained config for the tag, else ImageNet's."""
    weights = encoder_weights(model)
    if weights is not None and weights.library == "smp":
        cached = locate(weights, cache or weights_cache())
        config = next((f for f in (cached.files if cached else ()) if f.name == "config.json"), None)
        if config is not None:
            settings = json.loads(config.read_text(encoding="utf-8"))
            if "mean" in settings and "std" in settings:
                scale = 255.0 if max(settings.get("input_range", [0, 1])) > 1 else 1.0
                return tuple(m / scale for m in settings["mean"]), tuple(s / scale for s in settings["std"])
    if model.encoder.startswith("tu-"):
        from timm.models import get_pretrained_cfg

        try:
            cfg = get_pretrained_cfg(smp_encoder_name(model, weights)[3:])
        except RuntimeError:  # a tag timm does not know
            cfg = None
        if cfg is not None and len(cfg.mean or ()) == 3:
            return tuple(cfg.mean), tuple(cfg.std)
    return IMAGENET_MEAN, IMAGENET_STD


@contextlib.contextmanager
def libraries_read(cache: WeightsCache) -> Iterator[None]:
    """smp and timm fetch weights with huggingface_hub's defaults; within this block they read ``cache`` and never
    reach the network (the weights were located, or pulled when asked, before)."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE
    constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(cache.hub), True
    try:
        yield
    finally:
        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = saved


# ---------------------------------------------------------------------------------------------------------------
# The cache: locating, pulling, scanning


def repo_folder(cache: WeightsCache, repo_id: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return cache.hub / repo_folder_name(repo_id=repo_id, repo_type="model")


def snapshot_folder(cache: WeightsCache, repo_id: str, revision: str) -> Path:
    return repo_folder(cache, repo_id) / "snapshots" / revision


def main_ref(cache: WeightsCache, repo_id: str) -> Path:
    """The file that names the revision the hub's ``main`` branch points at."""
    return repo_folder(cache, repo_id) / "refs" / "main"


def _main_revision(cache: WeightsCache, repo_id: str) -> str | None:
    ref = main_ref(cache, repo_id)
    return ref.read_text().strip() if ref.is_file() else None


def locate(weights: PretrainedWeights, cache: WeightsCache) -> CachedWeights | None:
    """The cached files of ``weights`` (every needed file present), or None."""
    if weights.path is not None:
        path = Path(weights.path)
        return CachedWeights(weights.name, weights.tag, weights.library, (path,)) if path.is_file() else None
    if weights.asset is not None:
        path = cache.assets / weights.library / weights.asset
        return (
            CachedWeights(weights.name, weights.tag, weights.library, (path,))
            if path.is_file() and path.stat().st_size
            else None
        )
    from huggingface_hub import try_to_load_from_cache

    found: list[Path] = []
    for choices in weights.files:
        for name in choices:
            path = try_to_load_from_cache(weights.repo_id, name, cache_dir=cache.hub, revision=weights.revision)
            if isinstance(path, str) and os.path.isfile(path):
                found.append(Path(path))
                break
        else:
            return None
    revision = found[-1].parent.name  # snapshots/<revision>/<file>
    main = _main_revision(cache, weights.repo_id)
    return CachedWeights(
        weights.name,
        weights.tag,
        weights.library,
        (found[-1], *found[:-1]),
        weights.repo_id,
        revision,
        main == revision,
    )


def _missing(weights: PretrainedWeights, cache: WeightsCache, setting: str, why: str | None = None) -> CompkitError:
    command = f"compkit weights pull {weights.reference}{cache.option}"
    folder = cache.folder or (cache.hub if weights.repo_id else cache.assets / weights.library)
    where = f"{weights.name} weights {weights.tag!r} ({weights.repo_id or weights.asset}) are not in the weights cache {folder}"
    if why is None:
        return CompkitError(setting, f"{where}; run: {command}")
    return CompkitError(setting, f"{where} and {why}; pull them where there is network: {command}")


def _source_url(weights: PretrainedWeights) -> str:
    if weights.asset is not None:
        return ASSET_LIBRARIES[weights.library].url
    from huggingface_hub import constants

    return constants.ENDPOINT


def require(
    weights: PretrainedWeights,
    cache: WeightsCache,
    download: bool = False,
    console: Console | None = None,
    setting: str = SETTING,
) -> CachedWeights:
    """The cached weights; missing ones are pulled when ``download`` and the network allow, else one clear error
    naming the encoder, the tag and the ``compkit weights pull`` command."""
    cached = locate(weights, cache)
    if cached is not None:
        return cached
    if weights.path is not None:
        raise CompkitError(weights.path, f"{SETTING}: file not found")
    if not download:
        raise _missing(weights, cache, setting)
    return pull(weights, cache, console, setting)


def pull(
    weights: PretrainedWeights, cache: WeightsCache, console: Console | None = None, setting: str = SETTING
) -> CachedWeights:
    """Download ``weights`` into the cache (nothing when already there); a failure leaves no partial entry."""
    cached = locate(weights, cache)
    if cached is not None:
        return cached
    if weights.path is not None:
        raise CompkitError(weights.path, "a local file: nothing to pull")
    if hub_offline():  # the user's word for "this machine is offline", for every library
        raise _missing(weights, cache, setting, "HF_HUB_OFFLINE is set")
    url = _source_url(weights)
    if not reachable(url):
        raise _missing(weights, cache, setting, f"{urlparse(url).hostname} cannot be reached from here")
    console = console or Console(stderr=True)
    console.print(f"pulling {weights.describe()} into {cache.describe()}")
    if weights.asset is not None:
        _pull_asset(weights, cache)
    else:
        _pull_hub(weights, cache)
    cached = locate(weights, cache)
    if cached is None:
        raise CompkitError(
            weights.repo_id or weights.asset,
            f"downloaded, but the files are not where the cache keeps them ({cache.describe()})",
        )
    return cached


def _pull_hub(weights: PretrainedWeights, cache: WeightsCache) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    folder = repo_folder(cache, weights.repo_id)
    existed = folder.exists()
    try:
        for choices in weights.files:
            for name in choices:
                try:
                    hf_hub_download(weights.repo_id, name, revision=weights.revision, cache_dir=cache.hub)
                    break
                except RemoteEntryNotFoundError:  # this repository publishes the next name instead
                    continue
            else:
                raise CompkitError(weights.repo_id, f"the hub repository has none of {', '.join(choices)}")
    except BaseException as e:
        if not existed:  # no half-written entry: what this pull created goes
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(e, (CompkitError, KeyboardInterrupt, SystemExit)):
            raise
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CompkitError(weights.repo_id, f"download failed: {detail}") from None


def _pull_asset(weights: PretrainedWeights, cache: WeightsCache) -> None:
    library = ASSET_LIBRARIES[weights.library]
    folder = cache.assets / weights.library
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{weights.asset}{PARTIAL_MARK}{os.getpid()}-"))
    try:
        library.fetch(weights.asset, staging / weights.asset)
        if not (staging / weights.asset).is_file():
            raise CompkitError(weights.asset, f"{library.name} did not download it")
        os.replace(staging / weights.asset, folder / weights.asset)
    except (CompkitError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CompkitError(weights.asset, f"download failed: {detail}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cached_entries(cache: WeightsCache) -> list[CachedWeights]:
    """Every entry the cache holds for compkit's libraries: hub snapshots of smp and timm encoders, asset files."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    entries: list[CachedWeights] = []
    try:
        repos = scan_cache_dir(cache.hub).repos if cache.hub.is_dir() else ()
    except CacheNotFound:
        repos = ()
    for repo in sorted(repos, key=lambda r: r.repo_id):
        namespace, _, repo_name = repo.repo_id.partition("/")
        if repo.repo_type != "model" or namespace not in HUB_LIBRARIES:
            continue
        library = HUB_LIBRARIES[namespace]
        model, _, tag = repo_name.partition(".")
        name = f"tu-{model}" if library == "timm" else model
        main = _main_revision(cache, repo.repo_id)
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            files = sorted(
                (Path(f.file_path) for f in revision.files), key=lambda p: (p.name not in HUB_WEIGHT_FILES, p.name)
            )
            if files and files[0].name in HUB_WEIGHT_FILES:
                entries.append(
                    CachedWeights(
                        name,
                        tag,
                        library,
                        tuple(files),
                        repo.repo_id,
                        revision.commit_hash,
                        revision.commit_hash == main,
                    )
                )
    for library in ASSET_LIBRARIES.values():
        folder = cache.assets / library.name
        for path in sorted(folder.glob("*")) if folder.is_dir() else ():
            if path.is_file() and not path.name.startswith("."):
                name, tag = library.describe(path.name)
                entries.append(CachedWeights(name, tag, library.name, (path,)))
    return entries


def serves(weights: PretrainedWeights, entry: CachedWeights) -> bool:
    """Whether a cache entry is what ``weights`` loads."""
    if weights.asset is not None:
        return entry.library == weights.library and entry.file.name == weights.asset
    if weights.repo_id is None or entry.repo_id != weights.repo_id:
        return False
    return entry.revision == weights.revision if weights.revision else entry.on_main


def copy_entry(entry: CachedWeights, folder: Path, copy: Callable[[Path, Path], None] = shutil.copyfile) -> None:
    """Copy an entry into a weights folder (``folder/hub``, ``folder/<library>``) as plain files, so that the copy
    survives uploads that drop symbolic links (a Kaggle dataset); the hub client reads either layout."""
    if entry.repo_id is None:
        target = folder / entry.library / entry.file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        copy(entry.file, target)
        return
    cache = folder_cache(folder)
    snapshot = snapshot_folder(cache, entry.repo_id, entry.revision)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in entry.files:
        copy(path, snapshot / path.name)
    if entry.on_main:
        ref = main_ref(cache, entry.repo_id)
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(entry.revision)
