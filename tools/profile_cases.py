"""Launch the kernels that miss their targets once each (after a warm-up), for Nsight
Compute: `ncu --section SpeedOfLight --section Occupancy --section WarpStateStats
--section LaunchStats -k regex:'_fused_linear|_wo_gemv' python3 tools/profile_cases.py [CASE ...]`.
Cases (all by default): norm64 and norm1, RMSNorm+Linear 4096 -> 4096 at 64 rows and one
row; int4 and int8, W4A16 g128 and W8A16 at one row, 4096 -> 14336."""
import sys

import torch

from kernels.linear import rmsnorm_linear
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
for m in (64, 1):
    if f"norm{m}" in cases:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        twice(lambda: rmsnorm_linear(x, g, w))
x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
w = torch.randn(14336, 4096, device="cuda") * 0.02
if "int4" in cases:
    qw = quantize_int4_weight(w, 128, torch.bfloat16)
    twice(lambda: wo_matmul(x, qw))
if "int8" in cases:
    qw = quantize_int8_weight(w, torch.bfloat16)
    twice(lambda: wo_matmul(x, qw))
