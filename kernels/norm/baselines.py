"""Baselines the norm kernels are timed against, at the same shapes and dtype.

- eager: the usual PyTorch model code (Hugging Face LLaMA's RMSNorm: float32 math,
  round to the input dtype, then multiply by the weight).
- torch_rms_norm: torch.nn.functional.rms_norm, PyTorch's own fused operator.
- compile: torch.compile of the eager code (Inductor generates a fused Triton kernel),
  through kernels.providers.compiled, which every torch.compile baseline goes through.
- eager_ngpt_update: nGPT's update in plain PyTorch (its eager baseline).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def eager_rms_norm(x, weight, eps=1e-6):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def eager_fused_add_rms_norm(x, residual, weight, eps=1e-6):
    h = x + residual
    return eager_rms_norm(h, weight, eps), h


def torch_rms_norm(x, weight, eps=1e-6):
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def torch_fused_add_rms_norm(x, residual, weight, eps=1e-6):
    h = x + residual
    return F.rms_norm(h, (h.shape[-1],), weight, eps), h


def eager_ngpt_update(h, y, alpha):
    """nGPT's update as model code writes it: Norm(h + alpha (Norm(y) - h))."""
    return F.normalize(h + alpha * (F.normalize(y, dim=-1) - h), dim=-1)
