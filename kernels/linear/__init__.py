"""Fused linear layers (Mirage's decoder kernels): RMSNorm + Linear, gated MLP."""
from .fused import gated_mlp, rmsnorm_linear
from .reference import gated_mlp_reference, rmsnorm_linear_reference

__all__ = ["rmsnorm_linear", "gated_mlp", "rmsnorm_linear_reference", "gated_mlp_reference"]
