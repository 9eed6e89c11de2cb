"""The step of a layer between the QKV projection and attention, in one launch (a decode
step's few tokens or a prompt's thousands):
optional RMSNorm over the head dim of q and k (QK-norm: Chameleon, nGPT), rotary
embedding (rotate-half) of q and k, and the write of the new k and v into the KV cache.

    q_out[b, t, h]               = RoPE(Norm_q(q[b, t, h]), pos + t)
    k_cache[b, pos + t, h]       = RoPE(Norm_k(k[b, t, h]), pos + t)
    v_cache[b, pos + t, h]       = v[b, t, h]

Unfused, PyTorch spends a dozen small kernels on this (angles, cos, sin, halves, concat,
two cache copies); in a decode step each is a launch on the critical path. A program
takes one head of BLOCK_T (batch, token) rows (a launch space: one row for decode, up to
32 for a prompt).
Rounding follows the unfused model: the normalized head is rounded to the input dtype,
then rotated in fp32 and rounded again. cos and sin come from `rope_tables` (fp32, built
in float64), indexed by position, so the kernel and the reference use the same angles.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.checks import (check_int, check_no_overlap, check_number, check_pow2_option, check_qk_norm_weights,
                            check_same_device, check_tensor)
from kernels.launch import cdiv, pdl_launch_dependents, pdl_options, pdl_wait
from kernels.tuning import LaunchSpace, pow2_bucket

HEAD_DIMS = (64, 128)
DTYPES = (torch.float16, torch.bfloat16)


def rope_tables(n_positions: int, head_dim: int, theta: float, device="cpu", dtype=torch.float32):
    """cos, sin of shape (n_positions, head_dim // 2): angle p * theta^(-2i / head_dim),
    computed in float64 (fp32 angles lose ~1e-2 rad at position 1e5)."""
    check_int("n_positions", n_positions, minimum=0)
    check_int("head_dim", head_dim, minimum=2)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary embedding, got {head_dim}")
    if check_number("theta", theta) <= 0:
        raise ValueError(f"theta must be > 0, got {theta}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    inv = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.arange(n_positions, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().to(dtype).to(device), ang.sin().to(dtype).to(device)


@triton.jit
def _rope_kv_write_kernel(
    Q, K, V, QO, KC, VC, COS, SIN, QW, KW,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh, stride_cb, stride_cs, stride_ch, stride_wb, stride_ws, stride_wh,
    rows, q_tokens, n_q_heads, pos, eps,
    QK_NORM: tl.constexpr, HALF: tl.constexpr, BLOCK_T: tl.constexpr, PDL: tl.constexpr,
):
    """One head (q heads first, then kv heads) of BLOCK_T of the B * T (batch, token) rows."""
    pdl_launch_dependents(PDL)
    pdl_wait(PDL)
    bt = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    h = tl.program_id(1)
    ok = (bt < rows)[:, None]
    b = (bt // q_tokens).to(tl.int64)
    t = (bt % q_tokens).to(tl.int64)
    p = pos + t
    d = tl.arange(0, HALF)[None, :]
    cos = tl.load(COS + p[:, None] * HALF + d, mask=ok)
    sin = tl.load(SIN + p[:, None] * HALF + d, mask=ok)
    if h < n_q_heads:
        src = Q + (b * stride_qb + t * stride_qt + h * stride_qh)[:, None]
        dst = QO + (b * stride_ob + t * stride_ot + h * stride_oh)[:, None]
        W = QW
    else:
        hk = h - n_q_heads
        src = K + (b * stride_kb + t * stride_kt + hk * stride_kh)[:, None]
        dst = KC + (b * stride_cb + p * stride_cs + hk * stride_ch)[:, None]
        W = KW
        e = tl.arange(0, 2 * HALF)[None, :]
        v = tl.load(V + (b * stride_vb + t * stride_vt + hk * stride_vh)[:, None] + e, mask=ok)
        tl.store(VC + (b * stride_wb + p * stride_ws + hk * stride_wh)[:, None] + e, v, mask=ok)
    x1 = tl.load(src + d, mask=ok)
    x2 = tl.load(src + HALF + d, mask=ok)
    if QK_NORM:
        f1, f2 = x1.to(tl.float32), x2.to(tl.float32)
        rstd = 1.0 / tl.sqrt((tl.sum(f1 * f1, axis=1) + tl.sum(f2 * f2, axis=1)) / (2 * HALF) + eps)
        x1 = (f1 * rstd[:, None] * tl.load(W + d).to(tl.float32)).to(x1.dtype)
        x2 = (f2 * rstd[:, None] * tl.load(W + HALF + d).to(tl.float32)).to(x2.dtype)
    x1, x2 = x1.to(tl.float32), x2.to(tl.float32)
    tl.store(dst + d, (x1 * cos - x2 * sin).to(dst.dtype.element_ty), mask=ok)
    tl.store(dst + HALF + d, (x2 * cos + x1 * sin).to(dst.dtype.element_ty), mask=ok)


def _default_config(rows: int, head_dim: int) -> dict:
    """A decode step's few rows: one row a program (one warp), every head its own program;
    a prompt's thousands: up to 32 rows a program, since a program per row and head (163840
    at 4096 tokens of LLaMA-3-8B) is bound by starting programs, not by the bytes it moves.
    `rows` is batch x tokens rounded up to a power of two."""
    block_t = max(1, min(32, rows // 128))
    return dict(BLOCK_T=block_t, num_warps=max(1, min(4, block_t * head_dim // 256)))


def _candidates(rows: int, head_dim: int) -> list[dict]:
    return [dict(BLOCK_T=r, num_warps=w) for r in (1, 2, 4, 8, 16, 32, 64) for w in (1, 2, 4, 8)
            if r <= rows and r * head_dim >= 32 * w]


def _check_config(cfg: dict) -> None:
    check_pow2_option(cfg, "BLOCK_T", 1, 128)
    check_pow2_option(cfg, "num_warps", 1, 32)


LAUNCH = LaunchSpace("rope_kv_write", _default_config, _candidates, _check_config)


def rope_kv_write(q, k, v, k_cache, v_cache, pos: int, cos, sin, q_norm_weight=None, k_norm_weight=None,
                  eps: float = 1e-6, *, config: dict | None = None):
    """q (B, T, Hq, D), k and v (B, T, Hkv, D), any strides with unit stride along D (views
    of a fused QKV output work); k_cache, v_cache (B, capacity, Hkv, D); cos, sin from
    `rope_tables` covering positions pos .. pos + T - 1. Writes k, v into the caches at
    those positions and returns the rotated (and normalized) q, contiguous. config: launch
    options over the tuned or default ones (BLOCK_T rows a program, num_warps)."""
    for name, t in (("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        check_tensor(name, t, dtypes=DTYPES, ndim_min=4)
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (batch, tokens or capacity, heads, head_dim), got shape {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype}, q has {q.dtype}: they must match")
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must have unit stride along head_dim (strides {t.stride()})")
    check_same_device(q=q, k=k, v=v, k_cache=k_cache, v_cache=v_cache, cos=cos, sin=sin)
    if isinstance(pos, torch.Tensor):
        # Its value is needed here, to check the positions against the cache: a device sync
        # (and no CUDA-graph capture), so the caller makes it explicit.
        raise TypeError("pos must be an int, got a Tensor: pass int(pos)")
    check_int("pos", pos)
    check_number("eps", eps, minimum=0.0)
    B, T, Hq, D = q.shape
    if D not in HEAD_DIMS:
        raise ValueError(f"head_dim {D} is not supported (supported: {HEAD_DIMS})")
    if k.shape != v.shape or k.shape[:2] != (B, T) or k.shape[3] != D:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must be (batch={B}, tokens={T}, kv_heads, {D})")
    Hkv = k.shape[2]
    if k_cache.shape != v_cache.shape or k_cache.shape[0] != B or k_cache.shape[2:] != (Hkv, D):
        raise ValueError(f"caches {tuple(k_cache.shape)}, {tuple(v_cache.shape)} must be (batch={B}, capacity, {Hkv}, {D})")
    if pos < 0 or pos + T > k_cache.shape[1]:
        raise ValueError(f"positions {pos} .. {pos + T - 1} do not fit the cache capacity {k_cache.shape[1]}")
    for name, t in (("cos", cos), ("sin", sin)):
        if t.dtype != torch.float32:
            raise TypeError(f"{name} has dtype {str(t.dtype).replace('torch.', '')}; it must be float32 (rope_tables)")
        if t.dim() != 2 or t.shape[1] != D // 2 or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous float32 table (positions, {D // 2}) from rope_tables")
        if t.shape[0] < pos + T:
            raise ValueError(f"{name} covers {t.shape[0]} positions; positions up to {pos + T - 1} are needed")
    qk_norm = check_qk_norm_weights(q, q_norm_weight, k_norm_weight, DTYPES, contiguous=True)
    # The caches are written in place: they may share no memory with each other or an input.
    inputs = {"q": q, "k": k, "v": v, "cos": cos, "sin": sin, "q_norm_weight": q_norm_weight,
              "k_norm_weight": k_norm_weight}
    check_no_overlap("k_cache", k_cache, {**inputs, "v_cache": v_cache})
    check_no_overlap("v_cache", v_cache, inputs)
    q_out = torch.empty(B, T, Hq, D, dtype=q.dtype, device=q.device)
    if B == 0 or T == 0:
        return q_out
    qw = q_norm_weight if qk_norm else cos
    kw = k_norm_weight if qk_norm else cos
    cfg = LAUNCH.choose(q.device, dict(rows=pow2_bucket(B * T), head_dim=D), config)
    _rope_kv_write_kernel[(cdiv(B * T, cfg["BLOCK_T"]), Hq + Hkv)](
        q, k, v, q_out, k_cache, v_cache, cos, sin, qw, kw,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        *q_out.stride()[:3], *k_cache.stride()[:3], *v_cache.stride()[:3],
        B * T, T, Hq, int(pos), float(eps),
        QK_NORM=qk_norm, HALF=D // 2, BLOCK_T=cfg["BLOCK_T"], num_warps=cfg["num_warps"], **pdl_options(q.device),
    )
    return q_out
