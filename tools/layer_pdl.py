"""The Triton decoder layer's decode step (KV 4096, bf16) with and without programmatic
dependent launch (kernels/launch.py), each in CUDA graphs with the harness's timing; the
pure-read bound of the bytes the step must read (every weight and the KV cache:
tools/read_bound.py); and, with --breakdown, the time of each kernel of the step (CUDA
profiler, eager calls, launch order).
Usage: python3 tools/layer_pdl.py [--breakdown] [model ...]   (default: all four, batch 1 and 16)"""
import os
import sys

import torch

from harness.timing import TimingConfig, time_providers
from kernels.launch import PDL_ENV
from models import SEED_MODELS, DecoderLayer, KVCache, get_ops
from tools.read_bound import read_bound_s

KV = 4096
args = sys.argv[1:]
breakdown = "--breakdown" in args
names = [a for a in args if not a.startswith("--")] or list(SEED_MODELS)
ops = get_ops("triton")


def kernel_times(fn, calls=20):
    """[(kernel name, mean device us)] of the kernels one call of fn launches, in launch
    order, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    per_call = len(kernels) // calls
    return [(kernels[i].name[:70], sum(kernels[c * per_call + i].device_time for c in range(calls)) / calls)
            for i in range(per_call)]


for name in names:
    cfg = SEED_MODELS[name]
    layer = DecoderLayer(cfg, dtype=torch.bfloat16, device="cuda")
    weight_bytes = sum(b.numel() * b.element_size() for b in layer.buffers())
    for batch in (1, 16):
        def make():
            cache = KVCache.empty(cfg, batch, KV + 1, torch.bfloat16, "cuda")
            cache.k.normal_(), cache.v.normal_()
            return torch.randn(batch, 1, cfg.hidden, device="cuda", dtype=torch.bfloat16), cache.k, cache.v

        def provider(pdl):
            def run(x, k, v):  # read at launch, so at capture
                os.environ[PDL_ENV] = "1" if pdl else "0"
                return layer(x, KVCache(k, v), KV, ops)
            return run

        ms = time_providers({"PDL": provider(True), "no PDL": provider(False)}, make,
                            TimingConfig(mode="graph", rep_ms=100))
        nbytes = weight_bytes + 2 * batch * KV * cfg.n_kv_heads * cfg.head_dim * 2
        bound, _ = read_bound_s(nbytes)
        on, off = ms["PDL"].median_s, ms["no PDL"].median_s
        print(f"{name} b{batch}: PDL {on * 1e6:.1f} us, no PDL {off * 1e6:.1f} us ({off / on:.3f}x); "
              f"pure read of its {nbytes / 1e6:.0f} MB {bound * 1e6:.1f} us (PDL at {bound / on:.0%} of it)",
              flush=True)
        if breakdown:
            x, k, v = make()
            os.environ[PDL_ENV] = "0"
            per = kernel_times(lambda: layer(x, KVCache(k, v), KV, ops))
            total = sum(us for _, us in per)
            for kname, us in per:
                print(f"    {us:7.1f} us  {kname}")
            print(f"    {total:7.1f} us  sum of kernels (eager calls, no PDL)", flush=True)
