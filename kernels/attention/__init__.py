"""Attention kernels: GQA decode over a KV cache (split-KV, log-sum-exp), and the fused
QK-norm + RoPE + KV-cache write that precedes it in a decode step."""
from .decode import gqa_decode
from .reference import gqa_attention_reference, rope_kv_write_reference, rope_reference
from .rope import rope_kv_write, rope_tables

__all__ = ["gqa_decode", "gqa_attention_reference", "rope_kv_write", "rope_kv_write_reference", "rope_reference",
           "rope_tables"]
