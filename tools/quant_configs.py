"""Explore the weight-only GEMM's launch configurations on the GPU, cold L2, bf16,
4096 -> 14336: int4 (group 128) and int8 at one row (the tensor-core path with 16-row
tiles, its options swap_ab and fast_cvt, and the CUDA-core gemv path), and at more rows
(the fused kernel split over K, int4 with deq_dot and x_split; from 64 rows
dequantize-then-cuBLAS). Arguments pick cases: recipe:rows, or recipe:rows:K:N for
another shape (e.g. int4wo-128:1:14336:4096). Prints per case the pure read bound of the weight bytes
(tools/read_bound.py), the default and the best few, with % of copy bandwidth (or TFLOP/s
for prefill)."""
import itertools
import sys

import torch

from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers
from kernels.quant import quantize_int4_weight, quantize_int8_weight, wo_matmul
from kernels.quant.wo_matmul import dequantize_weight
from tools.read_bound import read_bound_s

bw = get_ceilings()["copy_gbps"]
k, n = 4096, 14336


def grid(recipe, m):
    int4 = recipe != "int8wo"
    if m == 1:
        yield dict(path="mma", block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=3, waves=8, swap_ab=True,
                   fast_cvt=int4)  # the 16-row default, for reference
        if int4:
            for rows, wpt, waves, maxnreg in itertools.product([8, 16, 32], [1, 2, 4], [4, 8, 16], [None, 128]):
                yield dict(path="gemv", rows=rows, words_per_thread=wpt, num_warps=1, waves=waves, maxnreg=maxnreg)
            # 32 rows compile to 255 registers (8 warps a SM, ncu_int4-gemv-read31.txt); 208 spill
            # nothing, 192 one word: more warps a SM for the same batches, slower
            # (quant_configs_gemv-maxnreg.txt: 19.9 and 20.1 against 19.4 us at 4096 -> 14336)
            for maxnreg, waves, warps in itertools.product([192, 208], [6, 8, 12], [1, 2]):
                yield dict(path="gemv", rows=32, words_per_thread=1, num_warps=warps, waves=waves, maxnreg=maxnreg)
        else:  # (N, K): rows a program, k a step, warps; K split below ~6 programs a SM
            for bn, bk, warps, waves in itertools.product([2, 4, 8, 16, 32], [512, 1024, 2048], [1, 2, 4, 8], [6, 12]):
                if 512 * warps <= bn * bk <= 16384:
                    yield dict(path="gemv", block_n=bn, block_k=bk, num_warps=warps, num_stages=3, waves=waves)
    else:
        # many rows: dequantize-then-cuBLAS (path "dequant") from 64 rows, and the fused kernel
        # split over K (waves); int4 with deq_dot (dequantized before the dot, weights as the
        # MMA's left operand), int8 both ways round
        if m >= 64:
            for br, bn, nw in [(16, 512, 4), (16, 256, 4)]:
                yield dict(path="dequant", block_r=br, block_n=bn, num_warps=nw)
        bm = 16 if m <= 16 else 64 if m <= 64 else 128
        nw = 8 if bm == 128 else 4
        x_reads = [(False, False), (True, False), (False, True)] if int4 else [(False, False)]  # (x_split, interleave)
        for bn, waves, swap, (xs, il), bk in itertools.product([64, 128, 256], [1, 2, 4, 8],
                                                               [True] if int4 and m <= 16 else [False, True], x_reads,
                                                               [128] if int4 else [64, 128, 256]):
            if not int4 and (bn == 256 or waves == 8):  # int8's (N, K) rows: longer runs of k (block_k)
                continue
            yield dict(path="mma", block_m=bm, block_n=bn, block_k=bk, num_warps=nw, num_stages=3,
                       waves=waves, swap_ab=swap, fast_cvt=False, interleave=il, deq_dot=int4, x_split=xs)


def name(cfg):
    if cfg.get("path") == "dequant":
        return f"dequant-r{cfg['block_r']}n{cfg['block_n']}w{cfg['num_warps']}"
    if cfg.get("path") == "gemv" and "block_n" in cfg:
        return f"gemv-n{cfg['block_n']}k{cfg['block_k']}w{cfg['num_warps']}s{cfg['num_stages']}x{cfg['waves']}"
    if cfg.get("path") == "gemv":
        return (f"gemv-r{cfg['rows']}t{cfg.get('words_per_thread', 1)}w{cfg['num_warps']}x{cfg['waves']}"
                + (f"-m{cfg['maxnreg']}" if cfg.get("maxnreg") else ""))
    return (f"m{cfg['block_m']}n{cfg['block_n']}k{cfg['block_k']}w{cfg['num_warps']}s{cfg['num_stages']}x{cfg['waves']}"
            + ("-swap" if cfg["swap_ab"] else "") + ("-cvt" if cfg["fast_cvt"] else "")
            + ("-il" if cfg.get("interleave") else "") + ("-deq" if cfg.get("deq_dot") else "")
            + ("-xs" if cfg.get("x_split") else ""))


cases = [("int4wo-128", 1), ("int8wo", 1), ("int4wo-128", 16), ("int8wo", 16), ("int4wo-128", 2048), ("int8wo", 2048)]
only = sys.argv[1:]  # e.g. int4wo-128:1
shaped = [a.split(":") for a in only if a.count(":") == 3]
for recipe, m, k, n in [(c[0], int(c[1]), int(c[2]), int(c[3])) for c in shaped] or [(r, m_, k, n) for r, m_ in cases]:
    if not shaped and only and f"{recipe}:{m}" not in only:
        continue
    w = torch.randn(n, k, device="cuda") * k ** -0.5
    qw = quantize_int4_weight(w, 128, torch.bfloat16) if recipe != "int8wo" else quantize_int8_weight(w, torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    provs = {"default": lambda: wo_matmul(x, qw)}
    if m > 16:
        wd = w.to(torch.bfloat16)
        provs["F.linear"] = lambda: torch.nn.functional.linear(x, wd)
    helpers = {}  # timed alongside, not ranked: the dequantization alone, and cuBLAS on its output (int4 (K, N); int8 the (K, N) view of (N, K))
    if m > 16:
        w_kn = dequantize_weight(qw, torch.bfloat16)
        helpers = {"dequant alone": lambda: dequantize_weight(qw, torch.bfloat16),
                   "mm on it": lambda: torch.mm(x, w_kn)}
        provs |= helpers
    for cfg in grid(recipe, m):
        try:
            wo_matmul(x, qw, _config_override=cfg)
        except Exception as e:  # noqa: BLE001 - out of resources and friends
            print(f"  skip {name(cfg)}: {type(e).__name__}")
            continue
        provs[name(cfg)] = lambda cfg=cfg: wo_matmul(x, qw, _config_override=cfg)
    ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
    best = sorted([kv for kv in ms.items() if kv[0] not in helpers], key=lambda kv: kv[1].median_s)[:6]
    if m > 16:
        flops = 2 * m * k * n
        pct = lambda t: f"{t * 1e6:.1f}us {flops / t / 1e12:.0f}TF/s"
        head = f"F.linear {pct(ms['F.linear'].median_s)}"
    else:
        rb, _ = read_bound_s(qw.nbytes)
        pct = lambda t: f"{t * 1e6:.1f}us {qw.nbytes / t / 1e9 / bw:.0%}"
        head = f"read bound {pct(rb)}"
    if helpers:  # the dequantization moves the packed weight in and 2 K N bytes out
        moved = qw.nbytes + 2 * k * n
        t = ms["dequant alone"].median_s
        head += (f"; dequant alone {t * 1e6:.1f}us ({moved / t / 1e9 / bw:.0%} of copy BW for {moved / 1e6:.0f} MB)"
                 f"; mm on it {pct(ms['mm on it'].median_s)}")
    per_path = {}  # the best config of each path
    for k_, v in sorted(ms.items(), key=lambda kv: kv[1].median_s):
        kind = k_.split("-")[0] if k_.startswith(("gemv", "dequant")) else "mma" if k_.startswith("m") else None
        if kind and kind not in per_path and k_ not in helpers:
            per_path[kind] = f"{k_} {pct(v.median_s)}"
    print(f"{recipe} m{m} {k}x{n} ({qw.nbytes / 1e6:.1f} MB): {head}; default {pct(ms['default'].median_s)}; "
          "best: " + ", ".join(f"{k_} {pct(v.median_s)}" for k_, v in best)
          + "; best per path: " + ", ".join(per_path.values()), flush=True)
