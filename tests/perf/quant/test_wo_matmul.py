"""Perf cases of kernels/quant/wo_matmul.py: W8A16 and W4A16 (group 128) at LLaMA-3-8B's
projection shapes, bf16 activations, against bf16 F.linear (cuBLAS, on the dequantized
weight), torchao's config eager and compiled (where it runs), gemlite's W4A16 (where it
imports) and, in sweeps, the PyTorch dequantize-then-matmul under torch.compile. Where
wo_matmul's default is dequantize-then-cuBLAS (DEQUANT_MIN_ROWS), the fused kernel is
timed beside it as `triton_mma`. Default: every shape at M = 1, and 4096 -> 14336 at
M = 16, 64 and 2048; --perf-sweep: M in {1, 4, 16, 64, 256, 2048} everywhere.
int8 also against bitsandbytes' LLM.int8() (where it imports; it quantizes the activations
too, so its output is not compared: timed for scale)."""
import functools

import pytest
import torch

from harness.perfcase import PerfCase, ProviderUnavailable, dtype_name
from kernels.norm.baselines import compiled
from kernels.quant import baselines, dequantize, quantize_int4_weight, quantize_int8_weight, wo_matmul
from kernels.quant.cost import wo_matmul_cost
from kernels.quant.wo_matmul import DEQUANT_MIN_ROWS

pytestmark = pytest.mark.perf

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (4096, 6144)]  # (K, N)
RECIPES = ["int4wo-128", "int8wo"]


def grid(sweep):
    if sweep:
        return [(r, m, k, n) for r in RECIPES for k, n in SHAPES for m in (1, 4, 16, 64, 256, 2048)]
    return [(r, 1, k, n) for r in RECIPES for k, n in SHAPES] + [(r, m, 4096, 14336) for r in RECIPES
                                                                for m in (16, 64, 2048)]


def providers_of(recipe, m, sweep):
    """Compiled baselines cost a compilation per case (torchao's took long enough that the
    first run with it installed overran 270 s): in the default run, torchao compiled only
    at one row (ANCHORS.md's figure), the compiled dequantize-then-matmul only in sweeps."""
    bits = 8 if recipe == "int8wo" else 4
    return (["triton", "linear_bf16", "torchao"] + (["torchao_compiled"] if m == 1 or sweep else [])
            + (["triton_mma"] if m >= DEQUANT_MIN_ROWS[bits] else [])
            + (["dequant_compile"] if sweep else []) + (["gemlite"] if recipe.startswith("int4") else ["bnb_int8"]))


def pytest_generate_tests(metafunc):
    sweep = metafunc.config.getoption("perf_sweep")
    params = [pytest.param(c, p, id=f"{c[0]}-m{c[1]}-k{c[2]}-n{c[3]}-bf16-{p}")
              for c in grid(sweep) for p in providers_of(c[0], c[1], sweep)]
    metafunc.parametrize("spec,provider", params)


@functools.lru_cache(maxsize=1)
def build_case(recipe, m, k, n, sweep=False):
    dt = torch.bfloat16
    w = torch.randn(n, k, device="cuda") * k ** -0.5
    qw = quantize_int8_weight(w, dt) if recipe == "int8wo" else quantize_int4_weight(w, int(recipe.split("-")[1]), dt)
    w_deq = dequantize(qw).to(dt)  # (N, K): every provider computes x @ w_deq^T
    unavailable, extra = {}, {}
    for name, make in (("torchao", lambda: baselines.torchao_linear(w_deq, recipe)),
                       ("gemlite", lambda: baselines.gemlite_w4(qw, dt)),
                       ("bnb_int8", lambda: baselines.bnb_int8_linear(w_deq))):
        if name not in providers_of(recipe, m, sweep):
            continue
        try:
            extra[name] = make()
        except ProviderUnavailable as e:
            unavailable[name] = str(e)
    if "torchao" in unavailable:
        unavailable["torchao_compiled"] = unavailable["torchao"]
    wanted = providers_of(recipe, m, sweep)
    providers = {
        "triton": lambda x: wo_matmul(x, qw),
        "linear_bf16": lambda x: torch.nn.functional.linear(x, w_deq),
    }
    if "triton_mma" in wanted:
        providers["triton_mma"] = lambda x: wo_matmul(x, qw, _config_override={"path": "mma"})
    if "dequant_compile" in wanted:
        deq_c = compiled(baselines.dequant_linear)
        providers["dequant_compile"] = lambda x: deq_c(x, qw.qweight, qw.scale, qw.zero, qw.group, qw.bits)
    if "torchao" in extra:
        lin = extra["torchao"]
        providers["torchao"] = lambda x: lin(x)
        if "torchao_compiled" in wanted:
            lin_c = compiled(lin)
            providers["torchao_compiled"] = lambda x: lin_c(x)
    if "gemlite" in extra:
        providers["gemlite"] = lambda x, layer=extra["gemlite"]: layer(x)
    if "bnb_int8" in extra:
        providers["bnb_int8"] = lambda x, layer=extra["bnb_int8"]: layer(x)
    return PerfCase(
        op=f"wo_matmul_{recipe}", shape={"m": m, "k": k, "n": n}, dtype=dt,
        make_inputs=lambda: (torch.randn(m, k, device="cuda", dtype=dt),),
        providers=providers,
        cost=wo_matmul_cost(m, k, n, qw.nbytes, dtype_name(dt)),  # packed weight, scales, zeros; x; y
        reference=lambda x: x.float() @ w_deq.float().t(),
        rtol=1e-2, unavailable=unavailable,
        unchecked=("bnb_int8",),  # LLM.int8() quantizes the activations too: another function, timed for scale
        kernel_info={"weight_bytes": qw.nbytes, "bf16_weight_bytes": 2 * n * k},
        held_bytes=qw.nbytes)  # the providers hold the weight: timed with a flush per call where it fits L2


def test_wo_matmul(spec, provider, perf, benchmark, request):
    perf.run(build_case(*spec, request.config.getoption("perf_sweep")), provider, benchmark)
