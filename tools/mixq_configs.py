"""Explore the MixQ GEMM's launch configurations on the GPU (LLaMA-2-70B q projection,
bf16, 64 planted outlier channels), and time the activation-quantization kernel alone.
Prints per M the baselines (bf16 F.linear, torch._int_mm alone, fp8 torch._scaled_mm), the
quantize kernel alone (rows per program, K block: 8192 is the whole row, read once; warps;
"notrack" without recording the channel maxima), the GEMM configurations (tiles, stages,
outlier block), "no_outliers" (a layer with an empty outlier set, recording nothing: its
quantized values are smaller, which may itself change the GEMM's time), the default and the
best few.
--quantize-only: the quantize kernel and the baselines, no GEMM configurations."""
import itertools
import sys

import torch

from harness.timing import TimingConfig, time_providers
from kernels.quant import MixQLinear, mixq_linear
from kernels.quant.mixq import mixq_quantize

def planted_case(m, w, n_out=64):
    """x (m, K) bf16 with n_out random channels planted at 20x, and a MixQ W8A8O16 layer of
    w (N, K) whose locality cache has learned them from one call."""
    k = w.shape[1]
    x = torch.randn(m, k, device=w.device)
    x[:, torch.randperm(k, device=w.device)[:n_out]] *= 20
    x = x.to(torch.bfloat16)
    layer = MixQLinear(w, dtype=torch.bfloat16)
    mixq_linear(x, layer)
    layer.cache.update()
    return x, layer


def main():
    n, k = 10240, 8192
    w = (torch.randn(n, k, device="cuda") * k ** -0.5).to(torch.bfloat16)
    for m in (2048, 16):
        x, layer = planted_case(m, w)
        xq = torch.randint(-127, 128, (m, k), device="cuda", dtype=torch.int8)
        untracked = MixQLinear(w, dtype=torch.bfloat16)
        untracked.track = False  # its cache's set stays empty (an outlier_idx argument would sync to check it)
        provs = {"default": lambda: mixq_linear(x, layer), "linear_bf16": lambda: torch.nn.functional.linear(x, w),
                 "no_outliers": lambda: mixq_linear(x, untracked)}
        for rows, bk, nw in itertools.product((1,), (1024, 2048, 8192), (4, 8, 16)):  # the activation quantization
            provs[f"quantize_only_r{rows}k{bk}w{nw}"] = lambda rows=rows, bk=bk, nw=nw: mixq_quantize(
                x, layer.cache.is_out, layer.cache.ch_max, 127, layer.cache.threshold, rows, bk, nw)
        provs["quantize_only_notrack_r1k8192w8"] = lambda: mixq_quantize(x, layer.cache.is_out, None, 127, 0.0, 1, 8192, 8)
        if m > 16:
            provs["int_mm"] = lambda: torch._int_mm(xq, layer.wq)
            x8, w8 = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
            one_m, one_n = torch.ones(m, 1, device="cuda"), torch.ones(1, n, device="cuda")
            provs["scaled_mm_fp8"] = lambda: torch._scaled_mm(x8, w8.t(), one_m, one_n, out_dtype=torch.bfloat16)
        tiles = ((128, 256), (256, 128)) if m > 16 else ((16, 128), (32, 128))
        grid = [] if "--quantize-only" in sys.argv else itertools.product(tiles, [128], [8], [3, 4], [32, 64])
        for (bm, bn), bk, nw, ns, bo in grid:
            cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, BLOCK_O=bo, num_warps=nw, num_stages=ns)
            try:
                mixq_linear(x, layer, _config=cfg)
            except Exception as e:  # noqa: BLE001
                print(f"  skip {cfg}: {type(e).__name__}")
                continue
            name = f"m{bm}n{bn}k{bk}o{bo}w{nw}s{ns}"
            provs[name] = lambda cfg=cfg: mixq_linear(x, layer, _config=cfg)
        ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
        best = sorted(((k_, v) for k_, v in ms.items() if not k_.startswith("quantize")), key=lambda kv: kv[1].median_s)[:12]
        us = lambda name: f"{ms[name].median_s * 1e6:.1f}us"
        print(f"mixq w8a8 m{m} {n}x{k}: linear {us('linear_bf16')}"
              + (f", int_mm {us('int_mm')}, scaled_mm_fp8 {us('scaled_mm_fp8')}" if m > 16 else "")
              + f", default {us('default')}, no_outliers {us('no_outliers')}; quantize alone: "
              + ", ".join(f"{k_.removeprefix('quantize_only_')} {v.median_s * 1e6:.1f}us" for k_, v in
                          sorted(ms.items(), key=lambda kv: kv[1].median_s) if k_.startswith("quantize"))
              + "; best: " + ", ".join(f"{k_} {v.median_s * 1e6:.1f}us" for k_, v in best), flush=True)


if __name__ == "__main__":
    main()
