"""Explore the MixQ GEMM's launch configurations on the GPU (LLaMA-2-70B q projection,
bf16, 64 planted outlier channels), and time the activation-quantization kernel alone.
Prints per M the baselines (bf16 F.linear, torch._int_mm alone), the quantize kernel alone
at 1 and 2 rows per program, K blocks of 256 to 2048, 4 or 8 warps (and, as "notrack", without
recording the channel maxima, to see what the atomics cost), the default and the best few.
--quantize-only: the quantize kernel and the baselines, no GEMM configurations."""
import itertools
import sys

import torch

from harness.timing import TimingConfig, time_providers
from kernels.quant import MixQLinear, mixq_linear
from kernels.quant.mixq import mixq_quantize

n, k = 10240, 8192
w = (torch.randn(n, k, device="cuda") * k ** -0.5).to(torch.bfloat16)
for m in (2048, 16):
    x = torch.randn(m, k, device="cuda")
    x[:, torch.randperm(k, device="cuda")[:64]] *= 20
    x = x.to(torch.bfloat16)
    layer = MixQLinear(w, dtype=torch.bfloat16)
    mixq_linear(x, layer)
    layer.cache.update()
    xq = torch.randint(-127, 128, (m, k), device="cuda", dtype=torch.int8)
    provs = {"default": lambda: mixq_linear(x, layer), "linear_bf16": lambda: torch.nn.functional.linear(x, w)}
    for rows, bk, nw in itertools.product((1, 2), (256, 1024, 2048), (4, 8)):  # the activation quantization
        provs[f"quantize_only_r{rows}k{bk}w{nw}"] = lambda rows=rows, bk=bk, nw=nw: mixq_quantize(
            x, layer.cache.is_out, layer.cache.ch_max, 127, layer.cache.threshold, rows, bk, nw)
    provs["quantize_only_notrack_r1k1024w8"] = lambda: mixq_quantize(x, layer.cache.is_out, None, 127, 0.0, 1, 1024, 8)
    if m > 16:
        provs["int_mm"] = lambda: torch._int_mm(xq, layer.wq)
    bms = (64, 128) if m > 16 else (16,)
    gemm_grid = [] if "--quantize-only" in sys.argv else itertools.product(bms, [128, 256], [128], [8], [3, 4])
    for bm, bn, bk, nw, ns in gemm_grid:
        cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw, num_stages=ns)
        try:
            mixq_linear(x, layer, _config=cfg)
        except Exception as e:  # noqa: BLE001
            print(f"  skip {cfg}: {type(e).__name__}")
            continue
        provs[f"m{bm}n{bn}k{bk}w{nw}s{ns}"] = lambda cfg=cfg: mixq_linear(x, layer, _config=cfg)
    ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
    best = sorted(((k_, v) for k_, v in ms.items() if not k_.startswith("quantize")), key=lambda kv: kv[1].median_s)[:6]
    us = lambda name: f"{ms[name].median_s * 1e6:.1f}us"
    print(f"mixq w8a8 m{m} {n}x{k}: linear {us('linear_bf16')}" + (f", int_mm {us('int_mm')}" if m > 16 else "")
          + ", quantize alone: " + ", ".join(f"{k_.removeprefix('quantize_only_')} {v.median_s * 1e6:.1f}us" for k_, v in
                                             sorted(ms.items(), key=lambda kv: kv[1].median_s) if k_.startswith("quantize"))
          + f", default {us('default')}; best: "
          + ", ".join(f"{k_} {v.median_s * 1e6:.1f}us" for k_, v in best), flush=True)
