"""Perf cases of lora_linear (kernels/linear/fused.py): x W + s (x A) B, rank 16 (and 64),
LLaMA-3-8B projection shapes, decode-sized M, bf16, against eager PyTorch and torch.compile."""
import functools

import pytest
import torch

from harness.metrics import Cost
from harness.perfcase import PerfCase
from kernels.linear import lora_linear, lora_linear_reference
from kernels.linear.baselines import compiled, eager_lora_linear

pytestmark = pytest.mark.perf

PROVIDERS = ["triton", "eager", "compile"]
SCALE = 2.0


def pytest_generate_tests(metafunc):
    rows = [1, 16, 64] + ([4, 8, 128] if metafunc.config.getoption("perf_sweep") else [])
    grid = [(m, 4096, n, 16) for n in (4096, 14336) for m in rows] + [(16, 4096, 4096, 64)]
    metafunc.parametrize("spec,provider", [pytest.param(c, p, id=f"lora-m{c[0]}-k{c[1]}-n{c[2]}-r{c[3]}-bf16-{p}")
                                           for c in grid for p in PROVIDERS])


@functools.lru_cache(maxsize=1)
def build_case(m, k, n, r):
    dt = torch.bfloat16

    def make_inputs():
        return (torch.randn(m, k, device="cuda", dtype=dt), torch.randn(k, n, device="cuda", dtype=dt) * k ** -0.5,
                torch.randn(k, r, device="cuda", dtype=dt) * k ** -0.5, torch.randn(r, n, device="cuda", dtype=dt) * r ** -0.5)

    return PerfCase(
        op="lora_linear", shape={"m": m, "k": k, "n": n, "rank": r}, dtype=dt, make_inputs=make_inputs,
        providers={"triton": lambda x, w, a, b: lora_linear(x, w, a, b, SCALE),
                   "eager": lambda x, w, a, b: eager_lora_linear(x, w, a, b, SCALE),
                   "compile": compiled(functools.partial(eager_lora_linear, scale=SCALE))},
        cost=Cost(flops=2 * m * k * n + 2 * m * r * (k + n), bytes=(k * n + k * r + r * n + m * k + m * n) * 2,
                  flops_ceiling="bf16_tflops"),
        reference=lambda x, w, a, b: lora_linear_reference(x, w, a, b, SCALE), rtol=1e-2,
    )


def test_lora_linear(spec, provider, perf, benchmark):
    perf.run(build_case(*spec), provider, benchmark)
