"""Launch the kernels that miss their targets once each (after a warm-up), for Nsight
Compute: `ncu --section SpeedOfLight --section Occupancy --section WarpStateStats
--section LaunchStats -k regex:'_fused_linear|_wo_gemv' python3 tools/profile_cases.py`.
RMSNorm+Linear at 64 rows and at one row (4096 -> 4096), W4A16 g128 at one row (4096 -> 14336)."""
import torch

from kernels.linear import rmsnorm_linear
from kernels.quant import quantize_int4_weight, wo_matmul

k, n = 4096, 4096
g = torch.ones(k, device="cuda", dtype=torch.bfloat16)
w = torch.randn(k, n, device="cuda", dtype=torch.bfloat16) * 0.01
for m in (64, 1):
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    rmsnorm_linear(x, g, w)
    torch.cuda.synchronize()
    rmsnorm_linear(x, g, w)
qw = quantize_int4_weight(torch.randn(14336, 4096, device="cuda") * 0.02, 128, torch.bfloat16)
x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
wo_matmul(x, qw)
torch.cuda.synchronize()
wo_matmul(x, qw)
torch.cuda.synchronize()
