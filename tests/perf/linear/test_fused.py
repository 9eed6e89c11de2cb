"""Perf cases of kernels/linear/fused.py at Mirage's and LLaMA-3-8B's shapes, decode-sized
batches, bf16: RMSNorm+Linear (4096 -> 6144, 4096 -> 4096) and the gated MLP (4096 ->
14336, 4096 -> 4096), against eager PyTorch, torch.compile and the one-GEMM layouts."""
import functools

import pytest
import torch

from harness.perfcase import PerfCase
from kernels.linear import baselines, gated_mlp, gated_mlp_reference, rmsnorm_linear, rmsnorm_linear_reference
from kernels.linear.cost import gated_mlp_cost, rmsnorm_linear_cost

pytestmark = pytest.mark.perf

EPS = 1e-6
NORM_PROVIDERS = ["triton", "eager", "torch_rms_norm", "compile"]
MLP_PROVIDERS = ["triton", "eager", "fused_weight", "compile"]


def grid(sweep):
    rows = [1, 8, 16, 64] + ([2, 4, 32, 128] if sweep else [])
    cases = [("rmsnorm_linear", m, 4096, n) for n in (6144, 4096) for m in rows]
    cases += [("gated_mlp", m, 4096, n) for n in (14336, 4096) for m in rows]
    return cases


def pytest_generate_tests(metafunc):
    params = []
    for c in grid(metafunc.config.getoption("perf_sweep")):
        for p in (NORM_PROVIDERS if c[0] == "rmsnorm_linear" else MLP_PROVIDERS):
            params.append(pytest.param(c, p, id=f"{c[0]}-m{c[1]}-k{c[2]}-n{c[3]}-bf16-{p}"))
    metafunc.parametrize("spec,provider", params)


@functools.lru_cache(maxsize=1)
def build_case(op, m, k, n):
    dt = torch.bfloat16
    if op == "rmsnorm_linear":
        def make_inputs():
            return (torch.randn(m, k, device="cuda", dtype=dt), 1 + 0.1 * torch.randn(k, device="cuda", dtype=dt),
                    torch.randn(k, n, device="cuda", dtype=dt) * k ** -0.5)
        providers = {
            "triton": lambda x, g, w: rmsnorm_linear(x, g, w, EPS),
            "eager": lambda x, g, w: baselines.eager_rmsnorm_linear(x, g, w, EPS),
            "torch_rms_norm": lambda x, g, w: baselines.torch_rmsnorm_linear(x, g, w, EPS),
            "compile": baselines.compiled(functools.partial(baselines.eager_rmsnorm_linear, eps=EPS)),
        }
        reference = lambda x, g, w: rmsnorm_linear_reference(x, g, w, EPS)
        cost = rmsnorm_linear_cost(m, k, n, 2)
    else:
        def make_inputs():
            w1 = torch.randn(k, n, device="cuda", dtype=dt) * k ** -0.5
            w3 = torch.randn(k, n, device="cuda", dtype=dt) * k ** -0.5
            return torch.randn(m, k, device="cuda", dtype=dt), w1, w3, torch.cat([w1, w3], dim=1)
        compiled_mlp = baselines.compiled(baselines.eager_gated_mlp)
        providers = {
            "triton": lambda x, w1, w3, w13: gated_mlp(x, w1, w3),
            "eager": lambda x, w1, w3, w13: baselines.eager_gated_mlp(x, w1, w3),
            "fused_weight": lambda x, w1, w3, w13: baselines.fused_weight_gated_mlp(x, w13),
            "compile": lambda x, w1, w3, w13: compiled_mlp(x, w1, w3),
        }
        reference = lambda x, w1, w3, w13: gated_mlp_reference(x, w1, w3)
        cost = gated_mlp_cost(m, k, n, 2)
    return PerfCase(op=op, shape={"m": m, "k": k, "n": n}, dtype=dt, make_inputs=make_inputs,
                    providers=providers, cost=cost, reference=reference, rtol=1e-2)


def test_fused_linear(spec, provider, perf, benchmark):
    perf.run(build_case(*spec), provider, benchmark)
