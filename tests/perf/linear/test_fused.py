"""Perf cases of kernels/linear/fused.py at Mirage's and LLaMA-3-8B's shapes, decode-sized
batches and a 4K-token prompt, bf16: RMSNorm+Linear (4096 -> 6144, 4096 -> 4096), the
gated MLP (4096 -> 14336, 4096 -> 4096) and the plain linear with the residual added
(LLaMA-3-8B's output and down projections, 4096 -> 4096, 14336 -> 4096), against eager
PyTorch, torch.compile, cuBLAS's addmm and the one-GEMM layouts."""
import functools

import pytest
import torch

from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.linear import (baselines, gated_mlp, gated_mlp_reference, linear, linear_reference, rmsnorm_linear,
                            rmsnorm_linear_reference)
from kernels.linear.cost import gated_mlp_cost, linear_cost, rmsnorm_linear_cost
from kernels.providers import compiled

pytestmark = pytest.mark.perf

EPS = 1e-6
DT = torch.bfloat16


def grid(k_n):
    def points(sweep):
        # decode rows, and a 4K-token prompt's (the prefill path: 128-row grouped tiles)
        rows = [1, 8, 16, 64, 4096] + ([2, 4, 32, 128, 1024] if sweep else [])
        return [dict(m=m, k=k, n=n) for k, n in k_n for m in rows]
    return points


NORM_PROVIDERS = [
    Provider("triton", lambda x, g, w: rmsnorm_linear(x, g, w, EPS), kernel=True),
    Provider("eager", lambda x, g, w: baselines.eager_rmsnorm_linear(x, g, w, EPS)),
    Provider("torch_rms_norm", lambda x, g, w: baselines.torch_rmsnorm_linear(x, g, w, EPS)),
    Provider("compile", make=lambda _: compiled(functools.partial(baselines.eager_rmsnorm_linear, eps=EPS))),
]


@perf_bench(grid=grid(((4096, 6144), (4096, 4096))), id="rmsnorm_linear-m{m}-k{k}-n{n}-bf16", providers=NORM_PROVIDERS)
def rmsnorm_linear_case(m, k, n):
    def make_inputs():
        return (torch.randn(m, k, device="cuda", dtype=DT), 1 + 0.1 * torch.randn(k, device="cuda", dtype=DT),
                torch.randn(k, n, device="cuda", dtype=DT) * k ** -0.5)

    return PerfCase(op="rmsnorm_linear", shape={"m": m, "k": k, "n": n}, dtype=DT, make_inputs=make_inputs,
                    cost=rmsnorm_linear_cost(m, k, n, 2), reference=lambda x, g, w: rmsnorm_linear_reference(x, g, w, EPS),
                    rtol=1e-2)


def _compiled_mlp(_):
    mlp = compiled(baselines.eager_gated_mlp)
    return lambda x, w1, w3, w13: mlp(x, w1, w3)


MLP_PROVIDERS = [
    Provider("triton", lambda x, w1, w3, w13: gated_mlp(x, w1, w3), kernel=True),
    Provider("eager", lambda x, w1, w3, w13: baselines.eager_gated_mlp(x, w1, w3)),
    Provider("fused_weight", lambda x, w1, w3, w13: baselines.fused_weight_gated_mlp(x, w13)),
    Provider("compile", make=_compiled_mlp),
]


@perf_bench(grid=grid(((4096, 14336), (4096, 4096))), id="gated_mlp-m{m}-k{k}-n{n}-bf16", providers=MLP_PROVIDERS)
def gated_mlp_case(m, k, n):
    def make_inputs():
        w1 = torch.randn(k, n, device="cuda", dtype=DT) * k ** -0.5
        w3 = torch.randn(k, n, device="cuda", dtype=DT) * k ** -0.5
        return torch.randn(m, k, device="cuda", dtype=DT), w1, w3, torch.cat([w1, w3], dim=1)

    return PerfCase(op="gated_mlp", shape={"m": m, "k": k, "n": n}, dtype=DT, make_inputs=make_inputs,
                    cost=gated_mlp_cost(m, k, n, 2), reference=lambda x, w1, w3, w13: gated_mlp_reference(x, w1, w3),
                    rtol=1e-2)


LINEAR_PROVIDERS = [
    Provider("triton", lambda x, w, r: linear(x, w, residual=r), kernel=True),
    Provider("eager", baselines.eager_linear),
    Provider("addmm", baselines.addmm_linear),
    Provider("compile", make=lambda _: compiled(baselines.eager_linear)),
]


@perf_bench(grid=grid(((4096, 4096), (14336, 4096))), id="linear-m{m}-k{k}-n{n}-bf16", providers=LINEAR_PROVIDERS)
def linear_case(m, k, n):
    def make_inputs():
        return (torch.randn(m, k, device="cuda", dtype=DT), torch.randn(k, n, device="cuda", dtype=DT) * k ** -0.5,
                torch.randn(m, n, device="cuda", dtype=DT))

    return PerfCase(op="linear", shape={"m": m, "k": k, "n": n}, dtype=DT, make_inputs=make_inputs,
                    cost=linear_cost(m, k, n, 2, residual=True),
                    reference=lambda x, w, r: linear_reference(x, w, r), rtol=1e-2)


pytest_generate_tests = perf_tests(rmsnorm_linear_case, gated_mlp_case, linear_case)


def test_fused_linear(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
