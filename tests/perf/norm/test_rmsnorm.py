"""Perf cases of kernels/norm/rmsnorm.py: the Triton kernel against PyTorch eager,
F.rms_norm and torch.compile, every implementation at the same shape and dtype, timed
together (harness.perfcase). Default: hidden 4096 and 8192, rows 1 to 32768, bf16.
--perf-sweep adds more rows, hidden sizes and fp16/fp32."""
import functools

import pytest
import torch

from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.norm import baselines, cost, fused_add_rms_norm, fused_add_rms_norm_reference, rms_norm, rms_norm_reference
from kernels.providers import compiled
from tests.helpers.tolerance import DTYPES

pytestmark = pytest.mark.perf

EPS = 1e-6

RMSNORM_PROVIDERS = [
    Provider("triton", lambda x, w: rms_norm(x, w, EPS), kernel=True),
    Provider("eager", lambda x, w: baselines.eager_rms_norm(x, w, EPS)),
    Provider("torch_rms_norm", lambda x, w: baselines.torch_rms_norm(x, w, EPS)),
    Provider("compile", make=lambda _: compiled(functools.partial(baselines.eager_rms_norm, eps=EPS))),
]
ADD_RMSNORM_PROVIDERS = [
    Provider("triton", lambda x, r, w: fused_add_rms_norm(x, r, w, EPS), kernel=True),
    Provider("eager", lambda x, r, w: baselines.eager_fused_add_rms_norm(x, r, w, EPS)),
    Provider("torch_rms_norm", lambda x, r, w: baselines.torch_fused_add_rms_norm(x, r, w, EPS)),
    Provider("compile", make=lambda _: compiled(functools.partial(baselines.eager_fused_add_rms_norm, eps=EPS))),
]


def grid(op):
    def points(sweep: bool):
        rows = [1, 16, 256, 4096, 32768]
        hidden = [4096, 8192]
        dtypes = ["bf16"]
        if sweep:
            rows = [1, 4, 16, 64, 256, 1024, 4096, 8192, 16384, 32768]
            hidden = [1024, 2048, 4096, 5120, 8192, 16384]
            dtypes = ["bf16", "fp16", "fp32"]
        return [dict(op=op, rows=r, hidden=h, dtype=d) for d in dtypes for h in hidden for r in rows]
    return points


def norm_case(op: str, rows: int, hidden: int, dtype: str) -> PerfCase:
    dt = DTYPES[dtype]
    residual = op == "add_rmsnorm"

    def make_inputs():
        x = torch.randn(rows, hidden, device="cuda", dtype=dt)
        w = 1.0 + 0.1 * torch.randn(hidden, device="cuda", dtype=dt)
        if residual:
            return x, torch.randn(rows, hidden, device="cuda", dtype=dt), w
        return x, w

    if residual:
        reference = lambda x, r, w: fused_add_rms_norm_reference(x, r, w, EPS)
    else:
        reference = lambda x, w: rms_norm_reference(x, w, EPS)
    return PerfCase(
        op=op,
        shape={"rows": rows, "hidden": hidden},
        dtype=dt,
        make_inputs=make_inputs,
        cost=cost.rms_norm_cost(rows, hidden, torch.finfo(dt).bits // 8, residual),
        reference=reference,
        # Baselines round differently (eager rounds before the weight multiply): a few
        # low-precision ulps of relative norm error; a wrong result is far above this.
        rtol=1e-2 if dt != torch.float32 else 1e-5,
    )


ID = "{op}-rows{rows}-hidden{hidden}-{dtype}"
rmsnorm = perf_bench(grid=grid("rmsnorm"), id=ID, providers=RMSNORM_PROVIDERS)(norm_case)
add_rmsnorm = perf_bench(grid=grid("add_rmsnorm"), id=ID, providers=ADD_RMSNORM_PROVIDERS)(norm_case)
pytest_generate_tests = perf_tests(rmsnorm, add_rmsnorm)


def test_rmsnorm(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
