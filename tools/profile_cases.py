"""Launch the kernels that miss their targets once each (after a warm-up), for Nsight
Compute: `ncu --section SpeedOfLight --section Occupancy --section WarpStateStats
--section LaunchStats -k regex:'_fused_linear|_wo_gemv' python3 tools/profile_cases.py [CASE ...]`.
Cases (all by default): norm64 and norm1, RMSNorm+Linear 4096 -> 4096 at 64 rows and one
row; linear64, the same GEMM without the norm; mm64 and mm1, cuBLAS's x @ W; int4 and int8, W4A16 g128 and W8A16 at one
row, 4096 -> 14336; mixq, MixQ's activation quantization (2048 x 8192); decode32k, GQA
decode at LLaMA-3-8B heads, batch 1, KV 32768 (split kernel and merge kernel), and read134,
the pure read of the same 134 MB (tools/read_bound.py's kernel, 528 programs); read31, the
same kernel over the 31.2 MB of the int4 case's weight. LINEAR_CONFIG='{"block_n": 64, ...}'
sets the linear kernels' _config, LINEAR_SPLITS their number of splits."""
import json
import os
import sys

import torch

from kernels.linear import linear, rmsnorm_linear
from kernels.quant import quantize_int4_weight, quantize_int8_weight, wo_matmul


def twice(fn):
    fn()
    torch.cuda.synchronize()
    fn()
    torch.cuda.synchronize()


cases = sys.argv[1:] or ["norm64", "norm1", "int4", "int8"]
k, n = 4096, 4096
g = torch.ones(k, device="cuda", dtype=torch.bfloat16)
w = torch.randn(k, n, device="cuda", dtype=torch.bfloat16) * 0.01
cfg = json.loads(os.environ.get("LINEAR_CONFIG", "{}"))
splits = int(os.environ["LINEAR_SPLITS"]) if "LINEAR_SPLITS" in os.environ else None
for m in (64, 16, 1):
    if f"norm{m}" in cases:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        twice(lambda: rmsnorm_linear(x, g, w, num_splits=splits, _config=cfg))
    if f"mm{m}" in cases:  # the baselines' GEMM (cuBLAS), for its kernel's grid and tiles
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        twice(lambda: x @ w)
    if f"linear{m}" in cases:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        twice(lambda: linear(x, w, num_splits=splits, _config=cfg))
if "mixq" in cases:  # MixQ's activation quantization at the 70B q projection, 2048 rows, 64 outlier channels
    from kernels.quant.mixq import OutlierCache, mixq_quantize

    xm = torch.randn(2048, 8192, device="cuda")
    xm[:, torch.randperm(8192, device="cuda")[:64]] *= 20
    xm = xm.to(torch.bfloat16)
    cache = OutlierCache(8192, "cuda")
    twice(lambda: mixq_quantize(xm, cache.is_out, cache.ch_max, 127, cache.threshold))
if "decode32k" in cases:
    from kernels.attention import gqa_decode

    q = torch.randn(1, 1, 32, 128, device="cuda", dtype=torch.bfloat16)
    kc, vc = (torch.randn(1, 32768, 8, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    twice(lambda: gqa_decode(q, kc, vc, causal=False))
for read in ("read134", "read31"):
    if read not in cases:
        continue
    import triton

    from tools.read_bound import _read

    n = 2 * 32768 * 8 * 128 if read == "read134" else 15_597_568  # 31.2 MB: W4A16 g128's 4096 -> 14336 weight
    buf, out = torch.randn(n, device="cuda", dtype=torch.bfloat16), torch.empty(1 << 16, device="cuda")
    chunk = triton.cdiv(triton.cdiv(n, 528), 4096) * 4096
    twice(lambda n=n, buf=buf, out=out, chunk=chunk: _read[(triton.cdiv(n, chunk),)](
        buf, out, n, chunk, BLOCK=4096, num_warps=8, num_stages=3))
x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
w = torch.randn(14336, 4096, device="cuda") * 0.02
if "int4" in cases:
    qw = quantize_int4_weight(w, 128, torch.bfloat16)
    twice(lambda: wo_matmul(x, qw))
if "int8" in cases:
    qw = quantize_int8_weight(w, torch.bfloat16)
    twice(lambda: wo_matmul(x, qw))
