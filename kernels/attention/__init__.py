"""Attention kernels: GQA decode over a KV cache (split-KV, log-sum-exp), decode over a
tree of shared prefixes (Hydragen), dense causal prefill (flash-attention style), and the
fused QK-norm + RoPE + KV-cache write that precedes them in a step."""
from .decode import gqa_decode
from .prefill import prefill_attention
from .reference import gqa_attention_reference, rope_kv_write_reference, rope_reference, shared_prefix_reference
from .rope import rope_kv_write, rope_tables
from .shared_prefix import PrefixTree, prefix_tree, shared_prefix_decode

__all__ = ["gqa_decode", "prefill_attention", "gqa_attention_reference", "rope_kv_write", "rope_kv_write_reference", "rope_reference",
           "rope_tables", "prefix_tree", "shared_prefix_decode", "shared_prefix_reference"]
