"""Sweep of the lab one-row gemv (tools/gemv_lab.py) against the kept gemv and F.linear, H100, bf16, cold L2.
Usage: PYTHONPATH=. python tools/gemv_lab_sweep.py [int4|int8] [K:N ...]"""
import itertools
import sys

import torch

from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers
from kernels.quant import quantize_int4_weight, quantize_int8_weight, wo_matmul
from tools.gemv_lab import gemv4, gemv8
from tools.read_bound import read_bound_s

bw = get_ceilings()["copy_gbps"]
kinds = [a for a in sys.argv[1:] if a in ("int4", "int8")] or ["int4", "int8"]
shapes = [tuple(map(int, a.split(":"))) for a in sys.argv[1:] if ":" in a] or [(4096, 14336), (14336, 4096), (4096, 4096)]
for kind, (k, n) in itertools.product(kinds, shapes):
    w = torch.randn(n, k, device="cuda") * k ** -0.5
    qw = quantize_int4_weight(w, 128, torch.bfloat16) if kind == "int4" else quantize_int8_weight(w, torch.bfloat16)
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    wd = w.to(torch.bfloat16)
    ref = wo_matmul(x, qw).float()
    provs = {"F.linear": lambda: torch.nn.functional.linear(x, wd), "default": lambda: wo_matmul(x, qw)}
    fn = gemv4 if kind == "int4" else gemv8
    grid = itertools.product([(32, 1, 1)], [16, 32], [False, True], [8, 12, 16, 24, 32], [None, 128])
    for (words, wpt, nw), rb, pre, waves, maxnreg in grid:
        if maxnreg and rb == 16:
            continue
        cfg = dict(words=words, wpt=wpt, num_warps=nw, rb=rb, prefetch=pre, waves=waves, maxnreg=maxnreg)
        name = f"w{words}t{wpt}n{nw}r{rb}{'p' if pre else ''}x{waves}" + (f"m{maxnreg}" if maxnreg else "")
        try:
            y = fn(x, qw, **cfg).float()
        except Exception as e:  # noqa: BLE001
            print(f"  skip {name}: {type(e).__name__} {str(e)[:80]}", flush=True)
            continue
        err = ((y - ref).norm() / ref.norm()).item()
        if err > 1e-2:
            print(f"  WRONG {name}: rel err {err:.3g}", flush=True)
            continue
        provs[name] = lambda cfg=cfg: fn(x, qw, **cfg)
    ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
    rb_s, _ = read_bound_s(qw.nbytes)
    pct = lambda t: f"{t * 1e6:.1f}us {qw.nbytes / t / 1e9 / bw:.0%}"
    lab = sorted([kv for kv in ms.items() if kv[0] not in ("F.linear", "default")], key=lambda kv: kv[1].median_s)
    fl = ms["F.linear"].median_s
    print(f"{kind} m1 {k}x{n} ({qw.nbytes / 1e6:.1f} MB): read bound {pct(rb_s)}; F.linear {fl * 1e6:.1f}us; "
          f"default {pct(ms['default'].median_s)} ({fl / ms['default'].median_s:.2f}x); best lab: "
          + ", ".join(f"{a} {pct(b.median_s)} ({fl / b.median_s:.2f}x)" for a, b in lab[:8]), flush=True)
    per = {}
    for a, b in lab:
        key = a.split("x")[0]
        per.setdefault(key, f"{a} {pct(b.median_s)}")
    print("   best per rows/prefetch: " + ", ".join(per.values()), flush=True)
