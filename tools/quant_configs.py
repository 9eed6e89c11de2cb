"""Explore the weight-only GEMM's launch configurations on the GPU, cold L2: one row on
the tensor-core path (16-row tiles), int4 (group 128) and int8, 4096 -> 14336, bf16. Prints per
shape the pure read bound of the weight bytes (tools/read_bound.py), the default and the
best few, with % of copy bandwidth."""
import itertools

import torch

from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers
from kernels.quant import quantize_int4_weight, quantize_int8_weight, wo_matmul
from tools.read_bound import read_bound_s

bw = get_ceilings()["copy_gbps"]
k, n = 4096, 14336
w = torch.randn(n, k, device="cuda") * k ** -0.5
for recipe, m in [("int4wo-128", 1), ("int8wo", 1)]:
    qw = quantize_int4_weight(w, 128, torch.bfloat16) if recipe != "int8wo" else quantize_int8_weight(w, torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    provs = {"default": lambda: wo_matmul(x, qw)}
    grid = itertools.product([64, 128, 256], [128], [4], [3, 4], [2, 4, 8], [False, True])
    for bn, bk, nw, ns, waves, swap in grid:
        cfg = dict(block_m=16, block_n=bn, block_k=bk, num_warps=nw, num_stages=ns, waves=waves, swap_ab=swap)
        try:
            wo_matmul(x, qw, _config_override=cfg)
        except Exception as e:  # noqa: BLE001 - out of resources and friends
            print(f"  skip {cfg}: {type(e).__name__}")
            continue
        name = f"n{bn}k{bk}w{nw}s{ns}x{waves}" + ("-swap" if swap else "")
        provs[name] = lambda cfg=cfg: wo_matmul(x, qw, _config_override=cfg)
    ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
    rb, _ = read_bound_s(qw.nbytes)
    pct = lambda t: f"{t * 1e6:.1f}us {qw.nbytes / t / 1e9 / bw:.0%}"
    best = sorted(ms.items(), key=lambda kv: kv[1].median_s)[:5]
    print(f"{recipe} m{m} {k}x{n} ({qw.nbytes / 1e6:.1f} MB): read bound {pct(rb)}; default {pct(ms['default'].median_s)}; "
          "best: " + ", ".join(f"{k_} {pct(v.median_s)}" for k_, v in best), flush=True)
