"""Machine information written into every results file."""
from __future__ import annotations

import importlib.metadata
import platform
import re
import subprocess

# Libraries the suite uses as baselines wherever they are installed.
BASELINE_LIBRARIES = ("flash-attn", "flash-attn-4", "torchao", "gemlite", "hqq", "bitsandbytes", "flashinfer-python")


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': a folder name per GPU model."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


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
