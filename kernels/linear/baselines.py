"""Baselines of the fused linear layers, same shapes and dtype, weights (K, N).

- eager: the unfused PyTorch code (Hugging Face RMSNorm, then x @ W; SiLU(x W1) * (x W3);
  x W + s (x A) B).
- torch_rms_norm: F.rms_norm then x @ W.
- addmm: x W + residual as one cuBLAS call (torch.addmm), the residual added in its epilogue.
- fused_weight: gated MLP as one GEMM on [W1 | W3] (K, 2N), then SiLU-and-multiply (the
  layout vLLM and others use).
- compile: torch.compile of the eager code.
"""
import torch
import torch.nn.functional as F

from kernels.norm.baselines import eager_rms_norm, torch_rms_norm


def eager_rmsnorm_linear(x, g, w, eps=1e-6):
    return eager_rms_norm(x, g, eps) @ w


def torch_rmsnorm_linear(x, g, w, eps=1e-6):
    return torch_rms_norm(x, g, eps) @ w


def eager_gated_mlp(x, w1, w3):
    return F.silu(x @ w1) * (x @ w3)


def eager_linear(x, w, residual):
    return residual + x @ w


def addmm_linear(x, w, residual):
    return torch.addmm(residual, x, w)


def eager_lora_linear(x, w, a, b, scale):
    return x @ w + scale * ((x @ a) @ b)


def fused_weight_gated_mlp(x, w13):
    a, b = (x @ w13).chunk(2, dim=-1)
    return F.silu(a) * b


__all__ = ["eager_linear", "addmm_linear", "eager_rmsnorm_linear", "torch_rmsnorm_linear", "eager_gated_mlp", "eager_lora_linear",
           "fused_weight_gated_mlp"]
