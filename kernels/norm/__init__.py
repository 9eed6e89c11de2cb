"""Normalization kernels: RMSNorm, fused residual-add + RMSNorm, nGPT's normalized update."""
from .ngpt import ngpt_update
from .reference import fused_add_rms_norm_reference, ngpt_update_reference, rms_norm_reference
from .rmsnorm import fused_add_rms_norm, rms_norm

__all__ = ["rms_norm", "fused_add_rms_norm", "ngpt_update", "rms_norm_reference", "fused_add_rms_norm_reference",
           "ngpt_update_reference"]
