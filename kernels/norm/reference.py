"""The PyTorch reference of each norm operation: the one definition of the math that the
correctness tests, the perf cases and the models use.

`compute_dtype` sets the precision of every step: float64 gives the exact answer the
kernels are judged against; the input dtype gives "the same computation done naively in
low precision", whose error sets the kernels' tolerance: a kernel's largest error against
float64 may be at most twice that computation's, plus one rounding of the output.
The result is returned in `compute_dtype` when that is float64, else in x's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                       compute_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    xc = x.to(compute_dtype)
    rstd = torch.rsqrt(xc.pow(2).mean(dim=-1, keepdim=True) + eps)
    y = xc * rstd * weight.to(compute_dtype)
    return y if compute_dtype == torch.float64 else y.to(x.dtype)


def fused_add_rms_norm_reference(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                                 eps: float = 1e-6, compute_dtype: torch.dtype = torch.float32):
    """h = x + residual, rounded to x's dtype as the unfused model stores it; (rms_norm(h), h)."""
    h = (x.to(torch.float64) + residual.to(torch.float64)).to(x.dtype)
    return rms_norm_reference(h, weight, eps, compute_dtype), h


def ngpt_update_reference(h, y, alpha, eps=1e-12, compute_dtype=torch.float32):
    """nGPT: Norm(h + alpha * (Norm(y) - h)), Norm = L2 normalization (F.normalize)."""
    hc, yc, ac = h.to(compute_dtype), y.to(compute_dtype), alpha.to(compute_dtype)
    t = hc + ac * (F.normalize(yc, dim=-1, eps=eps) - hc)
    out = F.normalize(t, dim=-1, eps=eps)
    return out if compute_dtype == torch.float64 else out.to(h.dtype)
