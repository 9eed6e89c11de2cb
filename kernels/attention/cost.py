"""Cost models of attention: each K and V element read once, q read and out written once;
the products q k^T and p v over the (query, key) pairs the mask leaves."""
from kernels.cost import Cost


def gqa_decode_cost(batch, q_tokens, q_heads, kv_heads, kv_len, head_dim, elem_bytes, flops_ceiling="bf16_tflops"):
    kv_bytes = 2 * batch * kv_len * kv_heads * head_dim * elem_bytes
    q_bytes = 2 * batch * q_tokens * q_heads * head_dim * elem_bytes  # q in, out back
    flops = 4 * batch * q_heads * q_tokens * kv_len * head_dim        # q k^T and p v
    return Cost(flops=flops, bytes=kv_bytes + q_bytes, flops_ceiling=flops_ceiling)


def prefill_attention_cost(batch, q_tokens, q_heads, kv_heads, kv_len, head_dim, elem_bytes, causal=True,
                           flops_ceiling="bf16_tflops"):
    """Queries at the last q_tokens positions of kv_len keys; causal: query t sees
    kv_len - q_tokens + t + 1 keys (none before position 0)."""
    T, S = q_tokens, kv_len
    if causal:  # query t sees S - T + t + 1 keys, none while that is <= 0
        pairs = T * (S - T + 1) + T * (T - 1) / 2 if S >= T else S * (S + 1) / 2
    else:
        pairs = T * S
    flops = 4 * batch * q_heads * head_dim * pairs
    kv_bytes = 2 * batch * S * kv_heads * head_dim * elem_bytes
    q_bytes = 2 * batch * T * q_heads * head_dim * elem_bytes
    return Cost(flops=flops, bytes=kv_bytes + q_bytes, flops_ceiling=flops_ceiling)


def shared_prefix_cost(tree, q_tokens, q_heads, kv_heads, suffix_len, head_dim, elem_bytes,
                       flops_ceiling="bf16_tflops"):
    """Every shared node's keys and values read once (the point of sharing), each suffix
    once; the flops of each query over its path and its suffix."""
    B = tree.n_seqs
    node_tokens = sum(n_len for n_len, count in zip(tree.kv_len, tree.seq_count) if count)
    kv_bytes = 2 * (node_tokens + B * suffix_len) * kv_heads * head_dim * elem_bytes
    q_bytes = 2 * B * q_tokens * q_heads * head_dim * elem_bytes
    keys_seen = sum(sum(tree.kv_len[n] for n in path) for path in tree.paths) + B * suffix_len
    flops = 4 * q_tokens * q_heads * head_dim * keys_seen
    return Cost(flops=flops, bytes=kv_bytes + q_bytes, flops_ceiling=flops_ceiling)


def sparse_prefill_cost(selected_pairs, tokens, q_heads, kv_heads, head_dim, elem_bytes, flops_ceiling="bf16_tflops"):
    """A sparse prefill from scratch: the products over the selected (query, key) pairs of
    every head (selected_pairs summed), k and v read once, q read and out written once."""
    flops = 4 * head_dim * selected_pairs
    kv_bytes = 2 * tokens * kv_heads * head_dim * elem_bytes
    q_bytes = 2 * tokens * q_heads * head_dim * elem_bytes
    return Cost(flops=flops, bytes=kv_bytes + q_bytes, flops_ceiling=flops_ceiling)


def rope_kv_write_cost(rows, q_heads, kv_heads, head_dim, elem_bytes):
    """q, k and v read once; the rotated q and the cache's new k and v written once; a
    cos and a sin (fp32) per row and half head dim. A few operations an element."""
    elements = rows * (q_heads + 2 * kv_heads) * head_dim
    return Cost(flops=6 * rows * (q_heads + kv_heads) * head_dim, flops_ceiling=None,
                bytes=2 * elements * elem_bytes + 2 * rows * (head_dim // 2) * 4)
