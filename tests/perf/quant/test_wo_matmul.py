"""Perf cases of kernels/quant/wo_matmul.py: W8A16 and W4A16 (group 128) at LLaMA-3-8B's
projection shapes, bf16 activations, against bf16 F.linear (cuBLAS, on the dequantized
weight), torchao's config eager and compiled (where it runs), gemlite's W4A16 (where it
imports) and, in sweeps, the PyTorch dequantize-then-matmul under torch.compile. Where
wo_matmul's default is dequantize-then-cuBLAS (DEQUANT_MIN_ROWS), the fused kernel is
timed beside it as `triton_mma`. Default: every shape at M = 1, and 4096 -> 14336 at
M = 16, 64 and 2048; --perf-sweep: M in {1, 4, 16, 64, 256, 2048} everywhere.
int8 also against bitsandbytes' LLM.int8() (where it imports; it quantizes the activations
too, so its output is not compared: timed for scale)."""
from types import SimpleNamespace

import pytest
import torch

from harness.perfcase import PerfCase, Provider, ProviderUnavailable, dtype_name, perf_bench, perf_tests
from kernels.providers import compiled
from kernels.quant import baselines, dequantize, quantize_int4_weight, quantize_int8_weight, wo_matmul
from kernels.quant.cost import wo_matmul_cost
from kernels.quant.wo_matmul import DEQUANT_MIN_ROWS

pytestmark = pytest.mark.perf

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (4096, 6144)]  # (K, N)
RECIPES = ["int4wo-128", "int8wo"]
DT = torch.bfloat16


def _once(build):
    """build() called at most once: torchao's layer serves its eager and compiled providers,
    and where it cannot be built, both get the one reason."""
    memo = []

    def get():
        if not memo:
            try:
                memo.append((build(), None))
            except ProviderUnavailable as exc:
                memo.append((None, exc))
        layer, exc = memo[0]
        if exc is not None:
            raise exc
        return layer
    return get


def _dequant_compile(s):
    deq_c = compiled(baselines.dequant_linear)
    qw = s.qw
    return lambda x: deq_c(x, qw.qweight, qw.scale, qw.zero, qw.group, qw.bits)


def _called(layer):
    return lambda x: layer(x)  # a layer (nn.Module or a library's object) as a provider of x


def _torchao_compiled(s):
    return _called(compiled(s.torchao()))


# Compiled baselines cost a compilation per case (torchao's took long enough that the first
# run with it installed overran 270 s): in the default run, torchao compiled only at one row,
# the compiled dequantize-then-matmul only in sweeps.
PROVIDERS = [
    Provider("triton", make=lambda s: lambda x: wo_matmul(x, s.qw), kernel=True),
    Provider("linear_bf16", make=lambda s: lambda x: torch.nn.functional.linear(x, s.w_deq)),
    Provider("torchao", make=lambda s: _called(s.torchao()), needs="torchao"),
    Provider("torchao_compiled", make=_torchao_compiled, needs="torchao", when=lambda p: p.m == 1 or p.sweep),
    # Where wo_matmul's default is dequantize-then-cuBLAS, the fused kernel timed beside it
    Provider("triton_mma", make=lambda s: lambda x: wo_matmul(x, s.qw, config={"path": "mma"}),
             when=lambda p: p.m >= DEQUANT_MIN_ROWS[8 if p.recipe == "int8wo" else 4]),
    Provider("dequant_compile", make=_dequant_compile, when=lambda p: p.sweep),
    Provider("gemlite", make=lambda s: _called(baselines.gemlite_w4(s.qw, DT)), needs="gemlite",
             when=lambda p: p.recipe.startswith("int4")),
    # LLM.int8() quantizes the activations too: another function, timed for scale
    Provider("bnb_int8", make=lambda s: _called(baselines.bnb_int8_linear(s.w_deq)), needs="bitsandbytes", checked=False,
             when=lambda p: not p.recipe.startswith("int4")),
]


def grid(sweep):
    if sweep:
        points = [(r, m, k, n) for r in RECIPES for k, n in SHAPES for m in (1, 4, 16, 64, 256, 2048)]
    else:
        points = [(r, 1, k, n) for r in RECIPES for k, n in SHAPES] + [(r, m, 4096, 14336) for r in RECIPES
                                                                      for m in (16, 64, 2048)]
    return [dict(recipe=r, m=m, k=k, n=n, sweep=sweep) for r, m, k, n in points]


@perf_bench(grid=grid, id="{recipe}-m{m}-k{k}-n{n}-bf16", providers=PROVIDERS)
def wo_matmul_case(recipe, m, k, n, sweep):
    w = torch.randn(n, k, device="cuda") * k ** -0.5
    qw = quantize_int8_weight(w, DT) if recipe == "int8wo" else quantize_int4_weight(w, int(recipe.split("-")[1]), DT)
    w_deq = dequantize(qw).to(DT)  # (N, K): every provider computes x @ w_deq^T
    torchao = _once(lambda: baselines.torchao_linear(w_deq, recipe))
    return PerfCase(
        op=f"wo_matmul_{recipe}", shape={"m": m, "k": k, "n": n}, dtype=DT,
        make_inputs=lambda: (torch.randn(m, k, device="cuda", dtype=DT),),
        cost=wo_matmul_cost(m, k, n, qw.nbytes, dtype_name(DT)),  # packed weight, scales, zeros; x; y
        reference=lambda x: x.float() @ w_deq.float().t(),
        rtol=1e-2,
        kernel_info={"weight_bytes": qw.nbytes, "bf16_weight_bytes": 2 * n * k},
        held_bytes=qw.nbytes,  # the providers hold the weight: timed with a flush per call where it fits L2
        state=SimpleNamespace(qw=qw, w_deq=w_deq, torchao=torchao))


pytest_generate_tests = perf_tests(wo_matmul_case)


def test_wo_matmul(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
