"""Perf cases of kernels/quant/mixq.py at MixQ's shapes (the paper's figure: 7B, 13B, 70B q and down
projections), bf16, activations with 64 planted outlier channels (20x).
W8A8O16 (outliers predicted by the locality cache, warmed by one call) against bf16
F.linear, torch._int_mm alone on pre-quantized inputs, SmoothQuant-style W8A8 in PyTorch
(quantize, _int_mm, dequantize), torch._scaled_mm fp8 row-wise alone, and bitsandbytes'
LLM.int8() (outliers over 6 in fp16; where it imports). W4A4O16 likewise
(128 calibrated outlier channels). Every output is checked against the float32 product of
x and the unquantized weight (rtol 5% for W8A8, 30% for W4A4: the recipes' own error).
Default: M = 2048 on every shape (W4A4: the 70B shapes) and M = 16 on 70B;
--perf-sweep: M in {1, 16, 64, 256, 1024, 2048, 4096}."""
from types import SimpleNamespace

import pytest
import torch

from harness.perfcase import PerfCase, Provider, dtype_name, perf_bench, perf_tests
from kernels.quant import MixQLinear, baselines, mixq_linear
from kernels.quant.cost import mixq_cost

pytestmark = pytest.mark.perf

SHAPES = {"7b-q": (12288, 4096), "7b-down": (4096, 11008), "13b-q": (12288, 5120), "13b-down": (5120, 13824),
          "70b-q": (10240, 8192), "70b-down": (8192, 28672)}  # (N, K)
DT = torch.bfloat16
# Not compared with the reference: the GEMMs alone compute another product, and
# SmoothQuant-style W8A8 has no outlier path, so on these activations its error is
# what MixQ avoids (H100: 6-9% relative, over the 5% allowed; results 0014).
GEMM_ONLY = ("int_mm", "scaled_mm_fp8", "smoothquant")

PROVIDERS = [
    Provider("triton", make=lambda s: lambda x: mixq_linear(x, s.layer), kernel=True),
    Provider("linear_bf16", make=lambda s: lambda x: torch.nn.functional.linear(x, s.w)),
    # the GEMMs alone, on inputs quantized beforehand (their outputs are not this layer's)
    Provider("int_mm", make=lambda s: lambda x: torch._int_mm(s.xq, s.layer.wq), checked=False),
    Provider("smoothquant", make=lambda s: lambda x: baselines.smoothquant_w8a8(x, s.layer.wq, s.layer.sw),
             checked=False),
    Provider("scaled_mm_fp8", make=lambda s: lambda x: baselines.scaled_mm_fp8(*s.x8_w, DT), checked=False),
    Provider("bnb_int8", make=lambda s: _bnb_int8(s.w), needs="bitsandbytes",
             when=lambda p: p.bits == 8 or "LLM.int8() is an 8-bit scheme: compared with W8A8O16 only"),
]


def _bnb_int8(w):
    layer = baselines.bnb_int8_linear(w)  # raises ProviderUnavailable where it cannot run here
    return lambda x: layer(x.to(torch.float16))  # LLM.int8() runs in fp16: the cast is part of its time


def grid(sweep):
    if sweep:
        points = [(b, s, m) for b in (8, 4) for s in SHAPES for m in (1, 16, 64, 256, 1024, 2048, 4096)]
    else:
        points = ([(8, s, 2048) for s in SHAPES] + [(8, s, 16) for s in ("70b-q", "70b-down")]
                  + [(4, s, 2048) for s in ("70b-q", "70b-down")])
    return [dict(bits=b, shape=s, m=m) for b, s, m in points]


def activations(m, k, channels, g=None):
    x = torch.randn(m, k, device="cuda", generator=g)
    x[:, channels] *= 20.0
    return x.to(torch.bfloat16)


@perf_bench(grid=grid, id="w{bits}a{bits}o16-{shape}-m{m}-bf16", providers=PROVIDERS)
def mixq_case(bits, shape, m):
    n, k = SHAPES[shape]
    w = (torch.randn(n, k, device="cuda") * k ** -0.5).to(DT)
    channels = torch.randperm(k, device="cuda")[:64]  # fewer than W4A4's 128 calibrated channels
    layer = MixQLinear(w, dtype=DT, bits=bits)
    if bits == 8:  # warm the locality cache, then measure its hit rate over fresh batches
        mixq_linear(activations(m, k, channels), layer)
        layer.cache.update()
        layer.cache.hits = layer.cache.checks = 0  # count from the warm cache on
        for _ in range(20):
            mixq_linear(activations(m, k, channels), layer)
            layer.cache.update()
    else:
        layer.calibrate(activations(max(m, 256), k, channels), 128)
    x8_w = baselines.fp8_rowwise(torch.randn(m, k, device="cuda", dtype=DT), w)
    xq = torch.randint(-127, 128, (m, k), device="cuda", dtype=torch.int8)

    def reference(x):  # the float product
        return x.float() @ w.float().t()

    return PerfCase(
        op=f"mixq_w{bits}a{bits}o16", shape={"model": shape, "m": m, "n": n, "k": k}, dtype=DT,
        make_inputs=lambda: (activations(m, k, channels),),
        cost=mixq_cost(m, n, k, int(layer.cache.idx.numel()), dtype_name(DT)),
        reference=reference, rtol=0.05 if bits == 8 else 0.3,
        held_bytes=n * k,  # the int8 weight (W4A4: int4 values, one a byte) the providers hold
        kernel_info={"outlier_channels": int(layer.cache.idx.numel()),
                     "outlier_hit_rate": layer.cache.hit_rate if bits == 8 else None,
                     "unchecked_baselines": list(GEMM_ONLY)},
        state=SimpleNamespace(layer=layer, w=w, xq=xq, x8_w=x8_w))


pytest_generate_tests = perf_tests(mixq_case)


def test_mixq(spec, provider, perf, benchmark):
    perf.run(spec.build(), provider, benchmark)
