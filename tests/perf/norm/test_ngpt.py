"""Perf cases of kernels/norm/ngpt.py: nGPT-1B (hidden 1536) and a LLaMA-sized hidden, decode
and prefill rows, bf16, against the eager PyTorch update and torch.compile of it."""
import functools

import pytest
import torch

from harness.metrics import Cost
from harness.perfcase import PerfCase
from kernels.norm import ngpt_update, ngpt_update_reference
from kernels.norm.baselines import compiled, eager_ngpt_update

pytestmark = pytest.mark.perf

PROVIDERS = ["triton", "eager", "compile"]


def pytest_generate_tests(metafunc):
    rows = [1, 16, 4096] + ([8, 256, 32768] if metafunc.config.getoption("perf_sweep") else [])
    grid = [(r, hid) for hid in (1536, 4096) for r in rows]
    metafunc.parametrize("spec,provider", [pytest.param(c, p, id=f"ngpt-rows{c[0]}-hidden{c[1]}-bf16-{p}")
                                           for c in grid for p in PROVIDERS])


@functools.lru_cache(maxsize=1)
def build_case(rows, hidden):
    dt = torch.bfloat16

    def make_inputs():
        h = torch.nn.functional.normalize(torch.randn(rows, hidden, device="cuda"), dim=-1).to(dt)
        return h, torch.randn(rows, hidden, device="cuda", dtype=dt), torch.full((hidden,), 0.05, device="cuda", dtype=dt)

    return PerfCase(
        op="ngpt_update", shape={"rows": rows, "hidden": hidden}, dtype=dt, make_inputs=make_inputs,
        providers={"triton": ngpt_update, "eager": eager_ngpt_update, "compile": compiled(eager_ngpt_update)},
        cost=Cost(flops=9 * rows * hidden, bytes=(3 * rows * hidden + hidden) * 2),  # read h, y; write h
        reference=ngpt_update_reference, rtol=1e-2,
    )


def test_ngpt_update(spec, provider, perf, benchmark):
    perf.run(build_case(*spec), provider, benchmark)
