"""Ceilings measured on the GPU the suite runs on, never taken from datasheets.

- copy_gbps: device-to-device copy of 1 GiB, bytes read + bytes written over the time,
  timed as the cases are (events, L2 flushed by a read before each copy): back-to-back
  copies would each pay the write-back of the previous copy's dirty lines.
- bf16_tflops / fp16_tflops: 8192^3 matrix product through torch (cuBLAS).
- fp32_tflops: the same in float32, TF32 off (as torch runs float32 by default); added
  without a version change: a cached file lacking it gives float32 cases no compute floor.
- int8_tops: torch._int_mm 8192^3 (int8 x int8 -> int32).
- fp8_tflops: torch._scaled_mm 8192^3, e4m3, row-wise scales (compute capability >= 8.9).
Each is the median of its samples on random data (zeros run faster than real data).
Cached per GPU model in ~/.cache (or $KERNEL_BENCH_CACHE): `--remeasure-ceilings`
measures again.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from .machine import gpu_slug
from .results import UnusableInput
from .timing import TimingConfig, _quantile, time_one, time_providers

CEILINGS_VERSION = 2  # 2: copy timed with a read flush before each copy


class NoCudaGpu(UnusableInput):
    """No CUDA GPU is visible: there is nothing to measure (python -m harness: exit 2)."""


def cache_dir() -> Path:
    root = os.environ.get("KERNEL_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "llm-kernel-bench"
    )
    return Path(root)


def _median(xs):
    return _quantile(xs, 0.5)


def measure_ceilings() -> dict:
    dev = "cuda"
    out: dict = {}
    n = 1 << 30
    src = torch.randint(-128, 127, (n,), dtype=torch.int8, device=dev)
    dst = torch.empty_like(src)
    copy = time_providers({"copy": lambda s, d: d.copy_(s)}, lambda: (src, dst),
                          TimingConfig(mode="events", rep_ms=200))["copy"]
    out["copy_gbps"] = 2 * n / copy.median_s / 1e9
    del src, dst

    m = 8192
    flops = 2.0 * m * m * m
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32_tflops: true float32 products
    try:
        for name, dtype in (("bf16_tflops", torch.bfloat16), ("fp16_tflops", torch.float16),
                            ("fp32_tflops", torch.float32)):
            a = torch.randn(m, m, device=dev, dtype=dtype)
            b = torch.randn(m, m, device=dev, dtype=dtype)
            out[name] = flops / _median(time_one(lambda: torch.mm(a, b))) / 1e12
            del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32

    try:
        a = torch.randint(-128, 127, (m, m), dtype=torch.int8, device=dev)
        b = torch.randint(-128, 127, (m, m), dtype=torch.int8, device=dev).t().contiguous().t()
        out["int8_tops"] = flops / _median(time_one(lambda: torch._int_mm(a, b))) / 1e12
        del a, b
    except Exception as exc:  # not every GPU / build has an int8 GEMM
        out["int8_tops"] = None
        out["int8_tops_error"] = f"{type(exc).__name__}: {exc}"

    if torch.cuda.get_device_capability() >= (8, 9):
        try:
            f8 = torch.float8_e4m3fn
            a = (torch.randn(m, m, device=dev) * 0.5).to(f8)
            b = (torch.randn(m, m, device=dev) * 0.5).to(f8).t()  # column-major, as cuBLASLt wants
            sa = torch.ones(m, 1, device=dev)
            sb = torch.ones(1, m, device=dev)
            fn = lambda: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
            out["fp8_tflops"] = flops / _median(time_one(fn)) / 1e12
            del a, b
        except Exception as exc:
            out["fp8_tflops"] = None
            out["fp8_tflops_error"] = f"{type(exc).__name__}: {exc}"
    else:
        out["fp8_tflops"] = None
        out["fp8_tflops_error"] = "compute capability below 8.9: no fp8 tensor cores"
    torch.cuda.empty_cache()
    return out


def get_ceilings(remeasure: bool = False) -> dict:
    """Ceilings of the current GPU model, from the cache or measured now."""
    if not torch.cuda.is_available():  # torch would fail later with a bare AssertionError
        raise NoCudaGpu("ceilings are measured on a CUDA GPU, and none is visible here "
                        "(torch.cuda.is_available() is False)")
    name = torch.cuda.get_device_name()
    path = cache_dir() / f"ceilings-{gpu_slug(name)}.json"
    if path.exists() and not remeasure:
        try:
            data = json.loads(path.read_text())
            if data.get("gpu") == name and data.get("version") == CEILINGS_VERSION:
                data["source"] = f"cache {path}"
                return data
        except (OSError, ValueError):
            pass
    t0 = time.perf_counter()
    data = {"gpu": name, "version": CEILINGS_VERSION, "torch": torch.__version__}
    data.update(measure_ceilings())
    data["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    data["measure_time_s"] = time.perf_counter() - t0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    except OSError:
        pass
    data["source"] = "measured in this run"
    return data
