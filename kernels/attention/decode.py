"""GQA attention for a few query tokens over a KV cache (decode), split over the KV length.

    out = softmax(scale * q k^T + mask) v      per (sequence, query head)

Layouts follow flash-attn: q (batch, q_tokens, q_heads, head_dim); k_cache and v_cache
(batch, kv_capacity, kv_heads, head_dim), unit stride along head_dim. Query head h reads
KV head h // (q_heads // kv_heads). `kv_lens` (batch,) gives each sequence's valid KV
length (an int: the same for all; default: the whole capacity). With `causal`, the q_tokens queries are the last
positions of their sequence: query t sees keys 0 .. kv_len - q_tokens + t (bottom-right
aligned, as flash-attn's KV-cache decode); a query that sees no key returns zeros and a
log-sum-exp of -inf.

One program takes one (sequence, KV head), the query rows of its whole group (q heads
of the group x query tokens, so K and V are read once for all of them), and one chunk of
the KV length. With few sequences the KV length is split into chunks so that the GPU is
full (flash-decoding); the last chunk of a tile to finish merges all chunks by their
log-sum-exp, counted in with an atomic, when there are few chunks; with many, a second
kernel merges them in parallel (measured faster: see MAX_FIXUP_SPLITS).
With `q_norm_weight` and `k_norm_weight`, q and every key are RMS-normalized over the head
dim inside the kernel first (QK-norm, Chameleon). `return_lse=True` also returns the log-sum-exp (natural log, float32, (batch, q_heads,
q_tokens)), the quantity that merges partial attentions (shared-prefix attention).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.checks import (check_bool, check_int, check_int_option, check_no_overlap, check_number,
                            check_positive_option, check_pow2_option, check_qk_norm_weights, check_same_device,
                            check_same_dtype, check_tensor)
from kernels.interpreter import exact_operand
from kernels.launch import (cdiv, last_to_arrive, next_power_of_2, pdl_launch_dependents, pdl_options, pdl_wait,
                            split_plan, tile_counters)
from kernels.tuning import LaunchSpace, pow2_bucket

HEAD_DIMS = (64, 128)
DTYPES = (torch.float16, torch.bfloat16)
LN2 = math.log(2.0)
MAX_FIXUP_SPLITS = 4  # merge in the kernel up to this many chunks, else in a second kernel
MERGE_BLOCK_S = 64  # chunks merged at once (64 x 128 fp32 partials: 64 registers a thread at 4 warps)


def _default_config(head_dim: int, rows: int, programs: int, kv: int) -> dict:
    """Head dim 128 (LLaMA-3-8B decode): 32-key blocks, 2 stages, about 4 waves of programs;
    tiles that already fill the GPU are not split (the nearest split count) and stream
    their whole sequence through 3 stages. Head dim 64 (GQA with 32 query tokens): 128-key
    blocks, 3 stages, about 2 waves. The chunks of a split row are merged by the last
    program of the tile up to MAX_FIXUP_SPLITS of them ("auto"), else by a second kernel,
    whose launch costs less than a long serial merge."""
    if head_dim == 128:
        return dict(block_n=32, num_warps=4, num_stages=2, waves=4, nearest=True, fixup="auto", unsplit_stages=3)
    return dict(block_n=128, num_warps=4, num_stages=3, waves=2, nearest=True, fixup="auto", unsplit_stages=None)


def _candidates(head_dim: int, rows: int, programs: int, kv: int) -> list[dict]:
    """Key block x pipeline depth x waves of split programs (4 warps: one tile of query rows);
    for short caches (a shared-prefix call's suffixes) also 16-key blocks and 2 warps; for
    long ones (a copy-bound read of the cache) also 8 warps, more loads in flight a program."""
    out = [dict(block_n=bn, num_stages=st, waves=wv) for bn in (32, 64, 128) for st in (2, 3, 4) for wv in (1, 2, 4, 8)]
    if kv <= 128:
        out += [dict(block_n=bn, num_warps=w, num_stages=st, waves=wv) for bn, w in ((16, 4), (16, 2), (32, 2))
                for st in (2, 3) for wv in (1, 4)]
    if kv >= 8192:
        out += [dict(block_n=bn, num_warps=8, num_stages=st, waves=wv) for bn in (64, 128) for st in (2, 3)
                for wv in (2, 4, 8)]
    return out


def _check_config(cfg: dict) -> None:
    if cfg["fixup"] not in ("auto", "kernel", "merge"):
        raise ValueError(f"fixup must be 'auto', 'kernel' or 'merge', got {cfg['fixup']!r}")
    if cfg["block_n"] not in (16, 32, 64, 128, 256):
        raise ValueError(f"block_n must be a power of two from 16 to 256, got {cfg['block_n']!r}")
    check_positive_option(cfg, "waves")
    check_pow2_option(cfg, "num_warps", 1, 32)
    check_int_option(cfg, "num_stages", 1, 8)
    check_bool("nearest", cfg["nearest"])
    if cfg["unsplit_stages"] is not None:
        check_int_option(cfg, "unsplit_stages", 1, 8)


LAUNCH = LaunchSpace("gqa_decode", _default_config, _candidates, _check_config)


@triton.jit
def _decode_kernel(
    Q, K, V, KV_LENS, O, LSE, O_PART, LSE_PART, QW, KW, COUNT, qk_eps, uniform_len,
    X_O, X_LSE, X_SEQ_PARTS, X_PART_ROW0, X_PART_NODE, X_NODE_META, x_max_parts,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_ob, stride_ot, stride_oh,
    stride_lb, stride_lh,
    kv_capacity, q_tokens, group, n_kv_heads, n_rows, chunk, n_splits, scale_log2,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    WRITE_PARTIAL: tl.constexpr, QK_NORM: tl.constexpr, FIXUP: tl.constexpr, UNIFORM_LEN: tl.constexpr,
    PDL: tl.constexpr, MERGE_EXTRA: tl.constexpr = False, EARLY: tl.constexpr = False,
):
    pid_bh = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_s = tl.program_id(2)
    b = pid_bh // n_kv_heads
    hkv = pid_bh % n_kv_heads
    if not EARLY:
        pdl_wait(PDL)
    if UNIFORM_LEN:  # one length for every sequence, passed by value (checked on the host)
        kv_len = uniform_len
    else:
        kv_len = tl.minimum(tl.maximum(tl.load(KV_LENS + b), 0), kv_capacity)  # memory safety

    # Row r of the block is query token r // group of query head hkv * group + r % group.
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    tok = rows // group
    head = hkv * group + rows % group
    d = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + b.to(tl.int64) * stride_qb + tok[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    if QK_NORM:  # Chameleon: RMSNorm over the head dim of q and k, rounded as stored
        qw = tl.load(QW + d).to(tl.float32)
        kw = tl.load(KW + d).to(tl.float32)
        qf = q.to(tl.float32)
        q_rstd = 1.0 / tl.sqrt(tl.sum(qf * qf, axis=1) / HEAD_DIM + qk_eps)
        q = (qf * q_rstd[:, None] * qw[None, :]).to(Q.dtype.element_ty)
    # Last key each row may see (causal: bottom-right aligned).
    if CAUSAL:
        last = kv_len - q_tokens + tok
    else:
        last = tl.zeros([BLOCK_M], dtype=tl.int32) + kv_len - 1

    start = pid_s * chunk
    # The last chunk runs to the sequence's end: lengths beyond max_kv_len (which only sized
    # the split) are still read in full.
    end = tl.where(pid_s == n_splits - 1, kv_len, tl.minimum(start + chunk, kv_len))
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base = K + b.to(tl.int64) * stride_kb + hkv * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + hkv * stride_vh
    offs_n = tl.arange(0, BLOCK_N)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + offs_n
        n_ok = n < end
        k = tl.load(k_base + n[:, None].to(tl.int64) * stride_ks + d[None, :], mask=n_ok[:, None], other=0.0)
        if QK_NORM:
            kf = k.to(tl.float32)
            k_rstd = 1.0 / tl.sqrt(tl.sum(kf * kf, axis=1) / HEAD_DIM + qk_eps)
            k = (kf * k_rstd[:, None] * kw[None, :]).to(K.dtype.element_ty)
        s = tl.dot(exact_operand(q), exact_operand(tl.trans(k))) * scale_log2  # bf16 on the CPU lane: kernels/interpreter.py
        ok = n_ok[None, :] & (n[None, :] <= last[:, None])
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw no key yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + n[:, None].to(tl.int64) * stride_vs + d[None, :], mask=n_ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(exact_operand(p.to(v.dtype)), exact_operand(v))
        m_i = m_new
    pdl_launch_dependents(PDL)  # after the loop, as in kernels/linear/fused.py

    out, lse2 = _finish_rows(acc, m_i, l_i)
    if WRITE_PARTIAL:
        # O_PART (batch * kv_heads, n_splits, n_rows, HEAD_DIM), LSE_PART (..., n_rows): fp32
        part = (pid_bh * n_splits + pid_s).to(tl.int64) * n_rows
        tl.store(O_PART + (part + rows[:, None]) * HEAD_DIM + d[None, :], out, mask=row_ok[:, None])
        tl.store(LSE_PART + part + rows, lse2, mask=row_ok)
        if FIXUP:  # the last chunk of these rows to finish merges all chunks (no second launch)
            if last_to_arrive(COUNT, pid_bh * tl.num_programs(1) + pid_m, n_splits):
                first = (pid_bh * n_splits).to(tl.int64) * n_rows
                m_all = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
                total = tl.zeros([BLOCK_M], dtype=tl.float32)
                acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
                # All rows at once, chunk after chunk: the kernel merges only a few chunks
                # (MAX_FIXUP_SPLITS), and a tile may hold 64 rows (Mirage: batch 16 took twice
                # as long merging row after row, all chunks at once: a perf run at cbe7e17 gated
                # against 0018, results/<gpu>/COMMANDS.md).
                for s in range(0, n_splits):  # .cg: from L2, never a stale L1 line
                    ps = first + s * n_rows
                    lse_s = tl.load(LSE_PART + ps + rows, mask=row_ok, other=float("-inf"), cache_modifier=".cg")
                    o_s = tl.load(O_PART + (ps + rows[:, None]) * HEAD_DIM + d[None, :], mask=row_ok[:, None],
                                  other=0.0, cache_modifier=".cg")
                    m_new = tl.maximum(m_all, lse_s)
                    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                    w_old = tl.exp2(m_all - m_safe)
                    w_s = tl.exp2(lse_s - m_safe)  # 0 for a chunk that saw no key
                    total = total * w_old + w_s
                    acc = acc * w_old[:, None] + o_s * w_s[:, None]
                    m_all = m_new
                out, lse2 = _finish_rows(acc, m_all, total)
                _store_out(O, LSE, out, lse2, b, tok, head, d, row_ok, stride_ob, stride_ot, stride_oh,
                           stride_lb, stride_lh)
    else:
        if MERGE_EXTRA:  # shared-prefix decode: this sequence's node partials merged in before the one store
            if EARLY:  # the suffix was attended before this wait (decode_launch: early_extra)
                pdl_wait(PDL)
            out, lse2 = merge_extra_parts(out, lse2, b, hkv, rows, row_ok, n_rows, d, X_O, X_LSE, X_SEQ_PARTS,
                                          X_PART_ROW0, X_PART_NODE, X_NODE_META, x_max_parts)
        _store_out(O, LSE, out, lse2, b, tok, head, d, row_ok, stride_ob, stride_ot, stride_oh, stride_lb, stride_lh)


@triton.jit
def merge_in(acc, m_all, total, o_p, lse_p):
    """One more part into a running merge: acc = sum w o, total = sum w, w = 2^(lse - m_all)."""
    m_new = tl.maximum(m_all, lse_p)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no part saw a key yet
    w_old = tl.math.exp2(m_all - m_safe)
    w_p = tl.math.exp2(lse_p - m_safe)  # 0 for a part that saw no key
    return acc * w_old[:, None] + o_p * w_p[:, None], m_new, total * w_old + w_p


@triton.jit
def merge_extra_parts(out, lse2, b, hkv, rows, row_ok, n_rows, d, X_O, X_LSE, X_SEQ_PARTS, X_PART_ROW0,
                      X_PART_NODE, X_NODE_META, max_parts):
    """Rows (out, base-2 lse) of sequence b, KV head hkv, merged with the sequence's extra
    partials (shared-prefix nodes: kernels/attention/shared_prefix.py lays them out; part p
    of node n holds, per KV head, the rows of the sequences under n, float32)."""
    acc = tl.zeros(out.shape, tl.float32)
    m_all = tl.full(lse2.shape, float("-inf"), tl.float32)
    total = tl.zeros(lse2.shape, tl.float32)
    acc, m_all, total = merge_in(acc, m_all, total, out, lse2)
    for j in range(0, max_parts):
        part = tl.load(X_SEQ_PARTS + b * max_parts + j)
        if part >= 0:
            node = tl.load(X_PART_NODE + part)
            seq0 = tl.load(X_NODE_META + node * 4 + 2)
            node_rows = tl.load(X_NODE_META + node * 4 + 3) * n_rows
            src = tl.load(X_PART_ROW0 + part) + hkv * node_rows + (b - seq0) * n_rows + rows
            lse_p = tl.load(X_LSE + src, mask=row_ok, other=float("-inf"))
            o_p = tl.load(X_O + src[:, None] * out.shape[1] + d[None, :], mask=row_ok[:, None], other=0.0)
            acc, m_all, total = merge_in(acc, m_all, total, o_p, lse_p)
    empty = total == 0  # no key at all: zeros and -inf; a NaN total stays NaN
    merged = acc / tl.where(empty, 1.0, total)[:, None]
    return merged, tl.where(empty, float("-inf"), _lse2(m_all, tl.where(empty, 1.0, total)))


@triton.jit
def _finish_rows(acc, m, total):
    """Rows of a softmax-weighted sum: out = acc / total and the base-2 log-sum-exp
    m + log2 total. A row that saw no key (total 0, m -inf) gets out 0 and lse -inf."""
    empty = total == 0
    total = tl.where(empty, 1.0, total)
    return acc / total[:, None], tl.where(empty, float("-inf"), _lse2(m, total))


@triton.jit
def _lse2(m, total):
    """m + log2 total, the float64 reference's log-sum-exp where scores are not finite: a NaN
    score leaves total NaN (so NaN), a +inf one leaves m +inf and total NaN (inf - inf): +inf.
    (A row with both NaN and +inf scores gets +inf where the reference gives NaN: the running
    maximum drops NaN.)"""
    return tl.where(m == float("inf"), m, m + tl.log2(total))


@triton.jit
def _store_out(O, LSE, out, lse2, b, tok, head, d, row_ok, stride_ob, stride_ot, stride_oh, stride_lb, stride_lh):
    """Rows of the final output, and their log-sum-exp (natural log) when asked."""
    o_ptrs = O + b.to(tl.int64) * stride_ob + tok[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])
    if LSE is not None:
        tl.store(LSE + b * stride_lb + head * stride_lh + tok, lse2 * 0.6931471805599453, mask=row_ok)


@triton.jit
def _combine_kernel(
    O_PART, LSE_PART, O, LSE,
    stride_ob, stride_ot, stride_oh, stride_lb, stride_lh,
    n_kv_heads, n_rows, n_splits, group,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, PDL: tl.constexpr,
):
    """Merge the chunks of one query row: out = sum_s w_s o_s / sum_s w_s, w_s = 2^(lse_s - max),
    BLOCK_S chunks at a time (bounded: batch 1 with one KV head splits into hundreds)."""
    pdl_launch_dependents(PDL)
    pdl_wait(PDL)
    pid = tl.program_id(0)  # (b * n_kv_heads + hkv) * n_rows + r
    r = pid % n_rows
    bh = pid // n_rows
    b = bh // n_kv_heads
    hkv = bh % n_kv_heads
    d = tl.arange(0, HEAD_DIM)
    first = (bh * n_splits).to(tl.int64) * n_rows + r
    m_all = tl.full([], float("-inf"), dtype=tl.float32)
    total = tl.zeros([], dtype=tl.float32)
    acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for s0 in range(0, n_splits, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        s_ok = s < n_splits
        part = first + s * n_rows
        lse_s = tl.load(LSE_PART + part, mask=s_ok, other=float("-inf"))
        o_s = tl.load(O_PART + part[:, None] * HEAD_DIM + d[None, :], mask=s_ok[:, None], other=0.0)
        m_new = tl.maximum(m_all, tl.max(lse_s, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no chunk saw a key yet
        w_s = tl.exp2(lse_s - m_safe)  # 0 for a chunk that saw no key
        w_old = tl.exp2(m_all - m_safe)
        total = total * w_old + tl.sum(w_s, axis=0)
        acc = acc * w_old + tl.sum(o_s * w_s[:, None], axis=0)
        m_all = m_new
    empty = total == 0  # as _finish_rows: a NaN total is not a row that saw no key
    out = acc / tl.where(empty, 1.0, total)
    tok = r // group
    head = hkv * group + r % group
    tl.store(O + b.to(tl.int64) * stride_ob + tok * stride_ot + head * stride_oh + d, out.to(O.dtype.element_ty))
    if LSE is not None:  # as _finish_rows, for the one row
        lse2 = tl.where(empty, float("-inf"), _lse2(m_all, tl.where(empty, 1.0, total)))
        tl.store(LSE + b * stride_lb + head * stride_lh + tok, lse2 * 0.6931471805599453)


def _check_options(scale, causal, return_lse, max_kv_len, num_splits, validate_lens, qk_norm_eps):
    if scale is not None:
        check_number("scale", scale)
    for name, flag in (("causal", causal), ("return_lse", return_lse), ("validate_lens", validate_lens)):
        check_bool(name, flag)
    if max_kv_len is not None:
        check_int("max_kv_len", max_kv_len, minimum=0)
    if num_splits is not None:
        check_int("num_splits", num_splits, minimum=1)
    check_number("qk_norm_eps", qk_norm_eps, minimum=0.0)


def _check_out(out, q, inputs: dict):
    """out: q's shape, dtype and device, unit stride along head_dim (the kernel takes the
    other three strides), sharing no memory with an input."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    check_same_dtype("out", out, "q", q)
    if out.shape != q.shape or out.device != q.device:
        raise ValueError(f"out must match q: shape {tuple(q.shape)} on {q.device}; got {tuple(out.shape)} on {out.device}")
    if out.stride(3) != 1 and out.numel():
        raise ValueError(f"out must have unit stride along head_dim (got strides {out.stride()})")
    check_no_overlap("out", out, inputs)


def _check_inputs(q, k_cache, v_cache, kv_lens, names=("k_cache", "v_cache", "kv_lens")):
    """q and the caches as gqa_decode takes them; `names`: the caller's names of the caches
    and lengths, used in every error."""
    kn, vn, ln = names
    for name, t in (("q", q), (kn, k_cache), (vn, v_cache)):
        check_tensor(name, t, dtypes=DTYPES)
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D ({'batch, q_tokens, q_heads' if name == 'q' else 'batch, kv_len, kv_heads'}, head_dim); got shape {tuple(t.shape)}")
    check_same_device(**{"q": q, kn: k_cache, vn: v_cache})
    if not (q.dtype == k_cache.dtype == v_cache.dtype):
        raise TypeError(f"q, {kn} and {vn} must share one dtype; got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"{kn} shape {tuple(k_cache.shape)} must equal {vn} shape {tuple(v_cache.shape)}")
    batch, _, q_heads, head_dim = q.shape
    if k_cache.shape[0] != batch:
        raise ValueError(f"q has batch {batch} but the KV cache has batch {k_cache.shape[0]}")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"unsupported head dim {head_dim}: supported head dims are {HEAD_DIMS}")
    if k_cache.shape[3] != head_dim:
        raise ValueError(f"q head dim {head_dim} differs from the KV cache's {k_cache.shape[3]}")
    kv_heads = k_cache.shape[2]
    if kv_heads == 0 or q_heads % kv_heads:
        raise ValueError(f"mismatched groups: {q_heads} query heads is not a multiple of {kv_heads} KV heads")
    for name, t in (("q", q), (kn, k_cache), (vn, v_cache)):
        if t.stride(3) != 1:
            raise ValueError(f"{name} must have unit stride along head_dim (got strides {t.stride()})")
    if isinstance(kv_lens, int) and not isinstance(kv_lens, bool):
        if not 0 <= kv_lens <= k_cache.shape[1]:
            raise ValueError(f"{ln} {kv_lens} must lie in [0, {k_cache.shape[1]}] (the KV cache capacity)")
    elif kv_lens is not None:
        if not isinstance(kv_lens, torch.Tensor) or kv_lens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{ln} must be an int, or an int32 or int64 tensor of shape (batch,)")
        if kv_lens.shape != (batch,):
            raise ValueError(f"{ln} must have shape ({batch},); got {tuple(kv_lens.shape)}")
        if kv_lens.device != q.device and kv_lens.device.type != "cpu":  # a CPU tensor is copied over
            raise ValueError(f"{ln} is on {kv_lens.device}; it must be on q's device ({q.device}) or the CPU")


def gqa_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_lens: torch.Tensor | int | None = None,
    *,
    scale: float | None = None,
    causal: bool = True,
    return_lse: bool = False,
    max_kv_len: int | None = None,
    num_splits: int | None = None,
    validate_lens: bool = True,
    out: torch.Tensor | None = None,
    q_norm_weight: torch.Tensor | None = None,
    k_norm_weight: torch.Tensor | None = None,
    qk_norm_eps: float = 1e-6,
    config: dict | None = None,
):
    """Attention of q over the KV cache; see the module doc. Returns out, or (out, lse).

    kv_lens: an int gives every sequence that length (passed by value: nothing to read);
    a tensor on the GPU is checked to lie in [0, kv_capacity] with one device sync unless
    validate_lens=False or a CUDA graph is being captured; the kernel clamps it either way.
    max_kv_len (the expected longest length, default the capacity) only sizes the split:
    a longer sequence is still read whole, by its last chunk.
    q_norm_weight and k_norm_weight (head_dim,) turn on QK-norm (Chameleon): q and every
    cached key are RMS-normalized over the head dim (eps qk_norm_eps) inside the kernel.
    """
    _check_inputs(q, k_cache, v_cache, kv_lens)
    _check_options(scale, causal, return_lse, max_kv_len, num_splits, validate_lens, qk_norm_eps)
    qk_norm = check_qk_norm_weights(q, q_norm_weight, k_norm_weight, DTYPES)
    if out is not None:
        _check_out(out, q, {"q": q, "k_cache": k_cache, "v_cache": v_cache, "kv_lens": kv_lens,
                            "q_norm_weight": q_norm_weight, "k_norm_weight": k_norm_weight})
    out, lse, _ = decode_launch(q, k_cache, v_cache, kv_lens, scale, causal, return_lse, max_kv_len, num_splits,
                                validate_lens, out, q_norm_weight, k_norm_weight, qk_norm_eps, config, qk_norm)
    return (out, lse) if return_lse else out


def decode_launch(q, k_cache, v_cache, kv_lens, scale, causal, return_lse, max_kv_len, num_splits, validate_lens,
                  out, q_norm_weight, k_norm_weight, qk_norm_eps, config, qk_norm, extra_parts=None,
                  early_extra=False):
    """gqa_decode's launch on checked arguments: (out, lse or None, merged). `extra_parts`
    (shared_prefix.py's partial buffers and their index, as a tuple) are merged into each
    row before its store when the KV length is not split (merged True); a split launch
    leaves them to the caller (merged False). early_extra: the kernel just before this one
    on the stream wrote only the extra parts (and began after all earlier work had ended),
    so with PDL the rows attend their cache before waiting for it, and wait only to merge;
    not where this call makes kv_lens itself (a cast or copy would then come in between)."""
    batch, q_tokens, q_heads, head_dim = q.shape
    capacity, kv_heads = k_cache.shape[1], k_cache.shape[2]
    device = q.device
    uniform = kv_lens is None or isinstance(kv_lens, int)
    if uniform:  # one length for all: passed by value, no tensor to build or read
        uniform_len = capacity if kv_lens is None else int(kv_lens)
        kv_lens = None
    else:
        uniform_len = 0
        given = kv_lens
        if kv_lens.device != device:
            kv_lens = kv_lens.to(device)
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        if validate_lens and not capturing and batch and bool(((kv_lens < 0) | (kv_lens > capacity)).any()):
            raise ValueError(f"kv_lens must lie in [0, {capacity}] (the KV cache capacity); got {kv_lens.tolist()}")
        kv_lens = kv_lens.to(torch.int32).contiguous()  # the kernel reads kv_lens[b] at b
        early_extra = early_extra and kv_lens is given
    if out is None:
        out = torch.empty_like(q)
    lse = torch.empty(batch, q_heads, q_tokens, dtype=torch.float32, device=device) if return_lse else None
    if batch == 0 or q_tokens == 0 or q_heads == 0:
        return out, lse, False

    group = q_heads // kv_heads
    n_rows = group * q_tokens
    block_m = max(16, min(64, next_power_of_2(n_rows)))
    max_kv = capacity if max_kv_len is None else max(0, min(int(max_kv_len), capacity))
    if uniform:
        max_kv = min(max_kv, uniform_len)
    key = dict(head_dim=head_dim, rows=pow2_bucket(n_rows), programs=pow2_bucket(batch * kv_heads), kv=pow2_bucket(max_kv))
    cfg = LAUNCH.choose(device, key, config)
    block_n = cfg["block_n"]
    m_blocks = cdiv(n_rows, block_m)
    n_splits, chunk = split_plan(max_kv, block_n, batch * kv_heads * m_blocks, device, num_splits, cfg["waves"],
                                 nearest=cfg["nearest"])
    scale = head_dim ** -0.5 if scale is None else float(scale)
    partial = n_splits > 1
    # Unsplit tiles may pipeline deeper (unsplit_stages; None: num_stages)
    num_stages = cfg["num_stages"] if partial or cfg["unsplit_stages"] is None else cfg["unsplit_stages"]
    if partial:
        o_part = torch.empty(batch * kv_heads, n_splits, n_rows, head_dim, dtype=torch.float32, device=device)
        lse_part = torch.empty(batch * kv_heads, n_splits, n_rows, dtype=torch.float32, device=device)
    else:
        o_part = lse_part = out  # unused
    # Few chunks: merged by the tile's last program; many: by a second kernel (_default_config)
    fixup = partial and (cfg["fixup"] == "kernel" or (cfg["fixup"] == "auto" and n_splits <= MAX_FIXUP_SPLITS))
    block_s = min(next_power_of_2(n_splits), MERGE_BLOCK_S)
    count = tile_counters(device, batch * kv_heads * m_blocks) if fixup else out
    stride_lb, stride_lh = (lse.stride(0), lse.stride(1)) if lse is not None else (0, 0)
    pdl = pdl_options(device)
    merge = extra_parts is not None and not partial
    x_args = extra_parts if merge else (out, out, out, out, out, out, 0)  # unused without MERGE_EXTRA
    _decode_kernel[(batch * kv_heads, m_blocks, n_splits)](
        q, k_cache, v_cache, kv_lens, out, lse, o_part, lse_part,
        q_norm_weight.contiguous() if qk_norm else q, k_norm_weight.contiguous() if qk_norm else q, count,
        float(qk_norm_eps), uniform_len, *x_args,
        q.stride(0), q.stride(1), q.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        stride_lb, stride_lh,
        capacity, q_tokens, group, kv_heads, n_rows, chunk, n_splits, scale / LN2,
        CAUSAL=causal, HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, WRITE_PARTIAL=partial, QK_NORM=qk_norm,
        FIXUP=fixup, UNIFORM_LEN=uniform, MERGE_EXTRA=merge, EARLY=merge and early_extra,
        num_warps=cfg["num_warps"], num_stages=num_stages, **pdl,
    )
    if partial and not fixup:
        _combine_kernel[(batch * kv_heads * n_rows,)](
            o_part, lse_part, out, lse,
            out.stride(0), out.stride(1), out.stride(2), stride_lb, stride_lh,
            kv_heads, n_rows, n_splits, group,
            HEAD_DIM=head_dim, BLOCK_S=block_s,
            num_warps=4, **pdl,
        )
    return out, lse, merge
