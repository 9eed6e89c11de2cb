"""Normalization kernels: RMSNorm and fused residual-add + RMSNorm."""
from .reference import fused_add_rms_norm_reference, rms_norm_reference
from .rmsnorm import fused_add_rms_norm, rms_norm

__all__ = ["rms_norm", "fused_add_rms_norm", "rms_norm_reference", "fused_add_rms_norm_reference"]
