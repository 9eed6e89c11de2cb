"""Explore RMSNorm launch configurations on the GPU (rows per program x warps), device-timed
with the harness, cold L2. Informs kernels/norm/rmsnorm.py:_launch_config. Prints GB/s."""
import itertools
import sys

import torch
import triton

from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers
from kernels.norm import rmsnorm as R

bw = get_ceilings()["copy_gbps"]
shapes = [(1, 4096), (1, 8192), (16, 4096), (16, 8192), (256, 4096), (256, 8192), (4096, 4096), (4096, 8192)]
for rows, hidden in shapes:
    x = torch.randn(rows, hidden, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(hidden, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    provs = {}
    for rp, nw in itertools.product([1, 2, 4, 8], [4, 8, 16, 32]):
        if rp * hidden > 32768:
            continue
        def fn(x, w, rp=rp, nw=nw):
            R._rmsnorm_kernel[(triton.cdiv(rows, rp),)](
                x, x, w, y, y, x.stride(0), x.stride(0), y.stride(0), y.stride(0), rows, hidden, 1e-6,
                HAS_RESIDUAL=False, ROWS=rp, BLOCK_N=triton.next_power_of_2(hidden), SINGLE_PASS=True, num_warps=nw)
        provs[f"r{rp}w{nw}"] = fn
    ms = time_providers(provs, lambda: (x, w), TimingConfig(rep_ms=30, warmup_ms=5))
    nbytes = 2 * rows * hidden * 2 + hidden * 2
    best = sorted(ms.items(), key=lambda kv: kv[1].median_s)[:6]
    dflt = R._launch_config(rows, hidden, 2)
    print(f"{rows}x{hidden}: default r{dflt['ROWS']}w{dflt['num_warps']}; best: " +
          ", ".join(f"{k} {v.median_s*1e6:.2f}us {nbytes/v.median_s/1e9/bw:.0%}" for k, v in best))
