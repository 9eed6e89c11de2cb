"""Attention kernels: GQA decode over a KV cache (split-KV, log-sum-exp)."""
from .decode import gqa_decode
from .reference import gqa_attention_reference

__all__ = ["gqa_decode", "gqa_attention_reference"]
