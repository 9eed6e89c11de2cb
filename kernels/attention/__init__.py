"""Attention kernels: GQA decode over a KV cache (split-KV, log-sum-exp), decode over a
tree of shared prefixes (Hydragen), dense causal prefill (flash-attention style), and the
fused QK-norm + RoPE + KV-cache write that precedes them in a step, and dynamic sparse
prefill (MInference's vertical-slash, A-shape and block-sparse patterns)."""
from .decode import gqa_decode
from .prefill import prefill_attention
from .reference import gqa_attention_reference, rope_kv_write_reference, rope_reference, shared_prefix_reference
from .rope import rope_kv_write, rope_tables
from .shared_prefix import PrefixTree, prefix_tree, shared_prefix_decode
from .sparse_prefill import (BlockIndex, SparseIndex, a_shape_index, block_sparse_attention, block_sparse_index,
                             estimate_vertical_slash, sparse_prefill, vertical_slash_attention, vertical_slash_index,
                             vertical_slash_pattern, vertical_slash_prefill)

__all__ = ["gqa_decode", "prefill_attention", "gqa_attention_reference", "rope_kv_write", "rope_kv_write_reference", "rope_reference",
           "rope_tables", "prefix_tree", "shared_prefix_decode", "shared_prefix_reference", "a_shape_index",
           "estimate_vertical_slash", "vertical_slash_attention", "vertical_slash_index", "vertical_slash_pattern",
           "vertical_slash_prefill", "block_sparse_index", "block_sparse_attention",
           "sparse_prefill"]
