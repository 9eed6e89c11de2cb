"""The PyTorch reference of GQA attention over a KV cache: the one definition of the math.

`compute_dtype` sets the precision of every step (scores, softmax, weighted sum): float64
gives the exact answer; the input dtype gives the naive low-precision computation whose
error sets the kernels' tolerance: a kernel's largest error against float64 may be at
most twice that computation's, plus one rounding of the output (the rule flash-attention's
own tests apply).
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


def rope_reference(x, cos, sin, pos, compute_dtype=torch.float32):
    """Rotate-half rotary embedding of x (B, T, H, D) at positions pos .. pos + T - 1, with
    cos, sin (positions, D / 2) from rope_tables. float64 returns float64; otherwise the
    rotation runs in fp32 and rounds once to x's dtype."""
    T = x.shape[1]
    cdt = torch.float64 if compute_dtype == torch.float64 else torch.float32
    c = cos[pos:pos + T].to(x.device, cdt)[None, :, None, :]
    s = sin[pos:pos + T].to(x.device, cdt)[None, :, None, :]
    x1, x2 = x.to(cdt).chunk(2, dim=-1)
    out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    return out if compute_dtype == torch.float64 else out.to(x.dtype)


def rope_kv_write_reference(q, k, v, k_cache, v_cache, pos, cos, sin, q_norm_weight=None, k_norm_weight=None,
                            eps=1e-6, compute_dtype=torch.float32):
    """What kernels/attention/rope.py computes: optional RMSNorm of q and k over the head
    dim (rounded to the input dtype, as the unfused model stores it), RoPE, and k, v
    written into the caches (in place) at pos .. pos + T - 1. Returns the new q."""
    from kernels.norm.reference import rms_norm_reference

    if q_norm_weight is not None:
        q = rms_norm_reference(q, q_norm_weight, eps, compute_dtype)
        k = rms_norm_reference(k, k_norm_weight, eps, compute_dtype)
    q, k = rope_reference(q, cos, sin, pos, compute_dtype), rope_reference(k, cos, sin, pos, compute_dtype)
    T = q.shape[1]
    k_cache[:, pos:pos + T] = k.to(k_cache.dtype)
    v_cache[:, pos:pos + T] = v.to(v_cache.dtype)
    return q
