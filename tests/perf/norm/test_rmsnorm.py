"""Perf cases of kernels/norm/rmsnorm.py: the Triton kernel against PyTorch eager,
F.rms_norm and torch.compile, every implementation at the same shape and dtype, timed
together (harness.perfcase). Default: hidden 4096 and 8192, rows 1 to 32768, bf16.
--perf-sweep adds more rows, hidden sizes and fp16/fp32."""
import functools

import pytest
import torch

from harness.perfcase import PerfCase
from kernels.norm import baselines, cost, fused_add_rms_norm, fused_add_rms_norm_reference, rms_norm, rms_norm_reference

pytestmark = pytest.mark.perf

PROVIDERS = ["triton", "eager", "torch_rms_norm", "compile"]
EPS = 1e-6
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def case_grid(sweep: bool):
    rows = [1, 16, 256, 4096, 32768]
    hidden = [4096, 8192]
    dtypes = ["bf16"]
    if sweep:
        rows = [1, 4, 16, 64, 256, 1024, 4096, 8192, 16384, 32768]
        hidden = [1024, 2048, 4096, 5120, 8192, 16384]
        dtypes = ["bf16", "fp16", "fp32"]
    return [(op, r, h, d) for op in ("rmsnorm", "add_rmsnorm") for d in dtypes for h in hidden for r in rows]


def pytest_generate_tests(metafunc):
    grid = case_grid(metafunc.config.getoption("perf_sweep"))
    params = [pytest.param(c, p, id=f"{c[0]}-rows{c[1]}-hidden{c[2]}-{c[3]}-{p}") for c in grid for p in PROVIDERS]
    metafunc.parametrize("spec,provider", params)


@functools.lru_cache(maxsize=1)  # tests of one case run back to back: build it once
def build_case(op: str, rows: int, hidden: int, dtype_name: str) -> PerfCase:
    dtype = DTYPES[dtype_name]
    residual = op == "add_rmsnorm"

    def make_inputs():
        x = torch.randn(rows, hidden, device="cuda", dtype=dtype)
        w = 1.0 + 0.1 * torch.randn(hidden, device="cuda", dtype=dtype)
        if residual:
            return x, torch.randn(rows, hidden, device="cuda", dtype=dtype), w
        return x, w

    if residual:
        providers = {
            "triton": lambda x, r, w: fused_add_rms_norm(x, r, w, EPS),
            "eager": lambda x, r, w: baselines.eager_fused_add_rms_norm(x, r, w, EPS),
            "torch_rms_norm": lambda x, r, w: baselines.torch_fused_add_rms_norm(x, r, w, EPS),
            "compile": baselines.compiled(functools.partial(baselines.eager_fused_add_rms_norm, eps=EPS)),
        }
        reference = lambda x, r, w: fused_add_rms_norm_reference(x, r, w, EPS)
    else:
        providers = {
            "triton": lambda x, w: rms_norm(x, w, EPS),
            "eager": lambda x, w: baselines.eager_rms_norm(x, w, EPS),
            "torch_rms_norm": lambda x, w: baselines.torch_rms_norm(x, w, EPS),
            "compile": baselines.compiled(functools.partial(baselines.eager_rms_norm, eps=EPS)),
        }
        reference = lambda x, w: rms_norm_reference(x, w, EPS)
    return PerfCase(
        op=op,
        shape={"rows": rows, "hidden": hidden},
        dtype=dtype,
        make_inputs=make_inputs,
        providers=providers,
        cost=cost.rms_norm_cost(rows, hidden, torch.finfo(dtype).bits // 8, residual),
        reference=reference,
        # Baselines round differently (eager rounds before the weight multiply): a few
        # low-precision ulps of relative norm error; a wrong result is far above this.
        rtol=1e-2 if dtype != torch.float32 else 1e-5,
    )


def test_rmsnorm(spec, provider, perf, benchmark):
    perf.run(build_case(*spec), provider, benchmark)
