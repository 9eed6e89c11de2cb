"""Explore the fused linear kernels' launch configurations (N block, K block, warps,
stages, waves of split-K programs) on the GPU, cold L2. Prints the best few per shape."""
import itertools

import torch

from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers
from kernels.linear import gated_mlp, rmsnorm_linear

bw = get_ceilings()["copy_gbps"]
for op, m, k, n in [("norm", 1, 4096, 6144), ("norm", 16, 4096, 4096), ("mlp", 1, 4096, 14336), ("mlp", 16, 4096, 4096)]:
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    g = torch.ones(k, device="cuda", dtype=torch.bfloat16)
    w1 = torch.randn(k, n, device="cuda", dtype=torch.bfloat16) * 0.01
    w3 = torch.randn(k, n, device="cuda", dtype=torch.bfloat16) * 0.01
    provs = {}
    for bn, bk, nw, ns, waves in itertools.product([32, 64, 128], [128, 256], [4], [3, 4], [1, 2, 4]):
        cfg = dict(block_n=bn, block_k=bk, num_warps=nw, num_stages=ns, waves=waves)
        if op == "norm":
            provs[f"n{bn}k{bk}w{nw}s{ns}x{waves}"] = lambda cfg=cfg: rmsnorm_linear(x, g, w1, _config=cfg)
        else:
            provs[f"n{bn}k{bk}w{nw}s{ns}x{waves}"] = lambda cfg=cfg: gated_mlp(x, w1, w3, _config=cfg)
    ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
    nbytes = (k * n * (1 if op == "norm" else 2)) * 2
    best = sorted(ms.items(), key=lambda kv: kv[1].median_s)[:6]
    d = ms["n64k128w4s4x2"]
    print(f"{op} m{m} {k}x{n}: default {d.median_s*1e6:.1f}us {nbytes/d.median_s/1e9/bw:.0%}; best: " +
          ", ".join(f"{k_} {v.median_s*1e6:.1f}us {nbytes/v.median_s/1e9/bw:.0%}" for k_, v in best), flush=True)
