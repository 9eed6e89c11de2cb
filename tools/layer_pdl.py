"""Time the Triton decoder layer (CUDA graphs, harness timing) with and without
programmatic dependent launch, and with 0 to 8 blocks of weights and KV prefetched into L2
while a kernel waits for the one before (kernels/launch.py). Informs PREFETCH_BLOCKS in
kernels/linear/fused.py and kernels/attention/decode.py.
Usage: python3 tools/layer_pdl.py [model ...]   (default: all four, batch 1 and 16, KV 4096)"""
import os
import sys

import torch

import kernels.attention.decode as decode
import kernels.linear.fused as fused
from harness.timing import TimingConfig, time_providers
from models import SEED_MODELS, DecoderLayer, KVCache, get_ops

KV = 4096
names = sys.argv[1:] or list(SEED_MODELS)
ops = get_ops("triton")
settings = {"no PDL": (False, 0), "PDL": (True, 0), "PDL prefetch 2": (True, 2), "PDL prefetch 4": (True, 4),
            "PDL prefetch 8": (True, 8)}
for name in names:
    cfg = SEED_MODELS[name]
    layer = DecoderLayer(cfg, dtype=torch.bfloat16, device="cuda")
    for batch in (1, 16):
        def make():
            cache = KVCache.empty(cfg, batch, KV + 1, torch.bfloat16, "cuda")
            cache.k.normal_(), cache.v.normal_()
            return torch.randn(batch, 1, cfg.hidden, device="cuda", dtype=torch.bfloat16), cache.k, cache.v

        def provider(pdl, blocks):
            def run(x, k, v):  # the settings are read at launch, so at capture
                os.environ["KERNELS_PDL"] = "1" if pdl else "0"
                fused.PREFETCH_BLOCKS = decode.PREFETCH_BLOCKS = blocks
                return layer(x, KVCache(k, v), KV, ops)
            return run

        ms = time_providers({k: provider(*v) for k, v in settings.items()}, make, TimingConfig(mode="graph", rep_ms=100))
        base = ms["no PDL"].median_s
        print(f"{name} b{batch}: " + ", ".join(f"{k} {m.median_s * 1e6:.1f} us ({base / m.median_s:.3f}x)"
                                               for k, m in ms.items()), flush=True)
