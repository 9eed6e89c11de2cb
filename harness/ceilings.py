"""Ceilings measured on the GPU the suite runs on, never taken from datasheets.

- copy_gbps: device-to-device copy of 1 GiB, bytes read + bytes written over the time,
  timed as the cases are (events, L2 flushed by a read before each copy): back-to-back
  copies would each pay the write-back of the previous copy's dirty lines.
- bf16_tflops / fp16_tflops: matrix products through torch (cuBLAS).
- fp32_tflops: the same in float32, TF32 off (as torch runs float32 by default).
- int8_tops: torch._int_mm (int8 x int8 -> int32); on Hopper no lower than fp8's rate,
  since its int8 and fp8 tensor cores run at one rate and cuBLAS's int8 GEMM falls short
  of it (H100: a Triton int8 GEMM ran MixQ's 70B q projection at 1043 TOP/s where
  _int_mm managed 910 at 8192^3).
- fp8_tflops: torch._scaled_mm, e4m3, row-wise scales (compute capability >= 8.9).
- read_curve: [[bytes, seconds], ...], the fastest pure read of 64 KiB to 1 GiB
  (harness/read_bound.py), cold L2: a kernel that moves few bytes cannot reach the copy
  rate, which is timed on 1 GiB; this says what a read of its size can reach.
Each rate is the best over two shapes (8192^3, and 2048 x 8192 x 10240, a prefill
projection) and GEMM_ROUNDS rounds, each reading the median of its samples on random data
(zeros run faster than real data), timed as the cases are (events, a flush and a hold
before each call): timed back to back, 8192^3 products ran the H100 into its power limit
and measured below what the cases' own GEMMs reached (bf16 681 against F.linear's 789
TFLOP/s). A ceiling is what the GPU can reach, so a reading can only be too low: the best
of rounds, not one reading (each reading is kept under `gemm_readings`).
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
from .timing import TimingConfig, _quantile, time_providers

# 2: copy timed with a read flush before each copy; 3: GEMMs timed as cases, best of two
# shapes; 4: the pure-read curve; 5: GEMMs best of GEMM_ROUNDS rounds
CEILINGS_VERSION = 5
READ_CURVE_BYTES = tuple(1 << p for p in range(16, 31))  # 64 KiB .. 1 GiB

GEMM_SHAPES = ((8192, 8192, 8192), (2048, 8192, 10240))  # (m, k, n)
GEMM_ROUNDS = 3  # single readings have come out 3-8x low on an H100: the best of rounds


def _best_rate(make_fn, rounds: int = GEMM_ROUNDS) -> tuple[float, list[float]]:
    """Best rate (ops/s / 1e12) of the products make_fn(m, k, n) returns over GEMM_SHAPES and
    `rounds` rounds (the shapes alternate, so one slow spell does not take every reading of
    a shape), and every reading in the order taken."""
    fns = [(2.0 * m * k * n, make_fn(m, k, n)) for m, k, n in GEMM_SHAPES]
    readings = []
    for _ in range(rounds):
        for ops, fn in fns:
            t = time_providers({"gemm": lambda: fn()}, lambda: (), TimingConfig(mode="events", rep_ms=100))["gemm"]
            readings.append(ops / t.median_s / 1e12)
    return max(readings), readings


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

    def mm(dtype):
        def make(m, k, n):
            a = torch.randn(m, k, device=dev, dtype=dtype)
            b = torch.randn(k, n, device=dev, dtype=dtype)
            return lambda: torch.mm(a, b)
        return make

    readings = out["gemm_readings"] = {}

    def rate(name, make_fn):
        out[name], readings[name] = _best_rate(make_fn)

    for name, dtype in (("bf16_tflops", torch.bfloat16), ("fp16_tflops", torch.float16)):
        rate(name, mm(dtype))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        rate("fp32_tflops", mm(torch.float32))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32

    def int_mm(m, k, n):
        a = torch.randint(-128, 127, (m, k), dtype=torch.int8, device=dev)
        b = torch.randint(-128, 127, (n, k), dtype=torch.int8, device=dev).t()  # column-major, as cuBLASLt wants
        return lambda: torch._int_mm(a, b)

    try:
        rate("int8_tops", int_mm)
    except Exception as exc:  # not every GPU / build has an int8 GEMM
        out["int8_tops"] = None
        out["int8_tops_error"] = f"{type(exc).__name__}: {exc}"

    if torch.cuda.get_device_capability() >= (8, 9):
        def scaled_mm(m, k, n):
            f8 = torch.float8_e4m3fn
            a = (torch.randn(m, k, device=dev) * 0.5).to(f8)
            b = (torch.randn(n, k, device=dev) * 0.5).to(f8).t()  # column-major, as cuBLASLt wants
            sa, sb = torch.ones(m, 1, device=dev), torch.ones(1, n, device=dev)
            return lambda: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)

        try:
            rate("fp8_tflops", scaled_mm)
        except Exception as exc:
            out["fp8_tflops"] = None
            out["fp8_tflops_error"] = f"{type(exc).__name__}: {exc}"
    else:
        out["fp8_tflops"] = None
        out["fp8_tflops_error"] = "compute capability below 8.9: no fp8 tensor cores"
    if torch.cuda.get_device_capability()[0] == 9 and out.get("fp8_tflops") and out.get("int8_tops"):
        out["int8_tops_library"] = out["int8_tops"]
        out["int8_tops"] = max(out["int8_tops"], out["fp8_tflops"])
    from .read_bound import read_bound_s

    out["read_curve"] = [[nbytes, read_bound_s(nbytes)[0]] for nbytes in READ_CURVE_BYTES]
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
