"""Perf cases of kernels/norm/ngpt.py: nGPT-1B (hidden 1536) and a LLaMA-sized hidden, decode
and prefill rows, bf16, against the eager PyTorch update and torch.compile of it."""
import pytest
import torch

from harness.metrics import Cost
from harness.perfcase import PerfCase, Provider, perf_bench, perf_tests
from kernels.norm import ngpt_update, ngpt_update_reference
from kernels.norm.baselines import eager_ngpt_update
from kernels.providers import compiled

pytestmark = pytest.mark.perf

PROVIDERS = [
    Provider("triton", ngpt_update, kernel=True),
    Provider("eager", eager_ngpt_update),
    Provider("compile", make=lambda _: compiled(eager_ngpt_update)),
]


def grid(sweep):
    rows = [1, 16, 4096] + ([8, 256, 32768] if sweep else [])
    return [dict(rows=r, hidden=hid) for hid in (1536, 4096) for r in rows]


@perf_bench(grid=grid, id="ngpt-rows{rows}-hidden{hidden}-bf16", providers=PROVIDERS)
def ngpt_update_case(rows, hidden):
    dt = torch.bfloat16

    def make_inputs():
        h = torch.nn.functional.normalize(torch.randn(rows, hidden, device="cuda"), dim=-1).to(dt)
        return h, torch.randn(rows, hidden, device="cuda", dtype=dt), torch.full((hidden,), 0.05, device="cuda", dtype=dt)

    return PerfCase(
        op="ngpt_update", shape={"rows": rows, "hidden": hidden}, dtype=dt, make_inputs=make_inputs,
        cost=Cost(flops=9 * rows * hidden, bytes=(3 * rows * hidden + hidden) * 2),  # read h, y; write h
        reference=ngpt_update_reference, rtol=1e-2,
    )


pytest_generate_tests = perf_tests(ngpt_update_case)


def test_ngpt_update(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
