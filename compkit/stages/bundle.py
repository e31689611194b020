"""``compkit bundle DIR``: everything an offline machine (a Kaggle notebook with the internet off) needs to install
and run compkit, as files to upload.

``DIR/wheels/``: compkit's wheel and every dependency the target lacks, for the target's Python and platform. pip
does the resolving (``pip install --dry-run --report`` for the target's ``--python-version`` / ``--platform``,
binary wheels only) and the downloading (``pip download --no-deps`` of exactly what it resolved). What a profile says
the target already has (:data:`PROFILES`) pip resolves as empty stand-in wheels at the versions installed here (a
local version label no index has, pinned by a constraint), so it neither fetches PyTorch's CUDA stack nor fails on
its platform tags. ``DIR/weights/`` (``--weights``, as ``compkit
weights export``), ``DIR/runs/<name>/`` (``--runs``, as ``compkit export run``) and ``DIR/INSTALL.md`` with the
commands to run offline. The folder is built beside ``DIR`` and swapped in whole.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from rich.console import Console

from compkit.training.runs import refuse_nonempty
from compkit.util.console import output_console
from compkit.util.errors import CompkitError
from compkit.util.fileio import AtomicFolder

# What a target machine already has, by distribution name (glob patterns, compared in lower case with '_' as '-').
# kaggle: Kaggle's GPU notebook image ships PyTorch with its CUDA libraries and the scientific Python stack; pip
# checks the versions it finds there against compkit's requirements when installing. torch: any machine with
# PyTorch installed (a GPU server's own build).
PROFILES: dict[str, tuple[str, ...]] = {
    "none": (),
    "torch": ("torch", "torchvision", "torchaudio", "triton", "nvidia-c*", "nvidia-n*", "cuda-*"),
    "kaggle": (
        *("torch", "torchvision", "torchaudio", "triton", "nvidia-c*", "nvidia-n*", "cuda-*"),
        *("numpy", "scipy", "pandas", "scikit-learn", "matplotlib", "pillow", "opencv-python", "pyyaml"),
        *("requests", "urllib3", "certifi", "idna", "charset-normalizer", "packaging", "setuptools", "jinja2"),
        *("markupsafe", "sympy", "mpmath", "networkx", "filelock", "fsspec", "typing-extensions", "tqdm"),
    ),
}
# Kaggle's image as of this release: check with `!python -V` in a notebook and pass --python to match.
PROFILE_TARGETS = {"kaggle": ("3.11", ["manylinux_2_35_x86_64", "manylinux_2_28_x86_64", "manylinux2014_x86_64"])}
WHEELS_DIR, WEIGHTS_DIR, RUNS_DIR, INSTALL_FILE = "wheels", "weights", "runs", "INSTALL.md"


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def provided(name: str, profile: str) -> bool:
    """Whether the profile's target already has the distribution ``name``."""
    return any(fnmatch.fnmatch(_normal(name), pattern) for pattern in PROFILES[profile])


def pip_failure(stderr: str) -> str:
    """pip's reason in one line: its conflict lines where it gives them, else its first error."""
    lines = [line.strip() for line in stderr.splitlines()]
    if "The conflict is caused by:" in lines:
        cause = []
        for line in lines[lines.index("The conflict is caused by:") + 1 :]:
            if not line:
                break
            cause.append(line)
        return "conflict: " + "; ".join(cause)
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR")]
    return errors[0] if errors else (lines[-1] if lines and lines[-1] else "no message")


def _pip(args: list[str], what: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise CompkitError(None, f"pip could not {what}: {pip_failure(done.stderr)}")


def _target_options(python: str | None, platforms: list[str]) -> list[str]:
    options = ["--only-binary=:all:"]
    if python:
        options += ["--python-version", python]
    for platform in platforms:
        options += ["--platform", platform]
    return options


def compkit_wheel(wheel: str | Path | None, folder: Path) -> Path:
    """compkit's own wheel in ``folder``: the one given, else built from the checkout compkit runs from."""
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file() or not wheel.name.startswith("compkit-") or wheel.suffix != ".whl":
            raise CompkitError(wheel, "not a compkit wheel (dist/compkit-*.whl)")
        target = folder / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "pyproject.toml").is_file():
        raise CompkitError("--wheel", "compkit is installed from a wheel here: pass that wheel (--wheel FILE)")
    _pip(
        ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(folder), str(checkout)], "build compkit's wheel"
    )
    return next(folder.glob("compkit-*.whl"))


def provided_here(profile: str) -> dict[str, str]:
    """{name: version} of the distributions installed here that the profile's target has too."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and provided(name, profile):
            found.setdefault(name, dist.version)
    return found


STAND_IN_LABEL = "on.the.target"  # the local version label of a stand-in: no index has it


def stand_ins(folder: Path, installed: dict[str, str]) -> list[str]:
    """Empty wheels in ``folder`` for what the target already has (metadata only: no files, no dependencies), at the
    versions installed here with :data:`STAND_IN_LABEL` as local version; pip options that make it take those
    (``--find-links`` and a constraints file pinning each to its stand-in)."""
    folder.mkdir(parents=True, exist_ok=True)
    pins = []
    for name, version in installed.items():
        release = version.split("+")[0]
        stand_in = f"{release}+{STAND_IN_LABEL}"
        project = re.sub(r"[-_.]+", "_", name)
        info = f"{project}-{stand_in}.dist-info"
        files = {
            f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {stand_in}\n",
            f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: compkit-bundle\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        }
        with zipfile.ZipFile(folder / f"{project}-{stand_in}-py3-none-any.whl", "w") as wheel:
            for member, text in files.items():
                wheel.writestr(member, text)
            wheel.writestr(f"{info}/RECORD", "".join(f"{m},,\n" for m in [*files, f"{info}/RECORD"]))
        pins.append(f"{name}=={stand_in}")
    constraints = folder / "on-the-target.txt"
    constraints.write_text("".join(f"{pin}\n" for pin in pins), encoding="utf-8")
    return ["--find-links", str(folder), "--constraint", str(constraints)]


def resolve(requirement: str, options: list[str], installed: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(name, version) of every distribution pip would install for ``requirement`` on the target, which already
    has ``installed`` ({name: version}): pip resolves around stand-ins for them instead of fetching them."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        pinned = stand_ins(Path(scratch) / "stand-ins", installed or {})
        _pip(
            ["install", "--dry-run", "--ignore-installed", "-q", "--report", str(report)]
            + ["--target", str(Path(scratch) / "target"), *options, *pinned, requirement],
            f"resolve {Path(requirement).name} for the target",
        )
        items = json.loads(report.read_text())["install"]
    found = [(item["metadata"]["name"], item["metadata"]["version"]) for item in items]
    return [(name, version) for name, version in found if not version.endswith("+" + STAND_IN_LABEL)]


def _install_text(bundle: Path, profile: str, weights: bool, runs: list[str]) -> str:
    lines = [
        "# Installing compkit offline",
        "",
        f"Upload this folder (e.g. as a Kaggle dataset) and run, with no network ({'profile ' + profile}):",
        "",
        "```",
        f"pip install --no-index --find-links {bundle.name}/{WHEELS_DIR} compkit",
    ]
    if weights:
        lines.append(f"export COMPKIT_WEIGHTS={bundle.name}/{WEIGHTS_DIR}")
    lines += ["compkit --version", "```", ""]
    if profile != "none":
        lines.append(f"Left out, as the target has them: {', '.join(PROFILES[profile])}.")
    if runs:
        lines.append(
            f"Runs: {', '.join(f'{RUNS_DIR}/{r}' for r in runs)} (`compkit predict {RUNS_DIR}/NAME --data DATA --out DIR`)."
        )
    return "\n".join(lines) + "\n"


def bundle(
    out: str | Path,
    python: str | None = None,
    platforms: list[str] | None = None,
    profile: str = "none",
    weights: list[str] | None = None,
    runs: list[str | Path] | None = None,
    wheel: str | Path | None = None,
    exist_ok: bool = False,
    console: Console | None = None,
) -> Path:
    """Write the offline bundle to ``out``; returns it. ``python``/``platforms``: the target's (default: the
    profile's, else this machine's); ``profile``: what the target already has (:data:`PROFILES`)."""
    from compkit.stages.export import export_run
    from compkit.stages.weights import export as export_weights

    console = console or output_console()
    if profile not in PROFILES:
        raise CompkitError("--for", f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    default_python, default_platforms = PROFILE_TARGETS.get(profile, (None, []))
    options = _target_options(python or default_python, platforms or default_platforms)
    out = Path(out)
    refuse_nonempty(out, exist_ok)
    with AtomicFolder(out) as staging:
        wheels = staging / WHEELS_DIR
        wheels.mkdir()
        own = compkit_wheel(wheel, wheels)
        with console.status("resolving compkit's dependencies for the target (pip)"):
            on_target = provided_here(profile)
            resolved = resolve(str(own), options, on_target)
        needed = [(n, v) for n, v in resolved if _normal(n) != "compkit" and not provided(n, profile)]
        left_out = sorted({*on_target, *(n for n, _ in resolved if provided(n, profile))}, key=str.lower)
        with console.status(f"downloading {len(needed)} wheels (pip)"):
            _pip(
                ["download", "--no-deps", "-q", "-d", str(wheels), *options, *(f"{n}=={v}" for n, v in needed)],
                "download the wheels",
            )
        if weights:
            export_weights(staging / WEIGHTS_DIR, weights, console=console)
        names = []
        for run in runs or []:
            names.append(Path(run).name)
            export_run(run, staging / RUNS_DIR / Path(run).name, console=console)
        (staging / INSTALL_FILE).write_text(_install_text(out, profile, bool(weights), names), encoding="utf-8")
        size = sum(p.stat().st_size for p in wheels.iterdir())
    console.print(
        f"[green]wrote[/green] {out}: {len(needed) + 1} wheels ({size / 1e6:.0f} MB)"
        + (f", left out as the target has them ({profile}): {', '.join(left_out)}" if left_out else "")
    )
    console.print(
        f"next: upload {out}, then offline: pip install --no-index --find-links {out.name}/{WHEELS_DIR} compkit ({INSTALL_FILE})"
    )
    return out
