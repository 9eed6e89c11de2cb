"""Fused linear layers (Mirage's decoder kernels): RMSNorm + Linear, gated MLP, LoRA."""
from .fused import gated_mlp, linear, lora_linear, rmsnorm_linear
from .reference import gated_mlp_reference, linear_reference, lora_linear_reference, rmsnorm_linear_reference

__all__ = ["linear", "rmsnorm_linear", "gated_mlp", "lora_linear", "linear_reference", "rmsnorm_linear_reference", "gated_mlp_reference",
           "lora_linear_reference"]
