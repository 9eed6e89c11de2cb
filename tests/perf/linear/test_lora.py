"""Perf cases of lora_linear (kernels/linear/fused.py): x W + s (x A) B, rank 16 (and 64),
LLaMA-3-8B projection shapes, decode-sized M, bf16, against eager PyTorch and torch.compile."""
import functools

import pytest
import torch

from harness.metrics import Cost
from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.linear import lora_linear, lora_linear_reference
from kernels.linear.baselines import eager_lora_linear
from kernels.providers import compiled

pytestmark = pytest.mark.perf

SCALE = 2.0

PROVIDERS = [
    Provider("triton", lambda x, w, a, b: lora_linear(x, w, a, b, SCALE), kernel=True),
    Provider("eager", lambda x, w, a, b: eager_lora_linear(x, w, a, b, SCALE)),
    Provider("compile", make=lambda _: compiled(functools.partial(eager_lora_linear, scale=SCALE))),
]


def grid(sweep):
    rows = [1, 16, 64] + ([4, 8, 128] if sweep else [])
    return [dict(m=m, k=4096, n=n, r=16) for n in (4096, 14336) for m in rows] + [dict(m=16, k=4096, n=4096, r=64)]


@perf_bench(grid=grid, id="lora-m{m}-k{k}-n{n}-r{r}-bf16", providers=PROVIDERS)
def lora_linear_case(m, k, n, r):
    dt = torch.bfloat16

    def make_inputs():
        return (torch.randn(m, k, device="cuda", dtype=dt), torch.randn(k, n, device="cuda", dtype=dt) * k ** -0.5,
                torch.randn(k, r, device="cuda", dtype=dt) * k ** -0.5, torch.randn(r, n, device="cuda", dtype=dt) * r ** -0.5)

    return PerfCase(
        op="lora_linear", shape={"m": m, "k": k, "n": n, "rank": r}, dtype=dt, make_inputs=make_inputs,
        cost=Cost(flops=2 * m * k * n + 2 * m * r * (k + n), bytes=(k * n + k * r + r * n + m * k + m * n) * 2,
                  flops_ceiling="bf16_tflops"),
        reference=lambda x, w, a, b: lora_linear_reference(x, w, a, b, SCALE), rtol=1e-2,
    )


pytest_generate_tests = perf_tests(lora_linear_case)


def test_lora_linear(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
