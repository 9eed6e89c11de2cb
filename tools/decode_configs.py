"""Explore GQA decode launch configurations on the GPU (key block, warps, pipeline stages,
waves of split-KV programs, and whether the chunks merge in the kernel or in a second
one; one stage: plain loads, no shared-memory pipeline). --short: fewer, all printed.
--models: the default against the former one at every perf case's shape. --mirage: Mirage's
GQA shapes over key block, stages and waves. Device-timed by the harness with cold L2. Informs the defaults in
kernels/attention/decode.py. Prints per shape the pure read bound of the same KV bytes
(tools/read_bound.py), the default, and the best few, as % of copy bandwidth."""
import itertools
import sys

import torch

from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers
from kernels.attention import gqa_decode
from tools.read_bound import read_bound_s

bw = get_ceilings()["copy_gbps"]


def compare_models():
    """--models: the default against the former one (64-key blocks, 3 stages, 2 waves, the
    split count rounded up), a 64-key, 2-stage variant, 3 stages where the tiles are not
    split (unsplit-s3), 3 stages and 2 waves, and one wave, at every perf case's shape:
    LLaMA-3-8B, Chameleon-7B (MHA, QK-norm) and Mirage's GQA (head dim 64, 32 tokens)."""
    cases = [("llama b1 kv32768", 1, 32768, 32, 8, 128, 1, False), ("llama b1 kv4096", 1, 4096, 32, 8, 128, 1, False),
             ("llama b8", 8, 4096, 32, 8, 128, 1, False), ("llama b16", 16, 4096, 32, 8, 128, 1, False),
             ("chameleon b1", 1, 4096, 32, 32, 128, 1, True), ("chameleon b16", 16, 4096, 32, 32, 128, 1, True),
             ("mirage b1", 1, 4096, 16, 2, 64, 32, False), ("mirage b8", 8, 4096, 16, 2, 64, 32, False),
             ("mirage b16", 16, 4096, 16, 2, 64, 32, False)]
    configs = {"default": {}, "former": dict(block_n=64, num_stages=3, waves=2, nearest=False),
               "n64s2x4": dict(block_n=64, num_stages=2, waves=4, nearest=True),
               "unsplit-s3": dict(unsplit_stages=3), "s3x2": dict(num_stages=3, waves=2),
               "x1": dict(waves=1), "x1-unsplit-s3": dict(waves=1, unsplit_stages=3)}
    for name, batch, kv, hq, hkv, d, t, qk in cases:
        dt = torch.float16 if d == 64 else torch.bfloat16
        make = lambda: (torch.randn(batch, t, hq, d, device="cuda", dtype=dt),
                        torch.randn(batch, kv, hkv, d, device="cuda", dtype=dt),
                        torch.randn(batch, kv, hkv, d, device="cuda", dtype=dt))
        norm = dict(q_norm_weight=torch.ones(d, device="cuda", dtype=dt), k_norm_weight=torch.ones(d, device="cuda", dtype=dt)) if qk else {}
        provs = {c: lambda q, k, v, cfg=cfg: gqa_decode(q, k, v, causal=False, _config=cfg, **norm)
                 for c, cfg in configs.items()}
        ms = time_providers(provs, make, TimingConfig(rep_ms=10, warmup_ms=2))
        print(f"{name}: " + ", ".join(f"{c} {v.median_s * 1e6:.2f}us" for c, v in ms.items()), flush=True)


def sweep_mirage():
    """--mirage: Mirage's GQA (16 q / 2 KV heads, d 64, 32 query tokens, KV 4096, fp16) at
    batch 1, 8 and 16 over key block, stages, waves (split count rounded up or nearest)."""
    for batch in (1, 8, 16):
        make = lambda: (torch.randn(batch, 32, 16, 64, device="cuda", dtype=torch.float16),
                        torch.randn(batch, 4096, 2, 64, device="cuda", dtype=torch.float16),
                        torch.randn(batch, 4096, 2, 64, device="cuda", dtype=torch.float16))
        provs = {"default": lambda q, k, v: gqa_decode(q, k, v, causal=False)}
        for bn, ns, waves, near in itertools.product([64, 128], [2, 3], [0.5, 1, 2], [False, True]):
            cfg = dict(block_n=bn, num_stages=ns, waves=waves, nearest=near)
            provs[f"n{bn}s{ns}x{waves}{'near' if near else 'up'}"] = (
                lambda q, k, v, cfg=cfg: gqa_decode(q, k, v, causal=False, _config=cfg))
        ms = time_providers(provs, make, TimingConfig(rep_ms=10, warmup_ms=2))
        best = sorted(ms.items(), key=lambda kv_: kv_[1].median_s)[:8]
        print(f"mirage b{batch}: default {ms['default'].median_s * 1e6:.2f}us; best: "
              + ", ".join(f"{k} {v.median_s * 1e6:.2f}us" for k, v in best), flush=True)


if "--models" in sys.argv:
    compare_models()
    sys.exit()
if "--mirage" in sys.argv:
    sweep_mirage()
    sys.exit()
shapes = [(1, 32768), (16, 4096), (1, 4096), (8, 4096)]
for batch, kv in shapes:
    make = lambda: (torch.randn(batch, 1, 32, 128, device="cuda", dtype=torch.bfloat16),
                    torch.randn(batch, kv, 8, 128, device="cuda", dtype=torch.bfloat16),
                    torch.randn(batch, kv, 8, 128, device="cuda", dtype=torch.bfloat16))
    provs = {}
    # --short: the candidates for the defaults only, every one printed
    grid = (itertools.product([32, 64], [4], [1, 2, 3], [1, 2, 4], ["kernel", "merge"]) if "--short" in sys.argv else
            itertools.product([32, 64], [4, 8], [1, 2, 3, 4], [1, 2, 4], ["kernel", "merge"]))
    for bn, nw, ns, waves, fix in grid:
        cfg = dict(block_n=bn, num_warps=nw, num_stages=ns, waves=waves, fixup=fix)
        provs[f"n{bn}w{nw}s{ns}x{waves}-{fix}"] = lambda q, k, v, cfg=cfg: gqa_decode(q, k, v, causal=False, _config=cfg)
    ms = time_providers(provs, make, TimingConfig(rep_ms=10, warmup_ms=2))
    nbytes = 2 * batch * kv * 8 * 128 * 2
    rb, _ = read_bound_s(nbytes)
    pct = lambda t: f"{t * 1e6:.2f}us {nbytes / t / 1e9 / bw:.0%}"
    best = sorted(ms.items(), key=lambda kv_: kv_[1].median_s)[:None if "--short" in sys.argv else 6]
    print(f"b{batch} kv{kv}: read bound {pct(rb)}; n64w4s3x2 (the first default) {pct(ms['n64w4s3x2-kernel'].median_s)}, "
          f"with the merge kernel {pct(ms['n64w4s3x2-merge'].median_s)}; best: " +
          ", ".join(f"{k} {pct(v.median_s)}" for k, v in best), flush=True)
