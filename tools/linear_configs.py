"""Explore the fused linear kernels' launch configurations on the GPU, cold L2: N block,
K block, stages, waves of split-K programs, and where the split-K partials are summed
(in the kernel by the last program of a tile, or by a second merge kernel). For each
shape: the default, the best few, and the time of a pure read of the same weight bytes
(tools/read_bound.py), the bound a kernel of that size can reach.
Usage: python tools/linear_configs.py [--tma | --splits] [--all] [op:rows:K:N ...]   (op: norm, linear, mlp)
--splits names a config nBN kBK sSTAGES / SPLITS k|m (fix-up in the kernel or merge kernel)."""
import itertools
import sys

import torch

from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers
from kernels.launch import sm_count
from kernels.linear import gated_mlp, linear, rmsnorm_linear
from tools.read_bound import read_bound_s

bw = get_ceilings()["copy_gbps"]
sms = sm_count(torch.device("cuda"))
SHAPES = [("norm", 1, 4096, 4096), ("norm", 64, 4096, 4096), ("norm", 16, 4096, 6144), ("mlp", 16, 4096, 4096)]
TMA_ONLY = "--tma" in sys.argv  # sweep TMA configs only (the pointer grid is in earlier files)
SPLITS = "--splits" in sys.argv  # TMA configs at explicit split counts, either fix-up
ALL = "--all" in sys.argv  # print every config's time (us), not only the best ten
args = [a for a in sys.argv[1:] if not a.startswith("--")]
if args:  # e.g. norm:64:4096:4096
    SHAPES = [(a, int(b), int(c), int(d)) for a, b, c, d in (arg.split(":") for arg in args)]
for op, m, k, n in SHAPES:
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    g = torch.ones(k, device="cuda", dtype=torch.bfloat16)
    w1 = torch.randn(k, n, device="cuda", dtype=torch.bfloat16) * 0.01
    w3 = torch.randn(k, n, device="cuda", dtype=torch.bfloat16) * 0.01
    call = {"norm": lambda c, s=None: rmsnorm_linear(x, g, w1, num_splits=s, _config=c),
            "linear": lambda c, s=None: linear(x, w1, num_splits=s, _config=c),
            "mlp": lambda c, s=None: gated_mlp(x, w1, w3, num_splits=s, _config=c)}[op]
    provs = {"default": lambda: call({}), "default-merge": lambda: call({"fixup": "merge"}),
             "default-ptr": lambda: call({"tma": False}), "default-tma": lambda: call({"tma": True})}
    if SPLITS:
        grid = []
        for bn, bk, ns, fixup in itertools.product((32, 64, 128), (64, 128), (3, 4), ("kernel", "merge")):
            for splits in (1, 2, 3, 4, 6, 8):
                if (splits == 1 and fixup == "kernel") or -(-n // bn) * splits > 4 * sms:
                    continue  # one split has nothing to merge; more than 4 programs an SM
                cfg = dict(block_n=bn, block_k=bk, num_warps=4, num_stages=ns, tma=True, fixup=fixup)
                try:
                    call(cfg, splits)
                except Exception as e:  # noqa: BLE001 - out of shared memory
                    print(f"  skip n{bn}k{bk}s{ns}: {type(e).__name__}")
                    break
                provs[f"n{bn}k{bk}s{ns}/{splits}{fixup[0]}"] = lambda cfg=cfg, splits=splits: call(cfg, splits)
    elif TMA_ONLY:  # the weights (and x) read through TMA descriptors, deeper pipelines
        if op == "mlp":
            grid = [(bn, bk, 4, ns, waves, True) for bn, bk in ((32, 128), (64, 64), (64, 128))
                    for ns in (3, 5) for waves in (1, 2)]
        else:
            tiles = ((128, 64), (64, 128), (128, 128), (256, 64)) if m > 16 else ((128, 128), (64, 128), (128, 64), (256, 64))
            grid = [(bn, bk, 4, ns, waves, True) for bn, bk in tiles for ns in (3, 5) for waves in (1, 2, 4)]
    elif op != "mlp":
        # many rows: small K blocks so that several programs fit on an SM (Nsight Compute:
        # 64 rows with 128-deep blocks held one 4-warp program per SM, 6% occupancy)
        grid = [c + (False,) for c in itertools.product(
            [64, 128], [32, 64, 128] if m > 16 else [64, 128, 256], [4, 8],
            [2, 3, 4] if m > 16 else [3], [1, 2, 4] if m > 16 else [2, 4, 8])]
    else:
        grid = [c + (False,) for c in itertools.product([32, 64], [128], [4], [3, 4], [1, 2, 4])]
    for bn, bk, nw, ns, waves, tma in grid:
        cfg = dict(block_n=bn, block_k=bk, num_warps=nw, num_stages=ns, waves=waves, tma=tma)
        name = f"n{bn}k{bk}w{nw}s{ns}x{waves}" + ("-tma" if tma else "")
        try:  # a config that does not fit in shared memory is skipped
            call(cfg)
        except Exception as e:  # noqa: BLE001 - triton's OutOfResources and friends
            print(f"  skip {name}: {type(e).__name__}")
            continue
        provs[name] = lambda cfg=cfg: call(cfg)
        if m > 16 and not tma:  # many partial rows: the merge kernel may win
            provs[f"{name}-merge"] = lambda cfg=cfg: call(cfg | {"fixup": "merge"})
    if op in ("norm", "linear"):  # the baseline's GEMM alone (cuBLAS), for scale
        wt = w1.T.contiguous()
        provs["cublas-gemm-only"] = lambda: torch.nn.functional.linear(x, wt)
    ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
    nbytes = k * n * (2 if op == "mlp" else 1) * 2
    rb, _ = read_bound_s(nbytes)
    best = sorted(ms.items(), key=lambda kv: kv[1].median_s)[:10]
    pct = lambda t: f"{t * 1e6:.1f}us {nbytes / t / 1e9 / bw:.0%}"
    cub = f", cuBLAS GEMM alone {pct(ms['cublas-gemm-only'].median_s)}" if op in ("norm", "linear") else ""
    print(f"{op} m{m} {k}x{n}: read bound {pct(rb)}; default {pct(ms['default'].median_s)}, "
          f"merge kernel {pct(ms['default-merge'].median_s)}{cub}; best: " +
          ", ".join(f"{k_} {pct(v.median_s)}" for k_, v in best), flush=True)
    if ALL:  # every config, fastest first, indented under its shape's line
        print("   ", ", ".join(f"{k_} {v.median_s * 1e6:.1f}" for k_, v in sorted(ms.items(), key=lambda kv: kv[1].median_s)))
