"""Cost model of GQA decode: each KV element read once, q read and out written once."""
from kernels.cost import Cost



def gqa_decode_cost(batch, q_tokens, q_heads, kv_heads, kv_len, head_dim, elem_bytes, flops_ceiling="bf16_tflops"):
    kv_bytes = 2 * batch * kv_len * kv_heads * head_dim * elem_bytes
    q_bytes = 2 * batch * q_tokens * q_heads * head_dim * elem_bytes  # q in, out back
    flops = 4 * batch * q_heads * q_tokens * kv_len * head_dim        # q k^T and p v
    return Cost(flops=flops, bytes=kv_bytes + q_bytes, flops_ceiling=flops_ceiling)
