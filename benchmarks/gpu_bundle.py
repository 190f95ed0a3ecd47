"""Prepare, with network, what ``benchmarks/gpu_check.sh`` needs on a GPU machine without.

The GPU machine this was written for has no network, Python 3.12 and an image with
PyTorch, NumPy, scikit-learn, ONNX and much else, but not Optuna, MLflow, SQLAlchemy or
pydantic. The checkout is copied there with two ignored folders beside its files: ``.whl/``
and ``shared/`` (the ``../shared`` beside the checkout is not copied). So this script:

1. downloads into ``.whl/`` (ignored by git) the cp312 manylinux wheels of every runtime
   dependency of automl that the GPU machine's image lacks (``DEVICE_HAS``), at the
   versions installed here, less what the check never imports (``SKIP``);
2. links ``../shared/data/cifar10-jpg.tar.gz`` into ``shared/data/`` (``.gitignore`` keeps
   ``shared/`` out of every commit), so the copy carries the archive;
3. prints the size of the checkout with ``.whl/`` and ``shared/``, and fails above 64 MiB
   (``LIMIT``), to keep the copy small.

Copy the checkout with ``.whl/`` and ``shared/`` to the GPU machine and run
``bash benchmarks/gpu_check.sh`` there (see docs/gpu-check.md). For another image, edit
``DEVICE_LIST``: the packages it already holds.

``--emulate DIR`` then checks the bundle here, before the GPU machine is used: it
downloads the same wheels for *this* Python, and builds in ``DIR`` a site holding only
the packages the GPU machine's image has (links into this venv) plus those wheels, and
writes ``DIR/python``, an interpreter that sees nothing else. ``PYTHON=DIR/python SMOKE=1
bash benchmarks/gpu_check.sh`` then runs the check's every step on the CPU as the GPU
machine would run it, so a missing dependency shows here, not there.

    python benchmarks/gpu_bundle.py [--emulate /tmp/device-site]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
LIMIT = 64 * 2**20
# What the GPU machine's image holds (its package list, as read on 2026-11-17).
DEVICE_LIST = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio
attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax
e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp"""
DEVICE_HAS = DEVICE_LIST.split()
# Never imported by the check (PostgreSQL drivers, the live dashboard, plotly's study
# plots): 18 MB the 64 MiB limit cannot spare beside the 20 MB CIFAR-10 archive.
SKIP = {"psycopg", "psycopg2-binary", "psycopg-binary", "optuna-dashboard", "plotly", "bottle"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_34_x86_64"]  # fmt: skip


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(root: str = "automl") -> dict[str, str]:
    """Every distribution ``root`` needs at run time (no extras), with the version here."""
    found: dict[str, str] = {}
    todo = [root]
    while todo:
        try:
            dist = md.distribution(todo.pop())
        except md.PackageNotFoundError:
            continue
        name = canonical(dist.metadata["Name"])
        if name in found:
            continue
        found[name] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    found.pop(canonical(root), None)
    return found


def missing_on_device() -> list[str]:
    have = {canonical(name) for name in DEVICE_HAS}
    needed = runtime_closure()
    return [f"{n}=={v}" for n, v in sorted(needed.items()) if n not in have and n not in SKIP]


def download(pins: list[str], folder: Path, *, python: str | None) -> None:
    """Wheels of exactly ``pins``: for Python ``python`` on manylinux x86-64, or for the
    Python running this script."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
               "--only-binary=:all:", "-d", str(folder), *pins]  # fmt: skip
    if python:
        command += ["--python-version", python, "--implementation", "cp"]
        command += [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(command, check=True)


def travelling_bytes() -> int:
    """Tracked and untracked-not-ignored files, ``shared/`` and ``.whl/``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    files = [REPO / f for f in listed if f]
    for extra in ("shared", ".whl"):
        files += [p for p in (REPO / extra).rglob("*")]
    return sum(p.stat().st_size for p in files if p.is_file())


def _entries(dist: md.Distribution) -> set[Path]:
    """The top-level files and folders of a distribution; inside a namespace folder shared
    by several (``google/``, ``nvidia/``), the distribution's own entries in it."""
    paths = [Path(str(f)) for f in dist.files or [] if not str(f).startswith("..")]
    direct = {p.parts[0] for p in paths if len(p.parts) <= 2}  # a file right in the top

    def namespace(top: str) -> bool:
        folder = Path(str(dist.locate_file(top)))
        return top not in direct and folder.is_dir() and not (folder / "__init__.py").exists()

    return {
        Path(*p.parts[:2]) if namespace(p.parts[0]) else Path(p.parts[0])
        for p in paths
        if p.parts[0] != "__pycache__"
    }


def emulate(site: Path, pins: list[str]) -> Path:
    """A site with only the device image's packages (linked from here) and the wheels."""
    shutil.rmtree(site, ignore_errors=True)
    (site / "lib").mkdir(parents=True)
    have = {canonical(name) for name in DEVICE_HAS}
    for dist in md.distributions():
        if canonical(dist.metadata["Name"]) not in have:
            continue
        for entry in _entries(dist):
            source, target = Path(str(dist.locate_file(entry))), site / "lib" / entry
            if source.exists() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source)
    wheels = site / "wheels"
    download(pins, wheels, python=None)
    subprocess.run(  # beside the image's packages, as the check installs them there
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
         "--no-compile", "--target", str(site / "added"), *map(str, sorted(wheels.iterdir()))],
        check=True,
    )  # fmt: skip
    python = site / "python"
    python.write_text(
        f'#!/bin/sh\nPYTHONPATH="{site / "lib"}${{PYTHONPATH:+:$PYTHONPATH}}:{site / "added"}" '
        f'exec {sys.executable} -S "$@"\n'
    )
    python.chmod(0o755)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulate", type=Path, help="also build a GPU-machine-like site here")
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    args = parser.parse_args()
    pins = missing_on_device()
    print(f"{len(pins)} packages the device image lacks: {' '.join(pins)}")
    download(pins, REPO / ".whl", python="3.12")
    if args.archive.is_file():
        target = REPO / "shared" / "data" / args.archive.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(args.archive, target)
            except OSError:  # another file system
                shutil.copyfile(args.archive, target)
    else:
        print(f"no {args.archive}: the full CIFAR-10 step will be skipped there")
    size = travelling_bytes()
    print(f"travels: {size / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} (copy .whl/ and shared/ too)")
    if args.emulate:
        python = emulate(args.emulate, pins)
        print(f"device-like interpreter: {python}")
        print(f"  PYTHON={python} SMOKE=1 OUT=/tmp/gpu-smoke bash benchmarks/gpu_check.sh")
    if size > LIMIT:
        sys.exit(f"too large to travel: {size / 2**20:.1f} MiB > 64 MiB")


if __name__ == "__main__":
    main()
