"""PyTorch references of the fused linear layers: the one definition of their math.
`compute_dtype` as in kernels/norm/reference.py (float64: exact; the input dtype: the naive
low-precision computation whose error sets the tolerance)."""
import torch
import torch.nn.functional as F

from kernels.norm.reference import rms_norm_reference


def _out(y, x, compute_dtype):
    return y if compute_dtype == torch.float64 else y.to(x.dtype)


def linear_reference(x, w, residual=None, compute_dtype=torch.float32):
    """x W (+ residual, added before the one rounding)."""
    y = x.to(compute_dtype) @ w.to(compute_dtype)
    return _out(y if residual is None else y + residual.to(compute_dtype), x, compute_dtype)


def rmsnorm_linear_reference(x, norm_weight, w, eps=1e-6, compute_dtype=torch.float32):
    h = rms_norm_reference(x, norm_weight, eps, compute_dtype).to(compute_dtype)
    return _out(h @ w.to(compute_dtype), x, compute_dtype)


def gated_mlp_reference(x, w1, w3, compute_dtype=torch.float32):
    """SiLU(x W1) * (x W3)."""
    xc = x.to(compute_dtype)
    return _out(F.silu(xc @ w1.to(compute_dtype)) * (xc @ w3.to(compute_dtype)), x, compute_dtype)


def lora_linear_reference(x, w, a, b, scale=1.0, compute_dtype=torch.float32):
    """x W + scale (x A) B, with x A rounded to compute_dtype as an unfused layer stores it."""
    xc = x.to(compute_dtype)
    xa = (xc @ a.to(compute_dtype)).to(compute_dtype)
    return _out(xc @ w.to(compute_dtype) + scale * (xa @ b.to(compute_dtype)), x, compute_dtype)
