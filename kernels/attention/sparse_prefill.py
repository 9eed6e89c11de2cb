"""Dynamic sparse causal prefill (MInference's vertical-slash pattern) in Triton.

    estimate_vertical_slash(q, k)                 vertical (key) and slash (diagonal) scores
    vertical_slash_index(columns, diagonals, T)   the compact index the attention walks
    vertical_slash_attention(q, k, v, index)      exact attention over the selected keys
    vertical_slash_prefill(q, k, v, n_columns, n_diagonals)   the three in a row
    a_shape_index(B, H, T)                        the static sink + local window pattern

A pattern selects, per query head, key columns and diagonals (diagonal d holds the pairs
query position - key position = d). It is applied by blocks of BLOCK = 64 query rows, as
MInference's kernels tile it: the rows of a block see every key on a chosen diagonal of any
row of the block (a contiguous key range per diagonal) and every chosen column, causal on
top. kernels.attention.reference.vertical_slash_mask builds the same set plainly.

The index is O(columns + diagonals) per head instead of MInference's dense per-block
lists (1.6 GB at 128K tokens and 32 heads): the diagonals, sorted and merged wherever the
ranges they give a block touch (gap <= BLOCK), are the same for every block, so a block's
ranges are computed in the kernel from the merged intervals; a column inside one of the
block's ranges is found by a binary search over the intervals and skipped (each key counted
once); per block, only the number of columns at or before its last row is stored. A
program of the attention takes one pattern block or two (BLOCK_M, a tuned launch option:
128-row products run faster, each row still held to its own block's ranges).

Heads that share one A-shape (sink keys and a local window, a pattern with no data in it)
skip the index walk: sparse prefill runs them as the dense prefill kernel's sliding window,
each pattern block held to its first row's window as the index's diagonals hold it.

The estimate scores the last LAST_Q queries against every key (softmax over each row, the
matrix never stored): vertical[k] sums the probabilities of key k, slash[d] those of
diagonal d. The first SINK_COLUMNS keys and the nearest LOCAL_DIAGONALS diagonals are always
kept, as MInference keeps them.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels.attention.prefill import (LOG2E, _accumulate, _attend_block, _load_block, check_qkv_tensors,
                                      check_tile_config, kv_descriptors, launch_prefill)
from kernels.checks import check_bool, check_int, check_number, check_tensor
from kernels.interpreter import exact_operand
from kernels.launch import cdiv, next_power_of_2
from kernels.platform import device_ints
from kernels.tuning import LaunchSpace, pow2_bucket

BLOCK = 64            # query rows a pattern block holds (and a program's rows)
LAST_Q = 64           # queries the estimate scores
SINK_COLUMNS = 30     # always-kept first keys
LOCAL_DIAGONALS = 100  # always-kept nearest diagonals


class SparseIndex(NamedTuple):
    """What vertical_slash_attention walks (int32, on q's device; b, h: batch, query head).
    intervals (B, H, NI, 2): merged diagonal intervals [first, last], sorted, the rest padding;
    n_intervals (B, H); columns (B, H, NC): sorted key columns, then padding (T);
    block_columns (B, H, blocks): how many columns lie at or before each block's last row;
    tokens: the T it was made for (its columns and ranges address keys 0 .. T - 1);
    pattern: what made it ("vertical-slash" or "a-shape"), part of the attention's launch key:
    a window of one long range and many scattered ones tune apart."""
    intervals: torch.Tensor
    n_intervals: torch.Tensor
    columns: torch.Tensor
    block_columns: torch.Tensor
    tokens: int
    pattern: str = "vertical-slash"

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self[:4]

    def to(self, device) -> "SparseIndex":
        return SparseIndex(*(t.to(device) for t in self.tensors()), self.tokens, self.pattern)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def selected_pairs(self) -> torch.Tensor:
        """(B, H) int64: the (query, key) pairs the pattern selects, causal (what the kernel
        attends; dense causal attention has T (T + 1) / 2)."""
        T = self.tokens
        nb = cdiv(T, BLOCK)
        m0 = torch.arange(nb, device=self.intervals.device, dtype=torch.long) * BLOCK
        m1 = (m0 + BLOCK - 1).clamp(max=T - 1)
        B, H = self.n_intervals.shape
        out = torch.zeros(B, H, dtype=torch.long, device=m0.device)
        for b in range(B):
            for h in range(H):
                n = int(self.n_intervals[b, h])
                a, last = (self.intervals[b, h, :n, i].long() for i in (0, 1))
                lo = (m0[:, None] - last[None, :]).clamp(min=0)                 # (blocks, intervals)
                e = torch.minimum(m0[:, None] + BLOCK - 1 - a[None, :], m1[:, None])  # the range's last key
                start, stop = torch.maximum(m0[:, None], lo), torch.minimum(m1[:, None], e)
                ramp = (stop - start + 1).clamp(min=0)                          # rows inside the range: r - lo + 1 keys
                out[b, h] += (ramp * ((start - lo + 1) + (stop - lo + 1)) // 2).sum()
                flat = (m1[:, None] - torch.maximum(m0[:, None], e + 1) + 1).clamp(min=0)  # rows past it: all of it
                out[b, h] += (flat * (e - lo + 1).clamp(min=0)).sum()
                count = self.block_columns[b, h].long()
                cols = self.columns[b, h, :int(count.max()) if nb else 0].long()
                if cols.numel():
                    listed = torch.arange(cols.numel(), device=m0.device)[None, :] < count[:, None]
                    x = m0[:, None] - cols[None, :]
                    j = torch.searchsorted((a - (BLOCK - 1)).contiguous(), x.contiguous(), right=True) - 1
                    covered = (j >= 0) & (last[j.clamp(min=0)] >= x) if n else torch.zeros_like(listed)
                    rows = (m1[:, None] - torch.maximum(m0[:, None], cols[None, :]) + 1).clamp(min=0)
                    out[b, h] += (rows * (listed & ~covered)).sum()
        return out


# ----------------------------------------------------------------------------- estimate

@triton.jit
def _estimate_stats_kernel(Q, K, M_PART, L_PART, stride_qb, stride_qt, stride_qh, stride_kb, stride_kn, stride_kh,
                           T, rows, q_heads, group, chunk, n_chunks, qk_scale,
                           HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """Row maximum and sum (base 2) of the last `rows` queries' scores over one chunk of keys."""
    bh = tl.program_id(0)
    c = tl.program_id(1)
    b = bh // q_heads
    h = bh % q_heads
    offs_r = tl.arange(0, ROWS)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_r < rows
    pos = T - rows + offs_r
    q = tl.load(Q + b.to(tl.int64) * stride_qb + h * stride_qh + pos[:, None].to(tl.int64) * stride_qt + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    K = K + b.to(tl.int64) * stride_kb + (h // group) * stride_kh
    m_i = tl.full([ROWS], float("-inf"), tl.float32)
    l_i = tl.zeros([ROWS], tl.float32)
    for n0 in range(c * chunk, tl.minimum(c * chunk + chunk, T), BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        k = tl.load(K + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :], mask=offs_n[:, None] < T, other=0.0)
        s = tl.dot(exact_operand(q), tl.trans(exact_operand(k))) * qk_scale
        s = tl.where((offs_n[None, :] <= pos[:, None]) & row_ok[:, None], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.math.exp2(m_i - m_use) + tl.sum(tl.math.exp2(s - m_use[:, None]), 1)
        m_i = m_new
    out = (bh * n_chunks + c) * ROWS + offs_r
    tl.store(M_PART + out, m_i)
    tl.store(L_PART + out, l_i)


@triton.jit
def _estimate_scores_kernel(Q, K, M, L, VERT, SLASH, stride_qb, stride_qt, stride_qh, stride_kb, stride_kn, stride_kh,
                            T, rows, q_heads, group, qk_scale,
                            HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, WINDOW: tl.constexpr):
    """Keys n0 .. n0 + BLOCK_N: their column sums; diagonals n0 .. n0 + BLOCK_N: their sums,
    from the window of keys those diagonals cross (row r's key on diagonal d is pos_r - d)."""
    bh = tl.program_id(0)
    n0 = tl.program_id(1) * BLOCK_N
    b = bh // q_heads
    h = bh % q_heads
    offs_r = tl.arange(0, ROWS)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_r < rows
    pos = T - rows + offs_r
    q = tl.load(Q + b.to(tl.int64) * stride_qb + h * stride_qh + pos[:, None].to(tl.int64) * stride_qt + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    m = tl.load(M + bh * ROWS + offs_r)
    inv_l = 1.0 / tl.load(L + bh * ROWS + offs_r)
    K = K + b.to(tl.int64) * stride_kb + (h // group) * stride_kh

    offs_n = n0 + tl.arange(0, BLOCK_N)
    k = tl.load(K + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :], mask=offs_n[:, None] < T, other=0.0)
    s = tl.dot(exact_operand(q), tl.trans(exact_operand(k))) * qk_scale
    seen = (offs_n[None, :] <= pos[:, None]) & row_ok[:, None]
    p = tl.where(seen, tl.math.exp2(s - m[:, None]) * inv_l[:, None], 0.0)
    tl.store(VERT + bh.to(tl.int64) * T + offs_n, tl.sum(p, 0), mask=offs_n < T)

    # diagonals n0 + dd: row r's key pos_r - n0 - dd = w0 + (r - dd + BLOCK_N - 1)
    w0 = T - rows - n0 - BLOCK_N + 1
    offs_w = w0 + tl.arange(0, WINDOW)  # WINDOW >= BLOCK_N + ROWS - 1
    kw = tl.load(K + offs_w[:, None].to(tl.int64) * stride_kn + offs_d[None, :],
                 mask=(offs_w[:, None] >= 0) & (offs_w[:, None] < T), other=0.0)
    sw = tl.dot(exact_operand(q), tl.trans(exact_operand(kw))) * qk_scale
    pw = tl.where((offs_w[None, :] >= 0) & (offs_w[None, :] <= pos[:, None]) & row_ok[:, None],
                  tl.math.exp2(sw - m[:, None]) * inv_l[:, None], 0.0)
    dd = tl.arange(0, BLOCK_N)
    on_diag = tl.gather(pw, offs_r[:, None] - dd[None, :] + BLOCK_N - 1, 1)
    tl.store(SLASH + bh.to(tl.int64) * T + n0 + dd, tl.sum(on_diag, 0), mask=n0 + dd < T)


def estimate_vertical_slash(q: torch.Tensor, k: torch.Tensor, *, scale: float | None = None,
                            last_q: int = LAST_Q) -> tuple[torch.Tensor, torch.Tensor]:
    """vertical (B, H, T) and slash (B, H, T), float32: the softmax probabilities of the last
    `last_q` queries (causal) summed per key and per diagonal, for every query head."""
    _check_qkv(q, k, k)
    if scale is not None:
        check_number("scale", scale)
    check_int("last_q", last_q, minimum=1)
    if last_q > 128:
        raise ValueError(f"last_q must be at most 128 (one tile of rows), got {last_q}")
    B, T, H, D = q.shape
    rows = min(last_q, T)
    ROWS = max(16, next_power_of_2(rows))
    vert = torch.zeros(B, H, T, dtype=torch.float32, device=q.device)
    slash = torch.zeros_like(vert)
    if B * H * T == 0:
        return vert, slash
    qk_scale = (D ** -0.5 if scale is None else float(scale)) * LOG2E
    block_n = 64
    n_chunks = max(1, min(cdiv(T, 4 * block_n), cdiv(512, B * H)))  # a few waves of programs
    chunk = cdiv(cdiv(T, n_chunks), block_n) * block_n
    n_chunks = cdiv(T, chunk)
    m_part = torch.empty(B * H, n_chunks, ROWS, dtype=torch.float32, device=q.device)
    l_part = torch.empty_like(m_part)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2))
    _estimate_stats_kernel[(B * H, n_chunks)](q, k, m_part, l_part, *strides, T, rows, H, H // k.shape[2], chunk,
                                              n_chunks, qk_scale, HEAD_DIM=D, ROWS=ROWS, BLOCK_N=block_n, num_warps=4)
    m = m_part.amax(1)
    m_use = torch.where(m == float("-inf"), torch.zeros_like(m), m)
    l = (l_part * torch.exp2(m_part - m_use[:, None])).sum(1)
    _estimate_scores_kernel[(B * H, cdiv(T, block_n))](q, k, m.contiguous(), l.contiguous(), vert, slash, *strides,
                                                              T, rows, H, H // k.shape[2], qk_scale, HEAD_DIM=D,
                                                              ROWS=ROWS, BLOCK_N=block_n,
                                                              WINDOW=next_power_of_2(block_n + ROWS - 1),
                                                              num_warps=4)
    return vert, slash


# ----------------------------------------------------------------------------- index

def vertical_slash_index(columns: torch.Tensor, diagonals: torch.Tensor, T: int,
                         n_columns: torch.Tensor | None = None, n_diagonals: torch.Tensor | None = None, *,
                         validate: bool = True) -> SparseIndex:
    """The index of a pattern from its columns (B, H, NC) and diagonals (B, H, ND), any order,
    each head's first n_columns[b, h] / n_diagonals[b, h] entries used (default all). Values
    must lie in [0, T) and not repeat within a head; validate=False skips that check (it reads
    the values back to the host) for callers whose values hold by construction (top-k indices)."""
    check_int("T", T, minimum=0)
    for name, t, n in (("columns", columns, n_columns), ("diagonals", diagonals, n_diagonals)):
        check_tensor(name, t, dtypes=(torch.int32, torch.int64), kernel_input=False)  # PyTorch only
        if t.dim() != 3:
            raise ValueError(f"{name} must be 3-D (batch, heads, count); got shape {tuple(t.shape)}")
        if n is not None and (n.shape != t.shape[:2] or n.dtype not in (torch.int32, torch.int64)):
            raise ValueError(f"the count of {name} must be an int tensor of shape {tuple(t.shape[:2])}")
    if columns.shape[:2] != diagonals.shape[:2] or columns.device != diagonals.device:
        raise ValueError(f"columns {tuple(columns.shape)} and diagonals {tuple(diagonals.shape)} must share "
                         "(batch, heads) and device")
    dev = columns.device
    B, H = columns.shape[:2]

    def used(t, n):
        t = t.long()
        if n is None:
            return t, torch.ones_like(t, dtype=torch.bool)
        return t, torch.arange(t.shape[-1], device=dev) < n.to(dev).long()[..., None]

    cols, col_ok = used(columns, n_columns)
    diags, diag_ok = used(diagonals, n_diagonals)
    for name, t, ok in (("columns", cols, col_ok), ("diagonals", diags, diag_ok)) if validate else ():
        if bool(((t < 0) | (t >= T))[ok].any()):
            raise ValueError(f"{name} must lie in [0, {T}) (T = {T})")
        s = torch.where(ok, t, T).sort(-1).values
        if bool(((s[..., 1:] == s[..., :-1]) & (s[..., 1:] < T)).any()):
            raise ValueError(f"{name} repeat within a head")

    cols = torch.where(col_ok, cols, T).sort(-1).values
    n_blocks = cdiv(T, BLOCK)
    last_rows = (torch.arange(n_blocks, device=dev) * BLOCK + BLOCK - 1).clamp(max=T - 1)  # never the padding (T)
    block_columns = torch.searchsorted(cols.reshape(B * H, cols.shape[-1]).contiguous(),
                                       last_rows.expand(B * H, n_blocks).contiguous(), right=True).view(B, H, n_blocks)

    # merge sorted diagonals whose block ranges touch: d_i - d_{i-1} <= BLOCK
    d = torch.where(diag_ok, diags, T).sort(-1).values
    valid = d < T
    gap = torch.diff(d, dim=-1, prepend=torch.full_like(d[..., :1], -2 * BLOCK))
    starts = valid & (gap > BLOCK)
    seg = torch.cumsum(starts.long(), -1) - 1
    ND = d.shape[-1]
    slot = torch.where(valid, seg, ND)  # padding into a dump slot
    first = torch.full((B, H, ND + 1), T, dtype=torch.long, device=dev).scatter_reduce(-1, slot, d, "amin")
    last = torch.full((B, H, ND + 1), -1, dtype=torch.long, device=dev).scatter_reduce(-1, slot, d, "amax")
    intervals = torch.stack([first[..., :ND], last[..., :ND]], -1) if ND else torch.zeros(B, H, 1, 2, dtype=torch.long,
                                                                                           device=dev)
    return SparseIndex(intervals.to(torch.int32).contiguous(), starts.sum(-1).to(torch.int32),
                       (cols if cols.shape[-1] else torch.full((B, H, 1), T, device=dev)).to(torch.int32).contiguous(),
                       block_columns.to(torch.int32).contiguous(), T)


def a_shape_index(batch: int, heads: int, T: int, sink: int = 128, window: int = 3968, device=None) -> SparseIndex:
    """MInference's A-shape as a vertical-slash pattern: the first `sink` keys (columns) and
    the nearest `window` diagonals, for every head."""
    for name, value in (("batch", batch), ("heads", heads), ("T", T), ("sink", sink), ("window", window)):
        check_int(name, value, minimum=0)
    sink, window = min(sink, T), min(window, T)
    cols = torch.arange(sink, device=device).expand(batch, heads, sink)
    diags = torch.arange(window, device=device).expand(batch, heads, window)
    return vertical_slash_index(cols, diags, T, validate=False)._replace(pattern="a-shape")


class WindowPattern(NamedTuple):
    """One A-shape shared by a group of heads, as sparse prefill attends it: the first `sink`
    keys and the `window` diagonals nearest each 64-row block (a_shape_index's keys) of T =
    `tokens`; the dense kernel's sliding window needs no index in memory."""
    sink: int
    window: int
    tokens: int

    def index(self, batch: int, heads: int, device=None) -> SparseIndex:
        """The same keys as a vertical-slash index (to count or mask them)."""
        return a_shape_index(batch, heads, self.tokens, self.sink, self.window, device=device)

    def nbytes(self) -> int:
        return 0


# ----------------------------------------------------------------------------- attention

@triton.jit
def _covered(DIAG, n_diag, x, PB: tl.constexpr, SEARCH_STEPS: tl.constexpr):
    """Whether the column at distance x = m0 - column from a pattern block's first row m0 lies
    inside one of the block's ranges: iff a_j - (PB - 1) <= x <= b_j for an interval j, and
    the merged intervals' extended starts are sorted, so one binary search finds the j."""
    lo = tl.zeros(x.shape, tl.int32)
    hi = tl.zeros(x.shape, tl.int32) + n_diag
    for _ in tl.static_range(SEARCH_STEPS):  # lo: how many intervals start (extended) at or before x
        mid = (lo + hi) // 2
        a_mid = tl.load(DIAG + 2 * mid, mask=mid < hi, other=0)
        go = (mid < hi) & (a_mid - (PB - 1) <= x)
        lo = tl.where(go, mid + 1, lo)
        hi = tl.where(go, hi, mid)
    j = lo - 1
    b_j = tl.load(DIAG + 2 * j + 1, mask=j >= 0, other=-1)
    return (j >= 0) & (b_j >= x)


@triton.jit
def _attend_columns(acc, m_i, l_i, q, K, V, COLS, count, c0, DIAG, n_diag, m0, rows_pos, stride_kn, stride_vn, offs_d,
                    qk_scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PB: tl.constexpr,
                    SEARCH_STEPS: tl.constexpr):
    """Columns c0 .. c0 + BLOCK_N of the program's list, gathered; a row skips those inside
    one of its pattern block's ranges (the ranges hold them). The program's rows are one
    or two pattern blocks of PB rows."""
    idx = c0 + tl.arange(0, BLOCK_N)
    listed = idx < count
    cols = tl.load(COLS + idx, mask=listed, other=0)
    if BLOCK_M == PB:
        keep = listed & ~_covered(DIAG, n_diag, m0 - cols, PB, SEARCH_STEPS)
        needed = keep
        visible = keep[None, :] & (cols[None, :] <= rows_pos[:, None])
    else:  # two pattern blocks: a row skips what its own block's ranges hold
        tl.static_assert(BLOCK_M == 2 * PB)
        first = _covered(DIAG, n_diag, m0 - cols, PB, SEARCH_STEPS)
        second = _covered(DIAG, n_diag, m0 + PB - cols, PB, SEARCH_STEPS)
        needed = listed & ~(first & second)  # loaded where some row's block takes it from the list
        hidden = tl.where((rows_pos < m0 + PB)[:, None], first[None, :], second[None, :])
        visible = needed[None, :] & ~hidden & (cols[None, :] <= rows_pos[:, None])
    k = tl.load(K + cols[:, None].to(tl.int64) * stride_kn + offs_d[None, :], mask=needed[:, None], other=0.0)
    v = tl.load(V + cols[:, None].to(tl.int64) * stride_vn + offs_d[None, :], mask=needed[:, None], other=0.0)
    s = tl.dot(exact_operand(q), tl.trans(exact_operand(k))) * qk_scale
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(s - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(exact_operand(p.to(v.dtype)), exact_operand(v), acc * alpha[:, None])
    return acc, m_new, l_i, tl.max(visible.to(tl.int32), 1) > 0


@triton.jit
def _program_rows(Q, K, V, HEADS, stride_qb, stride_qt, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
                  T, n_sel, group, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """A sparse attention program's work: grid axis 0 is (sequence, one of the n_sel heads
    the index covers), axis 1 the row block, the last first (they hold the most keys).
    Returns (bh, row block, sequence, query head, rows, head-dim offsets, rows inside T,
    the q tile, K and V at the sequence's KV head)."""
    bh = tl.program_id(0)
    pid_m = tl.num_programs(1) - 1 - tl.program_id(1)
    b = bh // n_sel
    h = tl.load(HEADS + bh % n_sel)
    kvh = h // group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q = tl.load(Q + b.to(tl.int64) * stride_qb + h * stride_qh + offs_m[:, None].to(tl.int64) * stride_qt
                + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    K = K + b.to(tl.int64) * stride_kb + kvh * stride_kh
    V = V + b.to(tl.int64) * stride_vb + kvh * stride_vh
    return bh, pid_m, b, h, offs_m, offs_d, row_ok, q, K, V


@triton.jit
def _program_range(DIAG, j, n_diag, m0, offs_m, T, BLOCK_M: tl.constexpr, PB: tl.constexpr):
    """The keys merged interval j (diagonals a_j .. b_j) gives the program's rows m0 ..
    m0 + BLOCK_M - 1, pattern block by pattern block (PB rows each), clipped to the sequence:
    (lo, end) the union of its blocks' ranges [lo, end), (all_lo, all_end) the keys every
    block's range holds, and each row's own range [rows_lo, rows_end). Past the intervals:
    empty."""
    ok = j < n_diag
    a = tl.load(DIAG + 2 * j, mask=ok, other=m0 + BLOCK_M)
    b = tl.load(DIAG + 2 * j + 1, mask=ok, other=0)
    block0 = m0 + (offs_m - m0) // PB * PB
    lo = tl.maximum(m0 - b, 0)
    end = tl.minimum(m0 + BLOCK_M - a, T)
    all_lo = tl.maximum(m0 + BLOCK_M - PB - b, 0)
    all_end = tl.minimum(m0 + PB - a, T)
    return lo, end, all_lo, all_end, tl.maximum(block0 - b, 0), tl.minimum(block0 + PB - a, T)


@triton.jit
def _attend_range_tile(acc, m_i, l_i, q, K, V, desc_k, desc_v, tma_row, tma_col, rows_pos, n0, kv_len, clean,
                       stride_kn, stride_vn, offs_d, qk_scale, BLOCK_N: tl.constexpr, USE_TMA: tl.constexpr,
                       POS_SCALE: tl.constexpr, rows_lo, ROWS_LO: tl.constexpr):
    """_attend_block's masked tile of a range walk, whose score mask is skipped where `clean`
    (every key of the tile visible to every row): one masked load of each per tile whatever
    `clean` says, and the branch holds the mask alone (Triton 3.6 fails to pipeline a loop
    whose branch holds the products' softmax)."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    key_ok = offs_n < kv_len
    k = _load_block(K + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :], desc_k, tma_row, tma_col, n0,
                    key_ok, not USE_TMA, USE_TMA)
    qk = tl.dot(exact_operand(q), tl.trans(exact_operand(k)))
    # a positive scale applies after the mask and the max, one fused multiply-add a score
    s = qk if POS_SCALE else qk * qk_scale
    if not clean:  # rows_pos < kv_len: the causal bound holds the range's end too
        visible = offs_n[None, :] <= rows_pos[:, None]
        if ROWS_LO:
            visible = visible & (offs_n[None, :] >= rows_lo[:, None])
        s = tl.where(visible, s, float("-inf"))
    if POS_SCALE:
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s * qk_scale - m_use[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_use[:, None])
    v = _load_block(V + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :], desc_v, tma_row, tma_col, n0,
                    key_ok, True, USE_TMA)
    acc, l_i = _accumulate(acc, m_i, l_i, p, m_use, v)
    return acc, m_new, l_i


@triton.jit
def _vertical_slash_kernel(Q, K, V, desc_k, desc_v, O, LSE, HEADS, DIAG, N_DIAG, COLS, BLOCK_COLS,
                           stride_qb, stride_qt, stride_qh, stride_kb, stride_kn, stride_kh,
                           stride_vb, stride_vn, stride_vh, stride_ob, stride_ot, stride_oh,
                           T, q_heads, n_sel, group, qk_scale, max_diag, max_cols, n_blocks,
                           HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           SEARCH_STEPS: tl.constexpr, WRITE_LSE: tl.constexpr, POS_SCALE: tl.constexpr,
                           FLAT: tl.constexpr = False, PB: tl.constexpr = 64, USE_TMA: tl.constexpr = False):
    # a program takes BLOCK_M // PB of the pattern's blocks (PB rows each): a row sees its own
    # block's ranges (a per-row lower bound where the blocks' ranges differ) and columns;
    # USE_TMA: the ranges' key tiles through TMA (K and V as (batch * T, kv_heads * head_dim)
    # matrices), the gathered columns by pointer loads
    bh, pid_m, b, h, offs_m, offs_d, row_ok, q, K, V = _program_rows(
        Q, K, V, HEADS, stride_qb, stride_qt, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh, T, n_sel, group,
        HEAD_DIM, BLOCK_M)
    m0 = pid_m * BLOCK_M
    tma_row = b * T
    tma_col = (h // group) * HEAD_DIM
    DIAG = DIAG + bh.to(tl.int64) * max_diag * 2
    n_diag = tl.load(N_DIAG + bh)
    ROWS_LO: tl.constexpr = BLOCK_M > PB

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # which rows see a key at all, from the pattern alone: a row whose every score is -inf
    # or NaN still divides (NaN, as the math says); only a row that sees none gets zeros
    seen = tl.zeros([BLOCK_M], tl.int1)
    if FLAT:
        # One loop over the program's key tiles, across its ranges, so loads run ahead from one
        # range into the next (a range of a tile or two otherwise restarts the pipeline);
        # every tile's loads masked. A range is empty only when its diagonals lie past the program's
        # rows, and the intervals are sorted: the empty ones come last.
        tiles = 0
        for j in range(0, n_diag):
            lo, end, _, _, rows_lo, rows_end = _program_range(DIAG, j, n_diag, m0, offs_m, T, BLOCK_M, PB)
            seen = seen | ((rows_lo <= offs_m) & (rows_lo < rows_end))
            tiles += tl.where(lo < end, tl.cdiv(end - lo, BLOCK_N), 0)
        j = 0
        n0, end, all_lo, all_end, rows_lo, rows_end = _program_range(DIAG, j, n_diag, m0, offs_m, T, BLOCK_M, PB)
        for _ in range(0, tiles):
            # a tile every row sees whole (inside every block's range, before the first row)
            # skips the score mask, as the dense kernel's inner tiles do
            clean = (n0 >= all_lo) & (n0 + BLOCK_N <= tl.minimum(all_end, m0 + 1))
            acc, m_i, l_i = _attend_range_tile(acc, m_i, l_i, q, K, V, desc_k, desc_v, tma_row, tma_col,
                                               tl.minimum(offs_m, rows_end - 1), n0, end, clean, stride_kn,
                                               stride_vn, offs_d, qk_scale, BLOCK_N, USE_TMA, POS_SCALE, rows_lo,
                                               ROWS_LO)
            step = n0 + BLOCK_N >= end  # the range's last tile: on to the next interval
            j += step.to(tl.int32)
            lo_next, end_next, all_lo_next, all_end_next, lo_rows_next, end_rows_next = _program_range(
                DIAG, j, n_diag, m0, offs_m, T, BLOCK_M, PB)
            n0 = tl.where(step, lo_next, n0 + BLOCK_N)
            end = tl.where(step, end_next, end)
            all_lo = tl.where(step, all_lo_next, all_lo)
            all_end = tl.where(step, all_end_next, all_end)
            rows_lo = tl.where(step, lo_rows_next, rows_lo)
            rows_end = tl.where(step, end_rows_next, rows_end)
    else:
        for j in range(0, n_diag):
            lo, end, all_lo, all_end, rows_lo, rows_end = _program_range(DIAG, j, n_diag, m0, offs_m, T, BLOCK_M, PB)
            seen = seen | ((rows_lo <= offs_m) & (rows_lo < rows_end))
            last = tl.minimum(offs_m, rows_end - 1)  # each row's last key in the range
            # keys only the first blocks' rows see (several pattern blocks a program): masked
            head_end = tl.minimum(all_lo, end)
            for n0 in range(lo, head_end, BLOCK_N):
                acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, K, V, desc_k, desc_v, tma_row, tma_col, last, n0,
                                              head_end, stride_kn, stride_vn, offs_d, qk_scale, BLOCK_N, True, True,
                                              USE_TMA, POS_SCALE, rows_lo, ROWS_LO)
            # keys every row's range holds, up to the program's first row: no mask
            n_full = tl.maximum(tl.minimum(all_end, m0 + 1) - all_lo, 0) // BLOCK_N
            for t in range(0, n_full):
                acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, K, V, desc_k, desc_v, tma_row, tma_col, last,
                                              all_lo + t * BLOCK_N, end, stride_kn, stride_vn, offs_d, qk_scale,
                                              BLOCK_N, True, False, USE_TMA, POS_SCALE, rows_lo, False)
            for n0 in range(tl.maximum(head_end, all_lo + n_full * BLOCK_N), end, BLOCK_N):
                acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, K, V, desc_k, desc_v, tma_row, tma_col, last, n0,
                                              end, stride_kn, stride_vn, offs_d, qk_scale, BLOCK_N, True, True,
                                              USE_TMA, POS_SCALE, rows_lo, ROWS_LO)
    # the columns at or before the program's last row: those of its last pattern block
    count = tl.load(BLOCK_COLS + bh * n_blocks + tl.minimum(pid_m * (BLOCK_M // PB) + BLOCK_M // PB - 1, n_blocks - 1))
    COLS = COLS + bh.to(tl.int64) * max_cols
    # never pipelined: prefetching the gathered columns' binary search spills registers
    COLS_N: tl.constexpr = BLOCK_N if BLOCK_M == PB else 32  # two blocks' masks: 32 columns keep the registers
    for c0 in tl.range(0, count, COLS_N, num_stages=1):
        acc, m_i, l_i, seen_here = _attend_columns(acc, m_i, l_i, q, K, V, COLS, count, c0, DIAG, n_diag, m0, offs_m,
                                                   stride_kn, stride_vn, offs_d, qk_scale, BLOCK_M, COLS_N, PB,
                                                   SEARCH_STEPS)
        seen = seen | seen_here

    out = tl.where(seen[:, None], acc / l_i[:, None], 0.0)  # a row that no selected key reaches: zeros
    tl.store(O + b.to(tl.int64) * stride_ob + h * stride_oh + offs_m[:, None].to(tl.int64) * stride_ot
             + offs_d[None, :], out.to(O.dtype.element_ty), mask=row_ok[:, None])
    if WRITE_LSE:
        lse = tl.where(m_i == float("inf"), float("inf"), (m_i + tl.math.log2(l_i)) / 1.4426950408889634)
        lse = tl.where(seen, lse, float("-inf"))
        tl.store(LSE + (b * q_heads + h).to(tl.int64) * T + offs_m, lse, mask=row_ok)


def _check_qkv(q, k, v, kernel_input=True):
    check_qkv_tensors(q, k, v, kernel_input)
    B, T, Hq, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[1] != T or k.shape[3] != D:
        raise ValueError(f"k and v must have shape (batch={B}, tokens={T}, kv_heads, head_dim={D}) (a prefill from "
                         f"scratch); got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[2] == 0 or Hq % k.shape[2]:
        raise ValueError(f"q's {Hq} heads are not a multiple of the {k.shape[2]} KV heads")


# One stage by default (the measured one); more pipeline only the range loops, and keep
# their registers with 8 warps (tests/correctness/sm90_compile.py checks the default)
VS_STAGES = 1


def _vs_default(head_dim: int, tokens: int, pattern: str) -> dict:
    """A program a pattern block (BLOCK_M = 64 rows), 64-key tiles, 4 warps, no pipelining
    (see VS_STAGES), a loop per range (flat: one loop over all the program's range tiles,
    each load masked), keys by pointer loads (tma: the ranges' tiles through TMA, Hopper and newer)."""
    return dict(BLOCK_M=BLOCK, BLOCK_N=64, num_warps=4, num_stages=VS_STAGES, flat=False, tma=False)


def _vs_candidates(head_dim: int, tokens: int, pattern: str) -> list[dict]:
    per_range = [dict(BLOCK_N=bn, num_warps=w, num_stages=st) for bn in (32, 64, 128) for w in (4, 8) for st in (1, 2)]
    flat = [dict(BLOCK_N=bn, num_warps=w, num_stages=st, flat=True) for bn in (64, 128) for w in (4, 8) for st in (2, 3)]
    # two pattern blocks a program: 128-row products, as the dense kernel's, at the cost of
    # masking the keys where the two blocks' ranges differ; 8 warps (4 spill registers, as do
    # 128-key tiles walked a loop per range: tests/correctness/sm90_compile.py)
    pairs = [dict(BLOCK_M=2 * BLOCK, BLOCK_N=64, num_warps=8, num_stages=st, flat=f) for st in (2, 3)
             for f in (False, True)] + [dict(BLOCK_M=2 * BLOCK, BLOCK_N=128, num_warps=8, num_stages=2, flat=True)]
    # the ranges' tiles through TMA, the loads that made the dense kernel's best launch; walked
    # a loop per range too, whose inner tiles go unmasked as the dense kernel's (A-shape's window)
    tma = [dict(BLOCK_N=64, num_warps=w, num_stages=st, flat=f, tma=True) for w in (4, 8) for st in (2, 3)
           for f in (True, False)]
    tma += [dict(BLOCK_M=2 * BLOCK, BLOCK_N=64, num_warps=8, num_stages=st, flat=True, tma=True) for st in (2, 3)]
    return per_range + flat + pairs + tma


def _bs_default(head_dim: int, tokens: int) -> dict:
    return dict(num_warps=4, num_stages=2)


def _bs_candidates(head_dim: int, tokens: int) -> list[dict]:
    return [dict(num_warps=w, num_stages=st) for w in (4, 8) for st in (1, 2, 3)]


def _check_launch(cfg: dict) -> None:
    check_tile_config(cfg)
    if "flat" in cfg and not isinstance(cfg["flat"], bool):
        raise ValueError(f"flat must be True or False, got {cfg['flat']!r}")
    for name, allowed in (("num_warps", (1, 2, 4, 8, 16)), ("num_stages", (1, 2, 3, 4, 5))):
        if cfg[name] not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {cfg[name]!r}")


def _check_vs_launch(cfg: dict) -> None:
    _check_launch(cfg)
    if "BLOCK_M" in cfg and cfg["BLOCK_M"] not in (BLOCK, 2 * BLOCK):
        raise ValueError(f"BLOCK_M (a program's rows) must be one or two of the pattern's {BLOCK}-row blocks: "
                         f"{BLOCK} or {2 * BLOCK}, got {cfg['BLOCK_M']!r}")


# The attention kernels' launches, tuned per GPU (python -m harness tune attention); the
# block-sparse kernel's BLOCK_M is the pattern's block
VS_LAUNCH = LaunchSpace("vertical_slash_attention", _vs_default, _vs_candidates, _check_vs_launch)
BS_LAUNCH = LaunchSpace("block_sparse_attention", _bs_default, _bs_candidates, _check_launch)


def _launch_key(q: torch.Tensor) -> dict:
    return dict(head_dim=q.shape[3], tokens=pow2_bucket(q.shape[1]))


def _launch_vertical_slash(q, k, v, index, heads, out, lse, scale, config=None):
    """The kernel over the query heads `heads` (int32) that the index's rows cover, in order."""
    cfg = VS_LAUNCH.choose(q.device, dict(_launch_key(q), pattern=index.pattern), config)
    B, T, Hq, D = q.shape
    n_sel, n_blocks, max_diag = heads.numel(), cdiv(T, BLOCK), index.intervals.shape[2]
    tma, desc_k, desc_v = kv_descriptors(k, v, cfg, config)
    _vertical_slash_kernel[(B * n_sel, cdiv(T, cfg["BLOCK_M"]))](
        q, k, v, desc_k, desc_v, out, lse if lse is not None else out, heads, index.intervals, index.n_intervals,
        index.columns, index.block_columns, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
        k.stride(2), v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        T, Hq, n_sel, Hq // k.shape[2], scale * LOG2E, max_diag, index.columns.shape[2], n_blocks,
        HEAD_DIM=D, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], SEARCH_STEPS=max(1, max_diag.bit_length()),
        WRITE_LSE=lse is not None, POS_SCALE=scale > 0, FLAT=cfg["flat"], PB=BLOCK, USE_TMA=tma,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])


def vertical_slash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: SparseIndex, *,
                             scale: float | None = None, return_lse: bool = False, config: dict | None = None):
    """Causal attention of q (B, T, Hq, D) over exactly the keys `index` selects (k, v
    (B, T, Hkv, D), a prefill from scratch). Returns out (B, T, Hq, D), or (out, lse
    (B, Hq, T) float32; -inf and zeros where a row sees no key). config: launch options
    (BLOCK_M, BLOCK_N, num_warps, num_stages, flat, tma) over the GPU's tuned ones. The
    index's values are checked as vertical_slash_index makes them (one read back to the host)."""
    _check_qkv(q, k, v)
    if scale is not None:
        check_number("scale", scale)
    check_bool("return_lse", return_lse)
    B, T, Hq, D = q.shape
    n_blocks = cdiv(T, BLOCK)
    shapes = {"intervals": (B, Hq, None, 2), "n_intervals": (B, Hq), "columns": (B, Hq, None),
              "block_columns": (B, Hq, n_blocks)}
    if not isinstance(index, SparseIndex):
        raise TypeError(f"index must be a SparseIndex (vertical_slash_index), got {type(index).__name__}")
    if index.tokens != T:
        raise ValueError(f"the index was made for {index.tokens} tokens; q has {T}")
    for name, want in shapes.items():
        t = getattr(index, name)
        if (t.dtype != torch.int32 or t.device != q.device or not t.is_contiguous() or t.dim() != len(want)
                or any(w is not None and w != s for w, s in zip(want, t.shape))):
            shape = ", ".join("*" if w is None else str(w) for w in want)
            raise ValueError(f"index.{name} must be a contiguous int32 tensor of shape ({shape}) on {q.device}; "
                             f"got {t.dtype} {tuple(t.shape)} on {t.device}")
    _check_sparse_index_values(index)
    return _attend_vertical_slash(q, k, v, index, scale, return_lse, config)


def _check_sparse_index_values(index: SparseIndex) -> None:
    """What the kernel trusts in an index it is handed (one read back to the host): counts
    within the tensors (else it reads past them), intervals inside [0, T), sorted and at
    least BLOCK diagonals apart (closer ones give a block overlapping ranges: keys counted
    twice), columns sorted without repeats and padded with T, and each block's column count
    the number of columns at or before its last row."""
    T, (B, H, NI, _), NC = index.tokens, index.intervals.shape, index.columns.shape[2]
    n = index.n_intervals.long()
    first, last = index.intervals[..., 0].long(), index.intervals[..., 1].long()
    listed = torch.arange(NI, device=n.device) < n[..., None]
    cols = index.columns.long()
    nb = index.block_columns.shape[2]
    last_rows = (torch.arange(nb, device=cols.device) * BLOCK + BLOCK - 1).clamp(max=T - 1)
    counts = torch.searchsorted(cols.reshape(B * H, NC).contiguous(), last_rows.expand(B * H, nb).contiguous(),
                                right=True).view(B, H, nb)
    problems = {
        f"n_intervals must lie in [0, {NI}] (the intervals it holds)": (n < 0) | (n > NI),
        f"each listed interval [first, last] must have 0 <= first <= last < T = {T}":
            listed & ((first < 0) | (first > last) | (last >= T)),
        f"the intervals must be sorted and merged: each first at least {BLOCK} past the last before it":
            listed[..., 1:] & (first[..., 1:] - last[..., :-1] < BLOCK),
        f"columns must lie in [0, {T}] (T = {T} pads)": (cols < 0) | (cols > T),
        "columns must be sorted without repeats, padding (T) last":
            (cols[..., 1:] <= cols[..., :-1]) & ~((cols[..., 1:] == T) & (cols[..., :-1] == T)),
        "block_columns must count the columns at or before each block's last row": index.block_columns != counts}
    _raise_first(problems)


def _raise_first(problems: dict) -> None:
    """problems: message -> boolean tensor of where it holds; one read back to the host for all."""
    found = torch.stack([bad.any() for bad in problems.values()]).tolist()
    for message, bad in zip(problems, found):
        if bad:
            raise ValueError(f"index: {message}")


def _attend_vertical_slash(q, k, v, index, scale, return_lse, config=None):
    B, T, Hq, D = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(B, Hq, T, dtype=torch.float32, device=q.device) if return_lse else None
    if B * T * Hq:
        heads = torch.arange(Hq, dtype=torch.int32, device=q.device)
        _launch_vertical_slash(q, k, v, index, heads, out, lse, D ** -0.5 if scale is None else float(scale), config)
    return (out, lse) if return_lse else out


def vertical_slash_pattern(vertical: torch.Tensor, slash: torch.Tensor, n_columns, n_diagonals, keep=None):
    """The chosen columns and diagonals of each head: the top n_columns of `vertical` and
    top n_diagonals of `slash` (ints, lists of one per head, or (B, H) tensors; a tensor is
    read back to the host for its largest count), the first
    SINK_COLUMNS keys and LOCAL_DIAGONALS diagonals kept first (on the heads where the
    boolean (H,) `keep` is true; default all). Returns (columns, n_columns, diagonals,
    n_diagonals) for vertical_slash_index."""
    B, H, T = vertical.shape
    dev = vertical.device

    def counts(n, name):  # (B, H) counts on the device and their maximum, the top-k width
        if isinstance(n, torch.Tensor):
            if n.shape != (B, H):
                raise ValueError(f"{name} must be an int, a list of {H} ints or a ({B}, {H}) tensor; "
                                 f"got shape {tuple(n.shape)}")
            n = n.to(dev).long()
            if bool((n < 0).any()):  # reads back to the host: lists and ints avoid it
                raise ValueError(f"{name} must be non-negative")
            return n.clamp(max=T), min(int(n.max()), T) if n.numel() else 0
        if isinstance(n, (list, tuple)):
            if len(n) != H:
                raise ValueError(f"{name} lists {len(n)} counts for {H} heads")
            n = [min(check_int(name, x, minimum=0), T) for x in n]
            return device_ints(n, dev).expand(B, H), max(n, default=0)
        n = min(check_int(name, n, minimum=0), T)
        return torch.full((B, H), n, dtype=torch.long, device=dev), n

    (nc, width_c), (nd, width_d) = counts(n_columns, "n_columns"), counts(n_diagonals, "n_diagonals")
    keep = torch.ones(H, dtype=torch.bool, device=dev) if keep is None else keep.to(dev, non_blocking=True)
    # a NaN estimate (a NaN in q or k) ranks last: topk puts NaN above the +inf of the kept keys
    vert = vertical.masked_fill(vertical.isnan(), float("-inf"))
    vert[..., :SINK_COLUMNS] = torch.where(keep[:, None], float("inf"), vert[..., :SINK_COLUMNS])
    sl = slash.masked_fill(slash.isnan(), float("-inf"))
    sl[..., :LOCAL_DIAGONALS] = torch.where(keep[:, None], float("inf"), sl[..., :LOCAL_DIAGONALS])
    cols = torch.topk(vert, width_c, dim=-1).indices
    diags = torch.topk(sl, width_d, dim=-1).indices
    return cols, nc, diags, nd


def vertical_slash_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_columns, n_diagonals, *,
                           scale: float | None = None, return_lse: bool = False):
    """Estimate, choose (n_columns, n_diagonals per head: MInference's (vertical, slash)
    budgets), index and attend; see the module doc."""
    _check_qkv(q, k, v)
    check_bool("return_lse", return_lse)
    vertical, slash = estimate_vertical_slash(q, k, scale=scale)
    cols, nc, diags, nd = vertical_slash_pattern(vertical, slash, n_columns, n_diagonals)
    index = vertical_slash_index(cols, diags, q.shape[1], nc, nd, validate=False)  # top-k indices: valid
    return _attend_vertical_slash(q, k, v, index, scale, return_lse)


# ----------------------------------------------------------------------------- block-sparse

class BlockIndex(NamedTuple):
    """Block-sparse selection: blocks (B, H, query blocks, K) sorted key-block numbers of each
    BLOCK-row query block (padding past its count), counts (B, H, query blocks); tokens: T."""
    blocks: torch.Tensor
    counts: torch.Tensor
    tokens: int

    def to(self, device) -> "BlockIndex":
        return BlockIndex(self.blocks.to(device), self.counts.to(device), self.tokens)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.blocks, self.counts))

    def selected_pairs(self) -> torch.Tensor:
        """(B, H) int64: the (query, key) pairs the listed blocks hold, causal."""
        T, nb = self.tokens, self.blocks.shape[2]
        rows = torch.full((nb,), BLOCK, dtype=torch.long, device=self.blocks.device)
        if nb:
            rows[-1] = T - (nb - 1) * BLOCK
        kb = self.blocks.long()
        listed = torch.arange(kb.shape[-1], device=kb.device) < self.counts.long()[..., None]
        qb = torch.arange(nb, device=kb.device)[:, None]
        before = listed & (kb < qb)                     # whole key blocks: every row sees all BLOCK keys
        diag = listed & (kb == qb)                      # the diagonal block: row i sees i + 1 keys
        r = rows[:, None]
        return ((before * r * BLOCK) + (diag * r * (r + 1) // 2)).sum(dim=(-1, -2))


def block_sparse_index(q: torch.Tensor, k: torch.Tensor, top_k) -> BlockIndex:
    """MInference's block-sparse estimate: BLOCK-token means of q and k, their products per
    (query block, key block), causal, and the top_k key blocks of each query block (an int,
    or a list of one per query head), the diagonal block and the first block (the sink)
    always among them, in that order (a budget of one keeps the diagonal). A block whose
    score is NaN (a NaN in q or k) is not chosen. PyTorch only: q and k may lie on any device."""
    _check_qkv(q, k, k, kernel_input=False)
    B, T, H, D = q.shape
    per_head = list(top_k) if isinstance(top_k, (list, tuple)) else [top_k] * H
    if len(per_head) != H:
        raise ValueError(f"top_k lists {len(per_head)} budgets for {H} query heads")
    per_head = [check_int("top_k", x, minimum=1) for x in per_head]
    nb = cdiv(T, BLOCK)
    pad = nb * BLOCK - T

    def pooled(x):  # (B, nb, heads, D) means over each block's real tokens
        # summed in float32 from the input dtype: no float32 copy of q (17 GB at 1M tokens)
        x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x
        x = x.reshape(B, nb, BLOCK, x.shape[2], D).sum(2, dtype=torch.float32)
        # tokens per block, from the device (setting n[-1] from Python copied a scalar: a sync)
        n = (T - torch.arange(nb, device=x.device, dtype=torch.float32) * BLOCK).clamp(max=BLOCK)
        return x / n[None, :, None, None]

    pq, pk = pooled(q), pooled(k).repeat_interleave(H // k.shape[2], dim=2)
    qb, kb = torch.arange(nb, device=q.device)[:, None], torch.arange(nb, device=q.device)[None, :]
    scores = torch.einsum("bqhd,bkhd->bhqk", pq, pk)  # in place below: no second (heads x nb x nb) copy
    scores.masked_fill_((kb > qb) | scores.isnan(), float("-inf"))  # a NaN score (a NaN in q or k): not chosen
    # the diagonal first, then the sink, always: a budget of one keeps the diagonal
    scores.masked_fill_(kb == 0, torch.finfo(scores.dtype).max)
    scores.masked_fill_(kb == qb, float("inf"))
    kk = min(max(per_head), nb)
    top = torch.topk(scores, kk, dim=-1)  # best first: the sink and the diagonal lead
    rank_ok = torch.arange(kk, device=q.device) < device_ints(per_head, q.device)[:, None, None]
    chosen = torch.where((top.values == float("-inf")) | ~rank_ok, nb, top.indices)  # past the diagonal or the budget
    blocks = chosen.sort(-1).values
    counts = (blocks < nb).sum(-1)
    return BlockIndex(blocks.to(torch.int32).contiguous(), counts.to(torch.int32).contiguous(), T)


@triton.jit
def _block_sparse_kernel(Q, K, V, O, LSE, HEADS, BLOCKS, COUNTS,
                         stride_qb, stride_qt, stride_qh, stride_kb, stride_kn, stride_kh,
                         stride_vb, stride_vn, stride_vh, stride_ob, stride_ot, stride_oh,
                         T, q_heads, n_sel, group, qk_scale, top_k, n_blocks,
                         HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, WRITE_LSE: tl.constexpr,
                         POS_SCALE: tl.constexpr):
    bh, pid_m, b, h, offs_m, offs_d, row_ok, q, K, V = _program_rows(
        Q, K, V, HEADS, stride_qb, stride_qt, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh, T, n_sel, group,
        HEAD_DIM, BLOCK_M)
    row = (bh * n_blocks + pid_m).to(tl.int64)
    count = tl.load(COUNTS + row)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for i in range(0, count):
        kb = tl.load(BLOCKS + row * top_k + i)
        if kb < pid_m:  # wholly before every row: no mask
            acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, K, V, K, V, 0, 0, offs_m, kb * BLOCK_M, T, stride_kn,
                                          stride_vn, offs_d, qk_scale, BLOCK_M, True, False, False, POS_SCALE,
                                          offs_m, False)
        else:  # the diagonal block: causal, and the sequence's end
            acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, K, V, K, V, 0, 0, offs_m, kb * BLOCK_M, T, stride_kn,
                                          stride_vn, offs_d, qk_scale, BLOCK_M, True, True, False, POS_SCALE,
                                          offs_m, False)
    out = acc / l_i[:, None]  # every row sees its diagonal block, its own key at least
    tl.store(O + b.to(tl.int64) * stride_ob + h * stride_oh + offs_m[:, None].to(tl.int64) * stride_ot
             + offs_d[None, :], out.to(O.dtype.element_ty), mask=row_ok[:, None])
    if WRITE_LSE:
        lse = tl.where(m_i == float("inf"), float("inf"), (m_i + tl.math.log2(l_i)) / 1.4426950408889634)
        tl.store(LSE + (b * q_heads + h).to(tl.int64) * T + offs_m, lse, mask=row_ok)


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: BlockIndex, *,
                           scale: float | None = None, return_lse: bool = False, config: dict | None = None):
    """Causal attention of q over the key blocks `index` selects for each BLOCK-row query block
    (a prefill from scratch); every block must hold its diagonal block (block_sparse_index
    keeps it). Returns out, or (out, lse (B, Hq, T) float32). config: launch options
    (num_warps, num_stages) over the GPU's tuned ones. The index's values are checked (one
    read back to the host)."""
    _check_qkv(q, k, v)
    if scale is not None:
        check_number("scale", scale)
    check_bool("return_lse", return_lse)
    if not isinstance(index, BlockIndex):
        raise TypeError(f"index must be a BlockIndex (block_sparse_index), got {type(index).__name__}")
    B, T, Hq, D = q.shape
    nb = cdiv(T, BLOCK)
    if index.tokens != T:
        raise ValueError(f"the index was made for {index.tokens} tokens; q has {T}")
    for name, t, shape in (("blocks", index.blocks, (B, Hq, nb)), ("counts", index.counts, (B, Hq, nb))):
        if (t.dtype != torch.int32 or t.device != q.device or not t.is_contiguous() or tuple(t.shape[:3]) != shape
                or t.dim() != (4 if name == "blocks" else 3)):
            raise ValueError(f"index.{name} must be a contiguous int32 tensor of shape ({B}, {Hq}, {nb}{', *' if name == 'blocks' else ''}) "
                             f"on {q.device}; got {t.dtype} {tuple(t.shape)} on {t.device}")
    _check_block_index_values(index)
    out = torch.empty_like(q)
    lse = torch.empty(B, Hq, T, dtype=torch.float32, device=q.device) if return_lse else None
    if B * T * Hq:
        heads = torch.arange(Hq, dtype=torch.int32, device=q.device)
        _launch_block_sparse(q, k, v, index, heads, out, lse, D ** -0.5 if scale is None else float(scale), config)
    return (out, lse) if return_lse else out


def _check_block_index_values(index: BlockIndex) -> None:
    """What the kernel trusts in a block index it is handed (one read back to the host): each
    query block's count within [1, K] (else it reads past the list), its listed key blocks
    sorted without repeats (a repeat is attended twice) and at most itself, the last its own
    diagonal block (which gives every row a key)."""
    kb, c = index.blocks.long(), index.counts.long()
    nb, K = kb.shape[2], kb.shape[3]
    if nb == 0:
        return
    listed = torch.arange(K, device=kb.device) < c[..., None]
    qb = torch.arange(nb, device=kb.device)[:, None]
    last = kb.gather(-1, (c - 1).clamp(0, max(K - 1, 0))[..., None]) if K else qb[None, None] - 1
    problems = {
        f"counts must lie in [1, {K}] (the blocks each query block lists)": (c < 1) | (c > K),
        "listed key blocks must lie in [0, query block]": listed & ((kb < 0) | (kb > qb)),
        "listed key blocks must be sorted without repeats": listed[..., 1:] & (kb[..., 1:] <= kb[..., :-1]),
        "each query block must list its own (diagonal) block last": last.squeeze(-1) != qb.squeeze(-1)}
    _raise_first(problems)


def _launch_block_sparse(q, k, v, index, heads, out, lse, scale, config=None):
    """The kernel over the query heads `heads` (int32) that the index's rows cover, in order."""
    cfg = BS_LAUNCH.choose(q.device, _launch_key(q), config)
    B, T, Hq, D = q.shape
    n_sel, nb = heads.numel(), cdiv(T, BLOCK)
    _block_sparse_kernel[(B * n_sel, nb)](
        q, k, v, out, lse if lse is not None else out, heads, index.blocks, index.counts,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        T, Hq, n_sel, Hq // k.shape[2], scale * LOG2E, index.blocks.shape[3], nb,
        HEAD_DIM=D, BLOCK_M=BLOCK, WRITE_LSE=lse is not None, POS_SCALE=scale > 0, num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"])


# ----------------------------------------------------------------------------- entry point

PATTERN_TYPES = ("vertical_and_slash", "stream_llm", "block_sparse")  # MInference's names
DEFAULT_PATTERN = ("vertical_and_slash", 1000, 6096)  # MInference's default budget
DENSE_BELOW = 32768  # prompts shorter than this run dense (prefill_attention): below it dense was faster on an H100


def head_patterns(pattern, heads: int) -> list[tuple[str, int, int]]:
    """Each head's (type, a, b) from one layer of MInference's configuration, {head: [type, a,
    b, score]} with string or int keys (heads not listed: DEFAULT_PATTERN): vertical_and_slash
    (a columns, b diagonals), stream_llm (a sink keys, b local diagonals: A-shape),
    block_sparse (a key blocks per query block)."""
    if pattern is None:
        pattern = {}
    if not isinstance(pattern, dict):
        raise TypeError(f"pattern must be a dict {{head: [type, a, b, score]}}, got {type(pattern).__name__}")
    out = [DEFAULT_PATTERN] * heads
    for key, spec in pattern.items():
        try:
            h = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"pattern key {key!r} is not a head number") from None
        if not 0 <= h < heads:
            raise ValueError(f"pattern names head {h}; q has {heads} heads")
        if not isinstance(spec, (list, tuple)) or len(spec) < 3 or spec[0] not in PATTERN_TYPES:
            raise ValueError(f"head {h}'s pattern must be [type, a, b, ...] with type one of {PATTERN_TYPES}; "
                             f"got {spec!r}")
        a, b = (check_int(f"head {h}'s {name}", v, minimum=0) for name, v in (("a", spec[1]), ("b", spec[2])))
        if spec[0] == "block_sparse" and a < 1:
            raise ValueError(f"head {h}'s block_sparse pattern keeps {a} blocks; it needs at least 1")
        out[h] = (spec[0], a, b)
    return out


def pattern_indexes(q: torch.Tensor, k: torch.Tensor, specs: list, scale: float | None = None) -> dict:
    """The indexes sparse_prefill builds for q, k and each head's (type, a, b) (head_patterns):
    {"a_shape": (heads, WindowPattern) for the stream_llm heads where they share one (sink,
    window), "vertical_slash": (heads, SparseIndex) for the vertical_and_slash heads and any
    other stream_llm ones, "block_sparse": (heads, BlockIndex)}, heads an int32 tensor of the
    query heads each covers."""
    B, T, Hq, D = q.shape
    dev = q.device
    groups = {}
    vs = [h for h, s in enumerate(specs) if s[0] != "block_sparse"]
    stream_heads = [h for h in vs if specs[h][0] == "stream_llm"]
    shapes = {(min(specs[h][1], T), min(specs[h][2], T)) for h in stream_heads}
    if len(shapes) == 1 and min(shapes)[1] > 0:  # one A-shape: a window of the dense kernel, its own launch
        sink, window = shapes.pop()
        groups["a_shape"] = (device_ints(stream_heads, dev, torch.int32), WindowPattern(sink, window, T))
        vs = [h for h in vs if specs[h][0] != "stream_llm"]
    if vs:
        is_streaming = [specs[h][0] == "stream_llm" for h in vs]
        streaming = device_ints(is_streaming, dev).bool()
        heads = device_ints(vs, dev, torch.int32)
        ramp = -torch.arange(T, dtype=torch.float32, device=dev)  # its top n are 0 .. n - 1: A-shape
        if not all(is_streaming):
            vertical, slash = estimate_vertical_slash(q, k, scale=scale)
            vertical = torch.where(streaming[:, None], ramp, vertical[:, heads.long()])
            slash = torch.where(streaming[:, None], ramp, slash[:, heads.long()])
        else:
            vertical = slash = ramp.expand(B, len(vs), T)
        cols, nc, diags, nd = vertical_slash_pattern(vertical, slash, [specs[h][1] for h in vs],
                                                     [specs[h][2] for h in vs], keep=~streaming)
        index = vertical_slash_index(cols, diags, T, nc, nd, validate=False)
        groups["vertical_slash"] = (heads, index._replace(pattern="a-shape") if all(is_streaming) else index)
    bs = [h for h, s in enumerate(specs) if s[0] == "block_sparse"]
    if bs:
        full = block_sparse_index(q, k, [specs[h][1] if specs[h][0] == "block_sparse" else 1 for h in range(Hq)])
        sel = device_ints(bs, dev)
        groups["block_sparse"] = (sel.to(torch.int32),
                                  BlockIndex(full.blocks[:, sel].contiguous(), full.counts[:, sel].contiguous(), T))
    return groups


def sparse_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern=None, *,
                   dense_below: int = DENSE_BELOW, scale: float | None = None, return_lse: bool = False):
    """Causal prefill of q (B, T, Hq, D) with each head's pattern (head_patterns): the
    vertical-slash and stream_llm heads in one launch over one index, the block_sparse heads
    in another; dense below `dense_below` tokens. Returns out, or (out, lse)."""
    from kernels.attention.prefill import prefill_attention

    _check_qkv(q, k, v)
    check_int("dense_below", dense_below, minimum=0)
    check_bool("return_lse", return_lse)
    if scale is not None:
        check_number("scale", scale)
    B, T, Hq, D = q.shape
    specs = head_patterns(pattern, Hq)
    if T < dense_below or B * T * Hq == 0:
        return prefill_attention(q, k, v, scale=scale, return_lse=return_lse)
    return attend_pattern_groups(q, k, v, pattern_indexes(q, k, specs, scale=scale), scale=scale,
                                 return_lse=return_lse)


def attend_pattern_groups(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: dict, *,
                          scale: float | None = None, return_lse: bool = False):
    """sparse_prefill's last step: the attention over the indexes pattern_indexes built
    (every query head in one of the groups), one launch per group."""
    B, T, Hq, D = q.shape
    scale_f = D ** -0.5 if scale is None else float(scale)
    out = torch.empty_like(q)
    lse = torch.empty(B, Hq, T, dtype=torch.float32, device=q.device) if return_lse else None
    if "a_shape" in groups:  # a window held to each pattern block's first row, as the index's diagonals are
        heads, shape = groups["a_shape"]
        launch_prefill(q, k, v, out, lse, None, scale_f, True, None, heads=heads, window=shape.window,
                       sink=shape.sink, window_block=BLOCK)
    if "vertical_slash" in groups:
        _launch_vertical_slash(q, k, v, groups["vertical_slash"][1], groups["vertical_slash"][0], out, lse, scale_f)
    if "block_sparse" in groups:
        _launch_block_sparse(q, k, v, groups["block_sparse"][1], groups["block_sparse"][0], out, lse, scale_f)
    return (out, lse) if return_lse else out
