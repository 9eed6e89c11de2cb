"""Explore GQA decode launch configurations on the GPU (key block, warps, pipeline stages,
waves of split-KV programs), device-timed by the harness with cold L2. Informs the
defaults in kernels/attention/decode.py. Prints the best few per shape, % of copy bandwidth."""
import itertools

import torch

from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers
from kernels.attention import gqa_decode

bw = get_ceilings()["copy_gbps"]
shapes = [(1, 32768), (16, 4096), (1, 4096), (8, 4096)]
for batch, kv in shapes:
    make = lambda: (torch.randn(batch, 1, 32, 128, device="cuda", dtype=torch.bfloat16),
                    torch.randn(batch, kv, 8, 128, device="cuda", dtype=torch.bfloat16),
                    torch.randn(batch, kv, 8, 128, device="cuda", dtype=torch.bfloat16))
    provs = {}
    for bn, nw, ns, waves in itertools.product([32, 64, 128], [4, 8], [2, 3, 4], [1, 2, 4, 8]):
        cfg = dict(block_n=bn, num_warps=nw, num_stages=ns, waves=waves)
        provs[f"n{bn}w{nw}s{ns}x{waves}"] = lambda q, k, v, cfg=cfg: gqa_decode(q, k, v, causal=False, _config=cfg)
    ms = time_providers(provs, make, TimingConfig(rep_ms=15, warmup_ms=3))
    nbytes = 2 * batch * kv * 8 * 128 * 2
    best = sorted(ms.items(), key=lambda kv_: kv_[1].median_s)[:8]
    dflt = ms["n64w4s3x2"]
    print(f"b{batch} kv{kv}: default {dflt.median_s*1e6:.2f}us {nbytes/dflt.median_s/1e9/bw:.0%}; best: " +
          ", ".join(f"{k} {v.median_s*1e6:.2f}us {nbytes/v.median_s/1e9/bw:.0%}" for k, v in best), flush=True)
