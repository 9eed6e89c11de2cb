"""The PyTorch reference of GQA attention over a KV cache: the one definition of the math.

`compute_dtype` sets the precision of every step (scores, softmax, weighted sum): float64
gives the exact answer; the input dtype gives the naive low-precision computation whose
error sets the kernels' tolerance (the flash-attention rule, DESIGN.md).
"""
from __future__ import annotations

import torch


def gqa_attention_reference(q, k_cache, v_cache, kv_lens=None, scale=None, causal=True,
                            compute_dtype=torch.float32, return_lse=False):
    """q (B, T, Hq, D); k_cache, v_cache (B, S, Hkv, D); kv_lens (B,) or None (= S).
    Causal: query t of T sits at position kv_len - T + t. Returns out (B, T, Hq, D) in
    q's dtype (float64 when compute_dtype is float64) and, if asked, lse (B, Hq, T)."""
    B, T, Hq, D = q.shape
    S, Hkv = k_cache.shape[1], k_cache.shape[2]
    group = Hq // Hkv
    scale = D ** -0.5 if scale is None else scale
    lens = torch.full((B,), S, dtype=torch.long) if kv_lens is None else kv_lens.detach().to("cpu", torch.long)
    qc = q.to(compute_dtype)
    kc = k_cache.to(compute_dtype).repeat_interleave(group, dim=2)
    vc = v_cache.to(compute_dtype).repeat_interleave(group, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", qc, kc) * scale
    pos = torch.arange(S)
    visible = pos[None, None, :] < lens[:, None, None]                       # (B, 1, S)
    if causal:
        last = lens[:, None] - T + torch.arange(T)[None, :]                  # (B, T)
        visible = visible & (pos[None, None, :] <= last[:, :, None])         # (B, T, S)
    visible = visible.expand(B, T, S)[:, None].to(scores.device)             # (B, 1, T, S)
    scores = scores.masked_fill(~visible, float("-inf"))
    any_key = visible.any(dim=-1, keepdim=True)
    p = torch.softmax(scores, dim=-1).masked_fill(~any_key, 0.0)
    out = torch.einsum("bhts,bshd->bthd", p, vc)
    if compute_dtype != torch.float64:
        out = out.to(q.dtype)
    if not return_lse:
        return out
    lse = torch.logsumexp(scores.to(torch.float64 if compute_dtype == torch.float64 else torch.float32), dim=-1)
    return out, lse
