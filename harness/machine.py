"""Machine information written into every results file."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path

from kernels.platform import gpu_slug  # noqa: F401  (results folders and tuned tables share it)

REPO = Path(__file__).resolve().parent.parent

# Libraries the suite uses as baselines wherever they are installed.
BASELINE_LIBRARIES = ("flash-attn", "flash-attn-4", "torchao", "gemlite", "hqq", "bitsandbytes", "flashinfer-python")



def _version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_clocks() -> dict | None:
    """Current clocks, temperature and power from nvidia-smi (None where it is absent)."""
    fields = "clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,power.draw,pstate"
    try:
        line = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    vals = [v.strip() for v in line.split(",")]
    keys = ["sm_mhz", "mem_mhz", "max_sm_mhz", "temperature_c", "power_w", "pstate"]
    return dict(zip(keys, vals))


def driver_version() -> str | None:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def software_versions() -> dict:
    import torch
    import triton

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "pytest-benchmark": _version("pytest-benchmark"),
        "hypothesis": _version("hypothesis"),
        "baselines": {lib: _version(lib) for lib in BASELINE_LIBRARIES},
    }


def gpu_info() -> dict | None:
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "slug": gpu_slug(props.name),
        "sm_count": props.multi_processor_count,
        "memory_bytes": props.total_memory,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "capability": f"{props.major}.{props.minor}",
        "driver": driver_version(),
        "device_count": torch.cuda.device_count(),
    }


SOURCE_DIRS = ("kernels", "harness", "models", "tests", "configs", "tools")
SOURCE_FILES = ("conftest.py", "pytest.ini", "pyproject.toml", "Makefile")


def code_hash(root: Path | None = None) -> str:
    """sha256 over the suite's source files as they are on disk (paths and bytes), so a run
    names the code that ran even where git's view of the tree is stale or absent."""
    root = root or REPO
    h = hashlib.sha256()
    paths = [root / f for f in SOURCE_FILES if (root / f).is_file()]
    for d in SOURCE_DIRS:
        paths += [p for p in (root / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix in (".py", ".yml", ".yaml", ".sh", "")]
    for p in sorted(paths):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _git(*args) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def source_info() -> dict:
    """The commit whose code ran and whether the tree differed from it. A machine that got
    a copy of the tree (a lent GPU) is told the commit and its code hash by the caller
    (KERNEL_BENCH_COMMIT, KERNEL_BENCH_CODE_HASH: `python -m harness source` prints them);
    the tree is dirty there when the hash of what is on disk differs. Elsewhere git says."""
    here = code_hash()
    commit = os.environ.get("KERNEL_BENCH_COMMIT")
    if commit:
        told = os.environ.get("KERNEL_BENCH_CODE_HASH")
        return {"id": commit, "dirty": told != here, "code_hash": here, "from": "environment"}
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_DIRS, *SOURCE_FILES)
    return {"id": head, "dirty": bool(status) if status is not None else None, "code_hash": here,
            "from": "git" if head else "none", "branch": _git("rev-parse", "--abbrev-ref", "HEAD")}
