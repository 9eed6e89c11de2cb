"""Dense causal attention for prefill (flash-attention style) in Triton.

    prefill_attention(q, k, v, kv_lens=None)   softmax(q k^T * scale) v, per query head
    prefill_attention(..., window=W, sink=S)   a sliding window of W keys, plus the first S

q (B, T, Hq, D); k, v (B, S, Hkv, D) with Hq a multiple of Hkv (GQA, any ratio; a KV
cache whose capacity S is past the sequence's end works as it is). Head dim 64 or 128;
fp16 or bf16; float32 softmax and accumulation. Sequence b has kv_lens[b] keys (default
S, or an int for all); its T queries are its last T positions (kv_len - T .. kv_len - 1,
the convention of gqa_decode), so a prefill from scratch has kv_len = T and a chunk of a
longer prompt has kv_len = cache position + T. Causal masks each query to the keys at or
before its position; a query row before position 0 (a sequence shorter than T) sees no
key and gets zeros (and -inf log-sum-exp).

One program owns BLOCK_M query rows of one head and streams the keys in BLOCK_N blocks
with the online softmax: the blocks wholly before its first query need no mask, the
blocks across the diagonal are masked, and the blocks after its last query are never read
(half the work of a dense causal pass). With a window, a query sees the W keys up to its
own and the first S ("attention sinks", StreamingLLM); the blocks outside both are never read.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels.checks import check_bool, check_int, check_number, check_tensor
from kernels.interpreter import exact_operand
from kernels.launch import cdiv
from kernels.tuning import LaunchSpace, pow2_bucket

HEAD_DIMS = (64, 128)
DTYPES = (torch.float16, torch.bfloat16)
LOG2E = 1.4426950408889634


@triton.jit
def _load_block(ptrs, desc, tma_row, tma_col, n0, key_ok, MASKED: tl.constexpr, USE_TMA: tl.constexpr):
    """A key block's keys or values; masked, a key past kv_len gives zeros, never the cache's
    garbage (through TMA, the next rows of the flattened cache)."""
    if USE_TMA:
        x = desc.load([tma_row + n0, tma_col])
        if MASKED:
            x = tl.where(key_ok[:, None], x, 0.0)
        return x
    if MASKED:
        return tl.load(ptrs, mask=key_ok[:, None], other=0.0)
    return tl.load(ptrs)


@triton.jit
def _probabilities(qk, m_i, rows_pos, rows_lo, sink, offs_n, key_ok, qk_scale, CAUSAL: tl.constexpr,
                   MASKED: tl.constexpr, POS_SCALE: tl.constexpr, ROWS_LO: tl.constexpr):
    """One key block's scores into the online softmax (base 2): (p, the new running max, the
    max p is taken against: 0 for a row that has seen no key yet, so no NaN from -inf - -inf)."""
    if MASKED:
        s = qk * qk_scale
        visible = key_ok[None, :]
        if CAUSAL:
            visible = visible & (offs_n[None, :] <= rows_pos[:, None])
        if ROWS_LO:  # and the first `sink` keys, whatever rows_lo says
            visible = visible & ((offs_n[None, :] >= rows_lo[:, None]) | (offs_n[None, :] < sink))
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_use[:, None])
    else:
        if POS_SCALE:  # max(qk) * scale is the scaled maximum: one fused multiply-add a score
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        else:
            s = qk * qk_scale
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
        m_use = m_new
    return p, m_new, m_use


@triton.jit
def _accumulate(acc, m_i, l_i, p, m_use, v):
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(exact_operand(p.to(v.dtype)), exact_operand(v), acc * alpha[:, None])
    return acc, l_i


@triton.jit
def _attend_block(acc, m_i, l_i, q, K, V, desc_k, desc_v, tma_row, tma_col, rows_pos, n0, kv_len, stride_kn,
                  stride_vn, offs_d, qk_scale, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
                  USE_TMA: tl.constexpr, POS_SCALE: tl.constexpr, rows_lo, ROWS_LO: tl.constexpr, sink=0):
    """One key block into the running (acc, max, sum) of the online softmax (base 2).
    Unmasked blocks lie wholly inside the sequence and before every row's position: no
    bounds, no mask, and every row has a finite maximum after them. Masked, a row sees the
    keys below kv_len up to its rows_pos (causal), from its rows_lo on or below `sink` (ROWS_LO)."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    key_ok = offs_n < kv_len
    k_ptrs = K + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :]
    v_ptrs = V + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :]
    # keys read through TMA past kv_len need no zeroing: their scores are masked
    k = _load_block(k_ptrs, desc_k, tma_row, tma_col, n0, key_ok, MASKED and not USE_TMA, USE_TMA)
    qk = tl.dot(exact_operand(q), tl.trans(exact_operand(k)))
    p, m_new, m_use = _probabilities(qk, m_i, rows_pos, rows_lo, sink, offs_n, key_ok, qk_scale, CAUSAL, MASKED,
                                     POS_SCALE, ROWS_LO)
    v = _load_block(v_ptrs, desc_v, tma_row, tma_col, n0, key_ok, MASKED, USE_TMA)
    acc, l_i = _accumulate(acc, m_i, l_i, p, m_use, v)
    return acc, m_new, l_i


@triton.jit
def _attend_block_halves(acc_a, m_a, l_a, acc_b, m_b, l_b, q_a, q_b, K, V, desc_k, desc_v, tma_row, tma_col, pos_a,
                         pos_b, n0, kv_len, stride_kn, stride_vn, offs_d, qk_scale, BLOCK_N: tl.constexpr,
                         CAUSAL: tl.constexpr, MASKED: tl.constexpr, USE_TMA: tl.constexpr, POS_SCALE: tl.constexpr):
    """_attend_block for two halves of a program's rows, each its own softmax stream over the
    same keys and values, ordered so that one half's exponentials can run while the other's
    products do."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    key_ok = offs_n < kv_len
    k_ptrs = K + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :]
    v_ptrs = V + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :]
    k = _load_block(k_ptrs, desc_k, tma_row, tma_col, n0, key_ok, MASKED and not USE_TMA, USE_TMA)
    k_t = tl.trans(exact_operand(k))
    qk_a = tl.dot(exact_operand(q_a), k_t)
    qk_b = tl.dot(exact_operand(q_b), k_t)
    p_a, m_a_new, use_a = _probabilities(qk_a, m_a, pos_a, pos_a, 0, offs_n, key_ok, qk_scale, CAUSAL, MASKED,
                                         POS_SCALE, False)
    v = _load_block(v_ptrs, desc_v, tma_row, tma_col, n0, key_ok, MASKED, USE_TMA)
    acc_a, l_a = _accumulate(acc_a, m_a, l_a, p_a, use_a, v)
    p_b, m_b_new, use_b = _probabilities(qk_b, m_b, pos_b, pos_b, 0, offs_n, key_ok, qk_scale, CAUSAL, MASKED,
                                         POS_SCALE, False)
    acc_b, l_b = _accumulate(acc_b, m_b, l_b, p_b, use_b, v)
    return acc_a, m_a_new, l_a, acc_b, m_b_new, l_b


@triton.jit
def _store_rows(O, LSE, acc, m_i, l_i, offs_m, dh, T, kv_len, b, h, offs_d, stride_ob, stride_ot, stride_oh, stride_lb,
                stride_lh, CAUSAL: tl.constexpr, WRITE_LSE: tl.constexpr):
    """Each row to its position offs_m of head h + dh (dh: a packed program's rows of its next heads)."""
    # A row that sees keys divides by its sum even when that is 0 (every score -inf: 0/0,
    # NaN, as the math says); a row before position 0 or of an empty sequence sees none: 0.
    row_ok = offs_m < T
    rows_pos = kv_len - T + offs_m
    has_keys = (kv_len > 0) & (rows_pos >= 0) if CAUSAL else (kv_len > 0) & row_ok
    out = tl.where(has_keys[:, None], acc / l_i[:, None], 0.0)
    o_ptrs = (O + b.to(tl.int64) * stride_ob + (h + dh)[:, None] * stride_oh + offs_m[:, None].to(tl.int64) * stride_ot
              + offs_d[None, :])
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])
    if WRITE_LSE:
        lse = tl.where(m_i == float("inf"), float("inf"), (m_i + tl.math.log2(l_i)) / 1.4426950408889634)
        lse = tl.where(has_keys, lse, float("-inf"))
        tl.store(LSE + b.to(tl.int64) * stride_lb + (h + dh) * stride_lh + offs_m, lse, mask=row_ok)


@triton.jit
def _prefill_kernel(Q, K, V, desc_k, desc_v, O, LSE, KV_LENS, uniform_len, S, HEADS,
                    stride_qb, stride_qt, stride_qh, stride_kb, stride_kn, stride_kh,
                    stride_vb, stride_vn, stride_vh, stride_ob, stride_ot, stride_oh, stride_lb, stride_lh,
                    T, n_heads, group, qk_scale, window, sink,
                    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                    UNIFORM_LEN: tl.constexpr, WRITE_LSE: tl.constexpr, USE_TMA: tl.constexpr,
                    POS_SCALE: tl.constexpr = True, HALVES: tl.constexpr = False, HEAD_LIST: tl.constexpr = False,
                    WINDOW: tl.constexpr = False, WINDOW_BLOCK: tl.constexpr = 1, PACK: tl.constexpr = 1):
    bh = tl.program_id(0)
    # causal: the last query blocks see the most keys; launched first, they leave short ones for the tail
    pid_m = tl.num_programs(1) - 1 - tl.program_id(1)
    # PACK query heads of one KV head a program: their rows at the same positions share every
    # key block and its mask, so the product is PACK x BLOCK_M rows deep at BLOCK_M's causal extent
    b = bh // (n_heads // PACK)
    h = bh % (n_heads // PACK) * PACK
    if HEAD_LIST:  # the launch covers the query heads HEADS lists (n_heads of them)
        h = tl.load(HEADS + h)
    kvh = h // group
    kv_len = uniform_len if UNIFORM_LEN else tl.load(KV_LENS + b)
    offs_d = tl.arange(0, HEAD_DIM)
    Q = Q + b.to(tl.int64) * stride_qb + h * stride_qh
    K = K + b.to(tl.int64) * stride_kb + kvh * stride_kh
    V = V + b.to(tl.int64) * stride_vb + kvh * stride_vh
    tma_row = b * S  # through TMA: K and V as (batch * S, kv_heads * head_dim) matrices
    tma_col = kvh * HEAD_DIM

    first_pos = kv_len - T + pid_m * BLOCK_M
    last_pos = first_pos + BLOCK_M - 1
    if CAUSAL:
        hi = tl.minimum(kv_len, last_pos + 1)
        full = tl.maximum(tl.minimum(first_pos + 1, hi), 0) // BLOCK_N * BLOCK_N  # keys every row sees
    else:
        hi = kv_len
        full = kv_len // BLOCK_N * BLOCK_N
    if HALVES:  # two softmax streams of BLOCK_M / 2 rows over each key block
        HALF: tl.constexpr = BLOCK_M // 2
        offs_a = pid_m * BLOCK_M + tl.arange(0, HALF)
        offs_b = offs_a + HALF
        q_a = tl.load(Q + offs_a[:, None].to(tl.int64) * stride_qt + offs_d[None, :], mask=(offs_a < T)[:, None],
                      other=0.0)
        q_b = tl.load(Q + offs_b[:, None].to(tl.int64) * stride_qt + offs_d[None, :], mask=(offs_b < T)[:, None],
                      other=0.0)
        pos_a = kv_len - T + offs_a
        pos_b = kv_len - T + offs_b
        m_a = tl.full([HALF], float("-inf"), tl.float32)
        m_b = tl.full([HALF], float("-inf"), tl.float32)
        l_a = tl.zeros([HALF], tl.float32)
        l_b = tl.zeros([HALF], tl.float32)
        acc_a = tl.zeros([HALF, HEAD_DIM], tl.float32)
        acc_b = tl.zeros([HALF, HEAD_DIM], tl.float32)
        for n0 in range(0, full, BLOCK_N):
            acc_a, m_a, l_a, acc_b, m_b, l_b = _attend_block_halves(
                acc_a, m_a, l_a, acc_b, m_b, l_b, q_a, q_b, K, V, desc_k, desc_v, tma_row, tma_col, pos_a, pos_b, n0,
                kv_len, stride_kn, stride_vn, offs_d, qk_scale, BLOCK_N, CAUSAL, False, USE_TMA, POS_SCALE)
        for n0 in range(full, hi, BLOCK_N):
            acc_a, m_a, l_a, acc_b, m_b, l_b = _attend_block_halves(
                acc_a, m_a, l_a, acc_b, m_b, l_b, q_a, q_b, K, V, desc_k, desc_v, tma_row, tma_col, pos_a, pos_b, n0,
                kv_len, stride_kn, stride_vn, offs_d, qk_scale, BLOCK_N, CAUSAL, True, USE_TMA, POS_SCALE)
        same_head = tl.zeros([HALF], tl.int32)
        _store_rows(O, LSE, acc_a, m_a, l_a, offs_a, same_head, T, kv_len, b, h, offs_d, stride_ob, stride_ot,
                    stride_oh, stride_lb, stride_lh, CAUSAL, WRITE_LSE)
        _store_rows(O, LSE, acc_b, m_b, l_b, offs_b, same_head, T, kv_len, b, h, offs_d, stride_ob, stride_ot,
                    stride_oh, stride_lb, stride_lh, CAUSAL, WRITE_LSE)
    else:
        if PACK == 1:
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            dh = tl.zeros([BLOCK_M], tl.int32)
        else:  # row r: position r % BLOCK_M of the block, head h + r // BLOCK_M
            r = tl.arange(0, PACK * BLOCK_M)
            offs_m = pid_m * BLOCK_M + r % BLOCK_M
            dh = r // BLOCK_M
        q = tl.load(Q + dh[:, None] * stride_qh + offs_m[:, None].to(tl.int64) * stride_qt + offs_d[None, :],
                    mask=(offs_m < T)[:, None], other=0.0)
        rows_pos = kv_len - T + offs_m  # each query row's position in its sequence
        m_i = tl.full([PACK * BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([PACK * BLOCK_M], tl.float32)
        acc = tl.zeros([PACK * BLOCK_M, HEAD_DIM], tl.float32)
        lo = 0  # the first key block the loops below read
        rows_lo = rows_pos
        if WINDOW:
            # a row sees the `window` keys up to its own, counted from the first row of its
            # WINDOW_BLOCK (1: its own), and the first `sink` keys; the rest is never read
            rows_lo = rows_pos // WINDOW_BLOCK * WINDOW_BLOCK - window + 1
            lo_first = tl.maximum(first_pos, 0) // WINDOW_BLOCK * WINDOW_BLOCK - window + 1
            lo_last = tl.maximum(last_pos, 0) // WINDOW_BLOCK * WINDOW_BLOCK - window + 1
            lo = tl.maximum(lo_first, 0) // BLOCK_N * BLOCK_N
            for n0 in range(0, tl.minimum(tl.cdiv(sink, BLOCK_N) * BLOCK_N, lo), BLOCK_N):  # sink blocks before it
                acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, K, V, desc_k, desc_v, tma_row, tma_col, rows_pos,
                                              n0, kv_len, stride_kn, stride_vn, offs_d, qk_scale, BLOCK_N, True,
                                              True, USE_TMA, POS_SCALE, rows_lo, True, sink)
            # the window's first blocks, which the program's first rows see more of than its last
            edge = tl.minimum(tl.maximum(tl.cdiv(tl.maximum(lo_last, 0), BLOCK_N) * BLOCK_N, lo), hi)
            for n0 in range(lo, edge, BLOCK_N):
                acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, K, V, desc_k, desc_v, tma_row, tma_col, rows_pos,
                                              n0, kv_len, stride_kn, stride_vn, offs_d, qk_scale, BLOCK_N, True,
                                              True, USE_TMA, POS_SCALE, rows_lo, True, sink)
            lo = edge
        for n0 in range(lo, full, BLOCK_N):
            acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, K, V, desc_k, desc_v, tma_row, tma_col, rows_pos, n0,
                                          kv_len, stride_kn, stride_vn, offs_d, qk_scale, BLOCK_N, CAUSAL, False,
                                          USE_TMA, POS_SCALE, rows_lo, False)
        for n0 in range(tl.maximum(full, lo), hi, BLOCK_N):
            acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, K, V, desc_k, desc_v, tma_row, tma_col, rows_pos, n0,
                                          kv_len, stride_kn, stride_vn, offs_d, qk_scale, BLOCK_N, CAUSAL, True,
                                          USE_TMA, POS_SCALE, rows_lo, WINDOW, sink)
        _store_rows(O, LSE, acc, m_i, l_i, offs_m, dh, T, kv_len, b, h, offs_d, stride_ob, stride_ot, stride_oh,
                    stride_lb, stride_lh, CAUSAL, WRITE_LSE)


def _default_config(head_dim: int, rows: int, window: int | None = None) -> dict:
    """128 query rows a program (64 for short prompts), 64-key blocks; 8 warps at head dim
    128; keys and values by pointer loads (tma: through TMA descriptors, Hopper and newer);
    one softmax stream a program (halves: two of half the rows, interleaved); one query head
    a program (pack: that many heads of one KV head, BLOCK_M positions each)."""
    return dict(BLOCK_M=128 if rows >= 128 else 64, BLOCK_N=64, num_warps=8 if head_dim == 128 else 4, num_stages=3,
                tma=False, halves=False, pack=1)


def _candidates(head_dim: int, rows: int, window: int | None = None) -> list[dict]:
    out = [dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=st)
           for bm in (64, 128) for bn in (32, 64, 128) for w in (4, 8) for st in (2, 3, 4)
           if not (bm == 128 and bn == 128 and head_dim == 128 and st > 2)]  # 3 stages: 224 KiB of shared memory
    out += [dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=st, tma=True)
            for bm in (64, 128) for bn in (64, 128) for w in (4, 8) for st in (2, 3)
            if not (bm == 128 and bn == 128 and head_dim == 128 and st > 2)]
    # two or four heads of a KV head a program, 64 or 128 rows in all
    out += [dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=st, tma=t, pack=pk)
            for bm, pk, warps in ((64, 2, (4, 8)), (32, 2, (4,)), (32, 4, (4, 8))) for bn in (64, 128) for w in warps
            for st in (2, 3) for t in (False, True)
            if not (bm * pk == 128 and bn == 128 and head_dim == 128 and st > 2)]
    if window is not None:  # the two streams' loops have no window
        return out
    # two softmax streams: 8 warps, 64-key blocks (4 warps or 128-key blocks spill registers at head dim 128)
    out += [dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=st, tma=t, halves=True) for st in (2, 3)
            for t in (False, True)]
    return out


def _check_config(cfg: dict) -> None:
    check_tile_config(cfg)
    if "halves" in cfg and not isinstance(cfg["halves"], bool):
        raise ValueError(f"halves must be True or False, got {cfg['halves']!r}")
    pack = cfg.get("pack", 1)
    if not isinstance(pack, int) or isinstance(pack, bool) or pack not in (1, 2, 4):
        raise ValueError(f"pack must be 1, 2 or 4 (query heads a program), got {pack!r}")
    if cfg.get("halves") and pack > 1:
        raise ValueError("halves and pack > 1 do not combine: the two streams are one head's rows")
    if cfg.get("BLOCK_M", 128) * pack > 128:
        raise ValueError(f"BLOCK_M x pack is a program's rows, at most 128; got {cfg.get('BLOCK_M', 128)} x {pack}")
    if cfg.get("halves") and cfg.get("BLOCK_M", 128) < 32:
        raise ValueError(f"halves needs BLOCK_M of at least 32 (two streams of 16 rows, a product's least); "
                         f"got {cfg['BLOCK_M']}")


def check_tile_config(cfg: dict) -> None:
    """BLOCK_M and BLOCK_N among the tile sizes the attention kernels take, tma a bool (each
    where the launch has it)."""
    for name in ("BLOCK_M", "BLOCK_N"):
        if name in cfg and cfg[name] not in (16, 32, 64, 128):
            raise ValueError(f"{name} must be 16, 32, 64 or 128, got {cfg[name]!r}")
    if "tma" in cfg and not isinstance(cfg["tma"], bool):
        raise ValueError(f"tma must be True or False, got {cfg['tma']!r}")


def _tma_layout_ok(t: torch.Tensor) -> bool:
    """Whether k or v reads as one (batch * S, heads * head_dim) matrix through TMA: batch
    and tokens flatten, heads adjacent, 16-byte aligned base and row stride."""
    B, S, H, D = t.shape
    return ((B == 1 or t.stride(0) == S * t.stride(1)) and t.stride(2) == D and t.data_ptr() % 16 == 0
            and (t.stride(1) * t.element_size()) % 16 == 0)


LAUNCH = LaunchSpace("prefill_attention", _default_config, _candidates, _check_config)


def kv_descriptors(k: torch.Tensor, v: torch.Tensor, cfg: dict, config: dict | None):
    """(tma, desc_k, desc_v): k and v as TMA descriptors over (batch * tokens, kv_heads *
    head_dim) matrices in cfg's BLOCK_N-key tiles where cfg asks for tma and both layouts
    allow it; else (False, k, v), which the kernel leaves unused. A table's tma falls back to
    pointer loads; the caller's own tma=True (config) on a layout TMA cannot read raises."""
    tma = cfg["tma"] and _tma_layout_ok(k) and _tma_layout_ok(v)
    if cfg["tma"] and not tma and config and config.get("tma"):
        raise ValueError("tma=True needs k and v each readable as one (batch * kv_len, kv_heads * head_dim) matrix: "
                         "batch and tokens flattening, heads adjacent, 16-byte aligned base and token stride")
    if not tma:
        return False, k, v
    B, S, Hkv, D = k.shape
    desc_k, desc_v = (TensorDescriptor(t, [B * S, Hkv * D], [t.stride(1), 1], [cfg["BLOCK_N"], D]) for t in (k, v))
    return True, desc_k, desc_v


def check_qkv_tensors(q, k, v, kernel_input: bool = True) -> None:
    """q, k, v each a 4-D (batch, tokens, heads, head_dim) tensor of one half dtype, on q's
    device, unit stride along head_dim, head_dim one the attention kernels take;
    kernel_input=False: read by PyTorch code only, on the CPU or a GPU."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, dtypes=DTYPES, kernel_input=kernel_input)
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (batch, tokens, heads, head_dim); got shape {tuple(t.shape)}")
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must have unit stride along head_dim (got strides {t.stride()})")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device}, q on {q.device}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype}; it must match q's {q.dtype}")
    if q.shape[3] not in HEAD_DIMS:
        raise ValueError(f"head_dim {q.shape[3]} is not supported: {', '.join(map(str, HEAD_DIMS))}")


def _check(q, k, v, kv_lens, scale, causal, return_lse, window, sink):
    check_qkv_tensors(q, k, v)
    B, T, Hq, D = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} differ in shape")
    if k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k must have shape (batch={B}, kv_len, kv_heads, head_dim={D}); got {tuple(k.shape)}")
    if Hq % k.shape[2]:
        raise ValueError(f"q's {Hq} heads are not a multiple of the {k.shape[2]} KV heads")
    S = k.shape[1]
    if isinstance(kv_lens, bool) or not (kv_lens is None or isinstance(kv_lens, (int, torch.Tensor))):
        raise TypeError(f"kv_lens must be None, an int or a tensor of shape (batch,), got {type(kv_lens).__name__}")
    if isinstance(kv_lens, int) and not 0 <= kv_lens <= S:
        raise ValueError(f"kv_lens must lie in [0, {S}] (k's length); got {kv_lens}")
    if isinstance(kv_lens, torch.Tensor):
        if kv_lens.shape != (B,) or kv_lens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"kv_lens must be an int32 or int64 tensor of shape ({B},); got {kv_lens.dtype} "
                            f"{tuple(kv_lens.shape)}")
        if B and bool(((kv_lens < 0) | (kv_lens > S)).any()):
            raise ValueError(f"kv_lens must lie in [0, {S}] (k's length); got {kv_lens.tolist()}")
    if scale is not None:
        check_number("scale", scale)
    check_bool("causal", causal)
    check_bool("return_lse", return_lse)
    check_int("sink", sink, minimum=0)
    if window is None:
        if sink:
            raise ValueError(f"sink={sink} needs a window: without one every key is seen already")
        return
    check_int("window", window, minimum=1)
    if not causal:
        raise ValueError("a window counts the keys up to each query's own: it needs causal=True")


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_lens=None, *, scale: float | None = None,
                      causal: bool = True, return_lse: bool = False, window: int | None = None, sink: int = 0,
                      config: dict | None = None):
    """Attention of q's T queries over the keys of each sequence; see the module doc.
    Returns out (B, T, Hq, D) in q's dtype, or (out, lse (B, Hq, T) float32).
    window (causal only): a query at position i sees the keys i - window + 1 .. i, and the
    first `sink` keys. config: launch options over the tuned or default ones (BLOCK_M, BLOCK_N,
    num_warps, num_stages, tma, halves (not with a window), pack (query heads of one KV head a
    program); a table's tma falls back to pointer loads where k or v cannot be read through
    TMA, and its pack to one head where the heads do not divide, where the caller's own raise)."""
    _check(q, k, v, kv_lens, scale, causal, return_lse, window, sink)
    B, T, Hq, D = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(B, Hq, T, dtype=torch.float32, device=q.device) if return_lse else None
    if B == 0 or T == 0 or Hq == 0:
        if lse is not None:
            lse.fill_(float("-inf"))
        return (out, lse) if return_lse else out
    launch_prefill(q, k, v, out, lse, kv_lens, D ** -0.5 if scale is None else float(scale), causal, config,
                   window=window, sink=sink)
    return (out, lse) if return_lse else out


def launch_prefill(q, k, v, out, lse, kv_lens, scale: float, causal: bool, config: dict | None, *, heads=None,
                   window: int | None = None, sink: int = 0, window_block: int = 1) -> None:
    """The kernel over checked inputs, into out (and lse, or None): every query head of q, or
    the heads the int32 tensor `heads` lists; a window's start counted from the first row of
    each window_block rows (sparse prefill's A-shape holds a 64-row block to one window)."""
    B, T, Hq, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    uniform = not isinstance(kv_lens, torch.Tensor)
    uniform_len = S if kv_lens is None else (int(kv_lens) if uniform else 0)
    lens = q if uniform else kv_lens.to(device=q.device, dtype=torch.int32).contiguous()
    key = dict(head_dim=D, rows=pow2_bucket(T)) | ({} if window is None else dict(window=pow2_bucket(window)))
    config = dict(config or {})
    # the caller's own rows a program or two streams mean one head a program, whatever the table packs
    if "pack" not in config and ("BLOCK_M" in config or config.get("halves")):
        config["pack"] = 1
    if config.get("pack", 1) != 1 and "halves" not in config:
        config["halves"] = False
    cfg = LAUNCH.choose(q.device, key, config)
    if window is not None and cfg["halves"]:
        raise ValueError("halves (two softmax streams a program) has no window: launch it with halves=False")
    tma, desc_k, desc_v = kv_descriptors(k, v, cfg, config)
    lse_arg, (stride_lb, stride_lh) = (lse, lse.stride()[:2]) if lse is not None else (out, (0, 0))
    n_heads = Hq if heads is None else heads.numel()
    pack = cfg["pack"]
    if pack > 1 and (heads is not None or (Hq // Hkv) % pack):
        if config and config.get("pack", 1) > 1:  # the caller's own; a table's falls back to one head
            raise ValueError(f"pack={pack} needs a whole number of packs in each KV head's {Hq // Hkv} query heads "
                             "and every head launched (no head list)")
        pack = 1
    grid = (B * n_heads // pack, cdiv(T, cfg["BLOCK_M"]))
    if grid[1] > 65535:  # CUDA's limit on a grid's second dimension
        raise ValueError(f"{T} query tokens is past this kernel's limit of {65535 * cfg['BLOCK_M']} at BLOCK_M "
                         f"{cfg['BLOCK_M']}: split the prompt into chunks")
    _prefill_kernel[grid](
        q, k, v, desc_k, desc_v, out, lse_arg, lens, uniform_len, S, q if heads is None else heads,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2), stride_lb, stride_lh,
        T, n_heads, Hq // Hkv, scale * LOG2E, window or 0, sink,
        HEAD_DIM=D, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], CAUSAL=causal, UNIFORM_LEN=uniform,
        WRITE_LSE=lse is not None, USE_TMA=tma, POS_SCALE=scale > 0, HALVES=cfg["halves"],
        HEAD_LIST=heads is not None, WINDOW=window is not None, WINDOW_BLOCK=window_block, PACK=pack,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
