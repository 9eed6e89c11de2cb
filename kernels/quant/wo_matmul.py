"""Weight-only quantized linear layers in Triton: W8A16 and W4A16 (grouped), the weight
dequantized inside the GEMM.

    y = x @ dequant(W)^T          x (M, K) fp16/bf16, W a QuantizedWeight (kernels/quant/quantize.py)

int8 (per output channel): the scale factors out of the K sum, so the tile GEMM runs on
the int8 values converted to the activation dtype (exact for |q| <= 127) and the scale is
applied once to the fp32 result.
int4 (per group, asymmetric): every K block lies inside one group, where
    sum_k x_k (q_k - z) s = s * (sum_k x_k q_k - z * sum_k x_k),
so the tile GEMM runs on the raw 4-bit values (exact in fp16/bf16) and each group's scale
and zero enter once per output, not once per weight. The two nibbles of a byte hold
adjacent k (even, odd), multiplied with the even and the odd columns of x.
Launch options (defaults from H100 sweeps, see _config):
- `swap_ab` computes the tile transposed, W x^T, so the converted weight is the MMA's left
  operand, which Hopper's wgmma takes from registers (otherwise: mma.sync, compiled for sm_90);
- `fast_cvt` makes int4 values bf16/fp16 from bits (OFFSET + q, with q ORed into the
  mantissa) instead of the integer-to-float instruction, which runs at a quarter of the FMA
  rate; the zero point absorbs OFFSET;
- `interleave` (int4; prefill): the two nibbles put back in K order in registers,
  so x is read contiguously and one full-depth dot replaces two half-depth ones;
- `path="gemv"`: one row on the CUDA cores (_wo_gemv_kernel), no 16-row padding.
Few rows (decode): the weight is all the traffic and N alone does not fill the GPU, so K
is split over several programs; the last program of each output tile sums the fp32
partials (arrival counters, as kernels/linear/fused.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.checks import check_tensor
from kernels.launch import last_to_arrive, split_plan, tile_counters, tile_ranges

from .quantize import GROUP_SIZES, QuantizedWeight

DTYPES = (torch.float16, torch.bfloat16)


@triton.jit
def _load_tile(X, Q, S, Z, k0, k_end, rm, rn, m_ok, n_ok, stride_xm, stride_qk, stride_sg,
               BITS: tl.constexpr, GROUP: tl.constexpr, SWAP_AB: tl.constexpr, INTERLEAVE: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One K block: (weight tile, x tile(s), scale, zero). int8: x_b repeats x_a and s, z are
    unused; int4: the packed tile, x's even and odd columns (INTERLEAVE: x_a the whole x
    tile, read contiguously), the group's scale and zero.
    SWAP_AB: tiles transposed (weights [N, K], x [K, M]). Masked past k_end."""
    if BITS == 8:
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < k_end
        if SWAP_AB:
            w = tl.load(Q + rk[None, :].to(tl.int64) * stride_qk + rn[:, None], mask=k_ok[None, :] & n_ok[:, None], other=0)
            x_a = tl.load(X + rm[None, :].to(tl.int64) * stride_xm + rk[:, None], mask=m_ok[None, :] & k_ok[:, None], other=0.0)
        else:
            w = tl.load(Q + rk[:, None].to(tl.int64) * stride_qk + rn[None, :], mask=k_ok[:, None] & n_ok[None, :], other=0)
            x_a = tl.load(X + rm[:, None].to(tl.int64) * stride_xm + rk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        x_b = x_a
        s = tl.zeros([BLOCK_N], dtype=tl.float32)
        z = s
    else:
        # K is a multiple of GROUP, GROUP of BLOCK_K, and chunks start on BLOCK_K: a block is
        # whole (the masks only guard the end of the chunk).
        j = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        j_ok = 2 * j < k_end
        g = k0 // GROUP
        in_k = (g * GROUP + 0 * rn) < k_end  # the whole block is in (or out), as a vector over N
        s = tl.load(S + g * stride_sg + rn, mask=n_ok & in_k, other=0.0).to(tl.float32)
        z = tl.load(Z + g * stride_sg + rn, mask=n_ok & in_k, other=0.0).to(tl.float32)
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < k_end
        if SWAP_AB:
            w = tl.load(Q + j[None, :].to(tl.int64) * stride_qk + rn[:, None], mask=n_ok[:, None] & j_ok[None, :], other=0)
            x_cols = X + rm[None, :].to(tl.int64) * stride_xm
            if INTERLEAVE:
                x_a = tl.load(x_cols + rk[:, None], mask=m_ok[None, :] & k_ok[:, None], other=0.0)
                x_b = x_a
            else:
                x_a = tl.load(x_cols + 2 * j[:, None], mask=m_ok[None, :] & j_ok[:, None], other=0.0)
                x_b = tl.load(x_cols + 2 * j[:, None] + 1, mask=m_ok[None, :] & j_ok[:, None], other=0.0)
        else:
            w = tl.load(Q + j[:, None].to(tl.int64) * stride_qk + rn[None, :], mask=n_ok[None, :] & j_ok[:, None], other=0)
            x_rows = X + rm[:, None].to(tl.int64) * stride_xm
            if INTERLEAVE:
                x_a = tl.load(x_rows + rk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
                x_b = x_a
            else:
                x_a = tl.load(x_rows + 2 * j[None, :], mask=m_ok[:, None] & j_ok[None, :], other=0.0)
                x_b = tl.load(x_rows + 2 * j[None, :] + 1, mask=m_ok[:, None] & j_ok[None, :], other=0.0)
    return w, x_a, x_b, s, z


@triton.jit
def _nibble_as(q, dtype: tl.constexpr, FAST_CVT: tl.constexpr):
    """A 4-bit value (an integer tensor in 0..15) as `dtype`. FAST_CVT: OFFSET + q, built from
    bits (the value ORed into the mantissa of OFFSET, exact) instead of an integer-to-float
    conversion instruction, which runs at a quarter of the FMA rate; the caller subtracts
    _nibble_offset (bf16: 128; fp16: 0, subtracted here)."""
    if FAST_CVT:
        if dtype == tl.bfloat16:
            return (q.to(tl.int16) | 0x4300).to(tl.bfloat16, bitcast=True)  # 128 + q
        else:
            # 1024 + q, less 1024 here (exact in fp16): left in, the offset would cancel
            # against 1024 x in the fp32 sums and cost ~2^-14 of the output, near fp16's
            # own rounding (bf16's offset 128 costs 2^-17 against its 2^-8 rounding)
            return (q.to(tl.int16) | 0x6400).to(tl.float16, bitcast=True) - 1024.0
    else:
        return q.to(dtype)


@triton.jit
def _nibble_offset(dtype: tl.constexpr, FAST_CVT: tl.constexpr):
    if FAST_CVT and dtype == tl.bfloat16:
        return 128.0
    else:
        return 0.0


@triton.jit
def _accumulate(acc, acc_t, w, x_a, x_b, s, z, BITS: tl.constexpr, SWAP_AB: tl.constexpr, FAST_CVT: tl.constexpr,
                INTERLEAVE: tl.constexpr):
    """acc (M, N) += this block's product, or acc_t (N, M) with SWAP_AB."""
    if BITS == 8:
        if SWAP_AB:
            acc_t = tl.dot(w.to(x_a.dtype), x_a, acc_t)
        else:
            acc = tl.dot(x_a, w.to(x_a.dtype), acc)
    else:
        zo = z + _nibble_offset(x_a.dtype, FAST_CVT)
        lo = _nibble_as(w & 15, x_a.dtype, FAST_CVT)
        hi = _nibble_as(w >> 4, x_a.dtype, FAST_CVT)
        if INTERLEAVE:  # the nibbles back in K order (k = 2j, 2j + 1): one full-depth dot
            if SWAP_AB:
                q_t = tl.reshape(tl.join(lo, hi), (lo.shape[0], 2 * lo.shape[1]))
                part_t = tl.dot(q_t, x_a)
                acc_t += s[:, None] * (part_t - zo[:, None] * tl.sum(x_a.to(tl.float32), axis=0)[None, :])
            else:
                q = tl.reshape(tl.permute(tl.join(lo, hi), (0, 2, 1)), (2 * lo.shape[0], lo.shape[1]))
                part = tl.dot(x_a, q)
                acc += s[None, :] * (part - tl.sum(x_a.to(tl.float32), axis=1)[:, None] * zo[None, :])
        elif SWAP_AB:
            part_t = tl.dot(lo, x_a)
            part_t = tl.dot(hi, x_b, part_t)
            x_sum = tl.sum(x_a.to(tl.float32), axis=0) + tl.sum(x_b.to(tl.float32), axis=0)
            acc_t += s[:, None] * (part_t - zo[:, None] * x_sum[None, :])
        else:
            part = tl.dot(x_a, lo)
            part = tl.dot(x_b, hi, part)
            x_sum = tl.sum(x_a.to(tl.float32), axis=1) + tl.sum(x_b.to(tl.float32), axis=1)
            acc += s[None, :] * (part - x_sum[:, None] * zo[None, :])
    return acc, acc_t


@triton.jit
def _from_bits(v, mask, TOP: tl.constexpr):
    """The float whose bits are (v & mask) ^ TOP: a field of v put under a fixed exponent,
    without a conversion instruction (one LOP3). XOR rather than OR, so that int8's sign
    bit flips in the same instruction; for int4 the two are the same."""
    return ((v & mask) ^ TOP).to(tl.float32, bitcast=True)


@triton.jit
def _load_cols(ptrs, col_ok, EVEN_N: tl.constexpr):
    if EVEN_N:
        return tl.load(ptrs).to(tl.float32)
    return tl.load(ptrs, mask=col_ok, other=0.0).to(tl.float32)


@triton.jit
def _load_row(base, j: tl.constexpr, stride_qk, rw, col_ok, row, r_end, EVEN_N: tl.constexpr, EVEN_ROWS: tl.constexpr):
    """Row `row + j` of column words rw (base: row's pointer), as uint32; zero past r_end
    (a short last fold, int8 only) and past the columns."""
    ptrs = base + j * stride_qk + rw
    if EVEN_N and EVEN_ROWS:
        q = tl.load(ptrs)
    elif EVEN_ROWS:
        q = tl.load(ptrs, mask=col_ok, other=0)
    else:
        q = tl.load(ptrs, mask=col_ok & (rw * 0 + row + j < r_end), other=0)
    return q.to(tl.uint32, bitcast=True)


@triton.jit
def _load_batch(Q, row, stride_qk, rw, col_ok, r_end, EVEN_N: tl.constexpr, EVEN_ROWS: tl.constexpr):
    """Rows row to row + 7: all eight loads issued together, a batch ahead of their use
    (issued one at a time just before use, a thread had one row in flight: 32 us for the
    31 MB of int4 at 4096 -> 14336, results/<gpu>/quant_configs_gemv-fold.txt)."""
    base = Q + (tl.full([], 0, tl.int64) + row) * stride_qk  # 64-bit: the weight may pass 2^31 bytes
    return (_load_row(base, 0, stride_qk, rw, col_ok, row, r_end, EVEN_N, EVEN_ROWS),
            _load_row(base, 1, stride_qk, rw, col_ok, row, r_end, EVEN_N, EVEN_ROWS),
            _load_row(base, 2, stride_qk, rw, col_ok, row, r_end, EVEN_N, EVEN_ROWS),
            _load_row(base, 3, stride_qk, rw, col_ok, row, r_end, EVEN_N, EVEN_ROWS),
            _load_row(base, 4, stride_qk, rw, col_ok, row, r_end, EVEN_N, EVEN_ROWS),
            _load_row(base, 5, stride_qk, rw, col_ok, row, r_end, EVEN_N, EVEN_ROWS),
            _load_row(base, 6, stride_qk, rw, col_ok, row, r_end, EVEN_N, EVEN_ROWS),
            _load_row(base, 7, stride_qk, rw, col_ok, row, r_end, EVEN_N, EVEN_ROWS))


@triton.jit
def _wo_gemv_kernel(
    X, Q, S, Z, Y, P, COUNT, N, ROWS, rows_per_split, n_splits, stride_qk, stride_sg, lo_mask, hi_mask,
    BITS: tl.constexpr, SPLIT: tl.constexpr, EVEN_N: tl.constexpr, EVEN_ROWS: tl.constexpr,
    WORDS: tl.constexpr, FOLD_ROWS: tl.constexpr, GROUP_ROWS: tl.constexpr,
):
    """One row (decode, M = 1) on the CUDA cores: y[n] = sum_k x[k] w[k, n], two
    instructions per weight (one LOP3 that makes a float from its bits, one FMA) plus a
    shift per two to four weights.
    Q is the packed weight read as 32-bit words, ROWS of them per column word: (K/2, N/4)
    for int4 (a byte holds k even and odd of one column), (K, N/4) for int8; byte c of
    word i is column 4 i + c. A thread owns WORDS / threads whole words and walks down
    their rows, so x is one scalar per row (a broadcast load, no layout shuffle) and
    nothing is reduced across threads until the end.
    A weight field v placed under a fixed exponent is the float 2^e (1 + v / R), so
        sum_k x_k (1 + v_k / R) = Sx + (sum_k x_k v_k) / R:
    each product needs no offset subtracted; the offset R Sx comes off once per FOLD_ROWS
    rows ("fold"), where int4's group scale and zero are applied too. int4 nibbles sit at
    bits 16-19 (even k, R = 128) or 12-15 (odd k, R = 2048) after one of three shifts
    (<< 8, >> 8, rotate 16) per word; int8 bytes at bits 8-15 (R = 32768, the byte's sign
    bit flipped to make q + 128). The rounding of these fp32 sums, scaled up by R, stays
    an order below the output's rounding (tests/correctness/quant/test_wo_matmul.py).
    Program (pid_n, pid_k) takes column words pid_n * WORDS + [0, WORDS) and rows
    [pid_k rows_per_split, ...), eight rows at a time, each batch loaded while the one
    before it is computed. FOLD_ROWS is a multiple of 8."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rw = pid_n * WORDS + tl.arange(0, WORDS)
    col_ok = rw < N // 4
    r_start = pid_k * rows_per_split
    r_end = tl.minimum(r_start + rows_per_split, ROWS)
    TOP: tl.constexpr = 0x3F800000 if BITS == 4 else 0x4B008000  # 1.0; 2^23 with bit 15 (the byte's sign) set
    y0 = tl.zeros([WORDS], dtype=tl.float32)
    y1 = tl.zeros([WORDS], dtype=tl.float32)
    y2 = tl.zeros([WORDS], dtype=tl.float32)
    y3 = tl.zeros([WORDS], dtype=tl.float32)
    nxt = _load_batch(Q, r_start, stride_qk, rw, col_ok, r_end, EVEN_N, EVEN_ROWS)
    nxt2 = _load_batch(Q, tl.where(r_start + 8 < r_end, r_start + 8, r_start), stride_qk, rw, col_ok, r_end,
                       EVEN_N, EVEN_ROWS)
    # int4: a(2c) even k, a(2c+1) odd k of column c; int8: a0-a3 the four columns
    a0 = tl.zeros([WORDS], dtype=tl.float32)
    a1 = tl.zeros([WORDS], dtype=tl.float32)
    a2 = tl.zeros([WORDS], dtype=tl.float32)
    a3 = tl.zeros([WORDS], dtype=tl.float32)
    a4 = tl.zeros([WORDS], dtype=tl.float32)
    a5 = tl.zeros([WORDS], dtype=tl.float32)
    a6 = tl.zeros([WORDS], dtype=tl.float32)
    a7 = tl.zeros([WORDS], dtype=tl.float32)
    sxe = tl.zeros([], dtype=tl.float32)  # int8: the sum of x; int4: of x at even k
    sxo = tl.zeros([], dtype=tl.float32)  # int4: of x at odd k
    # Batches are loaded two ahead of their use, in a loop (not unrolled): ptxas moves a load
    # down to its first use within a block, and puts the batch loaded in one iteration at the
    # end of it, in the registers of the batch just used, so one ahead would leave nothing
    # in flight.
    for row in range(r_start, r_end, 8):
        cur = nxt
        nxt = nxt2
        # past the chunk's end: its first batch again, a harmless re-read that needs no mask
        nxt2 = _load_batch(Q, tl.where(row + 16 < r_end, row + 16, r_start), stride_qk, rw, col_ok, r_end,
                           EVEN_N, EVEN_ROWS)
        for j in tl.static_range(8):
            q = cur[j]
            v8l = q << 8
            v8r = q >> 8
            if BITS == 4:
                xe = tl.load(X + 2 * (row + j)).to(tl.float32)
                xo = tl.load(X + 2 * (row + j) + 1).to(tl.float32)
                sxe += xe
                sxo += xo
                vr = (q << 16) | (q >> 16)
                a0 += _from_bits(vr, lo_mask, TOP) * xe    # nibble 0 -> bits 16-19
                a1 += _from_bits(v8l, hi_mask, TOP) * xo   # nibble 1 -> 12-15
                a2 += _from_bits(v8l, lo_mask, TOP) * xe   # nibble 2 -> 16-19
                a3 += _from_bits(q, hi_mask, TOP) * xo     # nibble 3 at 12-15
                a4 += _from_bits(q, lo_mask, TOP) * xe     # nibble 4 at 16-19
                a5 += _from_bits(v8r, hi_mask, TOP) * xo   # nibble 5 -> 12-15
                a6 += _from_bits(v8r, lo_mask, TOP) * xe   # nibble 6 -> 16-19
                a7 += _from_bits(vr, hi_mask, TOP) * xo    # nibble 7 -> 12-15
            else:
                if EVEN_ROWS:
                    x = tl.load(X + row + j).to(tl.float32)
                else:
                    x = tl.load(X + row + j, mask=row + j < r_end, other=0.0).to(tl.float32)
                sxe += x
                a0 += _from_bits(v8l, lo_mask, TOP) * x     # byte 0 -> bits 8-15
                a1 += _from_bits(q, lo_mask, TOP) * x       # byte 1 at 8-15
                a2 += _from_bits(v8r, lo_mask, TOP) * x     # byte 2 -> 8-15
                a3 += _from_bits(q >> 16, lo_mask, TOP) * x  # byte 3 -> 8-15
        if (row + 8 - r_start) % FOLD_ROWS == 0 or row + 8 >= r_end:  # fold, then start the sums again
            f0 = row + 8 - FOLD_ROWS  # a fold lies in one int4 group
            if BITS == 4:  # sum x (q - z) = 128 a_even + 2048 a_odd - (128 Sx_even + 2048 Sx_odd + z Sx), times s
                sz = S + (f0 // GROUP_ROWS) * stride_sg + 4 * rw
                zz = Z + (f0 // GROUP_ROWS) * stride_sg + 4 * rw
                sx = sxe + sxo
                off = 128.0 * sxe + 2048.0 * sxo
                y0 += _load_cols(sz, col_ok, EVEN_N) * (128.0 * a0 + 2048.0 * a1 - (_load_cols(zz, col_ok, EVEN_N) * sx + off))
                y1 += _load_cols(sz + 1, col_ok, EVEN_N) * (128.0 * a2 + 2048.0 * a3 - (_load_cols(zz + 1, col_ok, EVEN_N) * sx + off))
                y2 += _load_cols(sz + 2, col_ok, EVEN_N) * (128.0 * a4 + 2048.0 * a5 - (_load_cols(zz + 2, col_ok, EVEN_N) * sx + off))
                y3 += _load_cols(sz + 3, col_ok, EVEN_N) * (128.0 * a6 + 2048.0 * a7 - (_load_cols(zz + 3, col_ok, EVEN_N) * sx + off))
            else:  # a = 2^23 Sx + 256 sum x (q + 128), so sum x q = a / 256 - (2^15 + 128) Sx
                off = 32896.0 * sxe
                y0 += a0 * (1.0 / 256.0) - off
                y1 += a1 * (1.0 / 256.0) - off
                y2 += a2 * (1.0 / 256.0) - off
                y3 += a3 * (1.0 / 256.0) - off
            a0 = tl.zeros([WORDS], dtype=tl.float32)
            a1 = tl.zeros([WORDS], dtype=tl.float32)
            a2 = tl.zeros([WORDS], dtype=tl.float32)
            a3 = tl.zeros([WORDS], dtype=tl.float32)
            a4 = tl.zeros([WORDS], dtype=tl.float32)
            a5 = tl.zeros([WORDS], dtype=tl.float32)
            a6 = tl.zeros([WORDS], dtype=tl.float32)
            a7 = tl.zeros([WORDS], dtype=tl.float32)
            sxe = tl.zeros([], dtype=tl.float32)
            sxo = tl.zeros([], dtype=tl.float32)
    if BITS == 8:  # the per-channel scale
        col = S + 4 * rw
        y0 *= _load_cols(col, col_ok, EVEN_N)
        y1 *= _load_cols(col + 1, col_ok, EVEN_N)
        y2 *= _load_cols(col + 2, col_ok, EVEN_N)
        y3 *= _load_cols(col + 3, col_ok, EVEN_N)
    if SPLIT:
        part = P + pid_k.to(tl.int64) * N + 4 * rw
        tl.store(part, y0, mask=col_ok)
        tl.store(part + 1, y1, mask=col_ok)
        tl.store(part + 2, y2, mask=col_ok)
        tl.store(part + 3, y3, mask=col_ok)
        if last_to_arrive(COUNT, pid_n, n_splits):
            cols = pid_n * (4 * WORDS) + tl.arange(0, 4 * WORDS)  # the tile's words are these columns
            c_ok = cols < N
            total = tl.zeros([4 * WORDS], dtype=tl.float32)
            for s_ in range(0, n_splits):
                total += tl.load(P + s_ * N + cols, mask=c_ok, other=0.0, cache_modifier=".cg")
            tl.store(Y + cols, total.to(Y.dtype.element_ty), mask=c_ok)
    else:
        out = Y + 4 * rw
        tl.store(out, y0.to(Y.dtype.element_ty), mask=col_ok)
        tl.store(out + 1, y1.to(Y.dtype.element_ty), mask=col_ok)
        tl.store(out + 2, y2.to(Y.dtype.element_ty), mask=col_ok)
        tl.store(out + 3, y3.to(Y.dtype.element_ty), mask=col_ok)


@triton.jit
def _wo_matmul_kernel(
    X, Q, S, Z, Y, P, COUNT,
    M, N, K, k_chunk, n_splits, stride_xm, stride_qk, stride_sg, stride_ym,
    BITS: tl.constexpr, GROUP: tl.constexpr, SPLIT: tl.constexpr, SWAP_AB: tl.constexpr, FAST_CVT: tl.constexpr,
    INTERLEAVE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    rm, rn, m_ok, n_ok = tile_ranges(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_t = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)  # SWAP_AB: the transposed tile
    k_start = pid_k * k_chunk
    k_end = tl.minimum(k_start + k_chunk, K)
    for k0 in range(k_start, k_end, BLOCK_K):
        w, x_a, x_b, s, z = _load_tile(X, Q, S, Z, k0, k_end, rm, rn, m_ok, n_ok, stride_xm, stride_qk, stride_sg,
                                       BITS, GROUP, SWAP_AB, INTERLEAVE, BLOCK_M, BLOCK_N, BLOCK_K)
        acc, acc_t = _accumulate(acc, acc_t, w, x_a, x_b, s, z, BITS, SWAP_AB, FAST_CVT, INTERLEAVE)
    if SWAP_AB:
        acc = tl.trans(acc_t)

    out_mask = m_ok[:, None] & n_ok[None, :]
    y_ptrs = Y + rm[:, None].to(tl.int64) * stride_ym + rn[None, :]
    if SPLIT:
        offs = rm[:, None].to(tl.int64) * N + rn[None, :]
        tl.store(P + pid_k.to(tl.int64) * M * N + offs, acc, mask=out_mask)
        if last_to_arrive(COUNT, pid_m * tl.num_programs(0) + pid_n, n_splits):
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            mn = (tl.full([], 0, tl.int64) + M) * N  # 64-bit; M may be the constexpr 1
            for s_ in range(0, n_splits):
                acc += tl.load(P + s_ * mn + offs, mask=out_mask, other=0.0, cache_modifier=".cg")
            if BITS == 8:
                acc = acc * tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=out_mask)
    else:
        if BITS == 8:
            acc = acc * tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=out_mask)


def _config(M: int, N: int, K: int, bits: int, group, path=None):
    """Launch defaults, from H100 sweeps (tools/quant_configs.py; results/<gpu>/quant_configs*.txt),
    4096 -> 14336: one row on the CUDA cores (gemv): int4 g128 44.9 -> 32.4 -> 27.3 us
    (words, loads a block ahead), int8 41.2 -> 31.0 -> 29.2 us; 16 rows, weights as the left
    operand with int4 converted from bits: 70.6 -> 48.4 us; 2048 rows: int4 interleaved
    5335 -> 1468 us (still 4.8x cuBLAS bf16: see the README), int8 579 -> 528 us."""
    path = path or ("gemv" if M == 1 and N % 4 == 0 else "mma")
    if path not in ("mma", "gemv"):
        raise ValueError(f"path must be 'mma' or 'gemv', got {path!r}")
    if path == "gemv":
        if M != 1:
            raise ValueError(f"the gemv path computes one row; x has {M}")
        if N % 4:
            raise ValueError(f"the gemv path reads four columns per 32-bit word: out_features {N} is not a multiple of 4")
        # 1024 columns (four 16-byte words a thread and row) in 2 warps, 32 rows unrolled per fold
        # (int4: 64 k, int8: 32 k); the split count from tools/quant_configs.py (see _config's doc)
        block_k = min(64, group) if bits == 4 else 32
        return dict(path="gemv", block_m=1, block_n=1024, block_k=block_k, num_warps=2, num_stages=1, waves=4)
    if M <= 16:
        cfg = dict(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=3, waves=8)
    elif M <= 64:
        cfg = dict(block_m=64, block_n=128, block_k=128, num_warps=4, num_stages=3, waves=2)
    elif bits == 4:  # prefill: the nibbles interleaved, x contiguous, one full-depth dot
        cfg = dict(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=3, waves=1, swap_ab=False,
                   interleave=True)
    else:
        cfg = dict(block_m=128, block_n=128, block_k=64, num_warps=4, num_stages=3, waves=1, swap_ab=False)
    cfg = dict(path="mma", swap_ab=True, fast_cvt=bits == 4, interleave=False) | cfg
    if bits == 4:
        cfg["block_k"] = min(cfg["block_k"], group)  # a K block never straddles two groups
    return cfg


def wo_matmul(x: torch.Tensor, qw: QuantizedWeight, *, num_splits=None, _config_override=None) -> torch.Tensor:
    """x @ dequant(qw)^T for x (..., K) fp16/bf16; returns (..., N) in x's dtype."""
    check_tensor("x", x, dtypes=DTYPES)
    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"qw must be a QuantizedWeight (kernels.quant.quantize), got {type(qw).__name__}")
    N, K = qw.shape
    if x.shape[-1] != K:
        raise ValueError(f"x has {x.shape[-1]} input channels; the weight has in_features {K}")
    tensors = {"qweight": qw.qweight, "scale": qw.scale} | ({"zero": qw.zero} if qw.bits == 4 else {})
    for name, t in tensors.items():
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, x on {x.device}: they must be on one device")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if qw.bits == 8:
        if qw.qweight.dtype != torch.int8 or qw.qweight.shape != (K, N) or qw.scale.shape != (N,):
            raise ValueError("int8 weight must be qweight int8 (K, N) and scale (N,)")
    elif qw.bits == 4:
        G = qw.group
        if G not in GROUP_SIZES:
            raise ValueError(f"group size {G} is not supported (supported: {GROUP_SIZES})")
        if qw.qweight.dtype != torch.uint8 or qw.qweight.shape != (K // 2, N) or K % G:
            raise ValueError(f"int4 weight must be packed uint8 (K/2, N) with K a multiple of the group {G}")
        if qw.scale.shape != (K // G, N) or qw.zero.shape != (K // G, N):
            raise ValueError(f"int4 scale and zero must be (K/group, N) = ({K // G}, {N})")
    else:
        raise ValueError(f"bits must be 8 or 4, got {qw.bits}")
    if qw.scale.dtype != x.dtype or (qw.zero is not None and qw.zero.dtype != x.dtype):
        raise TypeError(f"scales are {qw.scale.dtype} but x is {x.dtype}: quantize with dtype={x.dtype}")

    x2 = x.reshape(-1, K)
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    M = x2.shape[0]
    y = torch.empty(*x.shape[:-1], N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    y2 = y.view(-1, N)
    cfg = _config(M, N, K, qw.bits, qw.group, (_config_override or {}).get("path"))
    cfg.update(_config_override or {})
    gemv = cfg["path"] == "gemv"
    if gemv and (cfg["block_n"] < 4 or cfg["block_n"] & (cfg["block_n"] - 1)):
        raise ValueError(f"the gemv path takes block_n a power of two (whole 32-bit words of four columns), "
                         f"got {cfg['block_n']}")
    if qw.bits == 4 and (qw.group % cfg["block_k"] or cfg["block_k"] & (cfg["block_k"] - 1)):
        raise ValueError(f"block_k {cfg['block_k']} must be a power of two dividing the group {qw.group}: "
                         "a K block may not straddle two groups")
    n_tiles, m_tiles = triton.cdiv(N, cfg["block_n"]), triton.cdiv(M, cfg["block_m"])  # gemv: M = 1, one m tile
    if gemv:  # the reduction runs over rows of 32-bit words, folded every fold_rows
        rows, fold_rows = (K // 2, cfg["block_k"] // 2) if qw.bits == 4 else (K, cfg["block_k"])
        n_splits, chunk = split_plan(rows, fold_rows, n_tiles, x.device, num_splits, cfg["waves"], min_blocks=1)
    else:
        n_splits, chunk = split_plan(K, cfg["block_k"], n_tiles * m_tiles, x.device, num_splits, cfg["waves"],
                                     min_blocks=2)
    split = n_splits > 1
    p = torch.empty(n_splits, M, N, dtype=torch.float32, device=x.device) if split else y2
    count = tile_counters(x.device, n_tiles * m_tiles) if split else y2
    zero = qw.zero if qw.bits == 4 else qw.scale
    if gemv:
        words = qw.qweight.view(torch.int32)  # four columns per word (N % 4 == 0, checked above)
        _wo_gemv_kernel[(n_tiles, n_splits)](
            x2, words, qw.scale, zero, y2, p, count, N, rows, chunk, n_splits, words.stride(0),
            qw.scale.stride(0), 0xF0000 if qw.bits == 4 else 0xFF00, 0xF000, BITS=qw.bits, SPLIT=split,
            EVEN_N=N % cfg["block_n"] == 0, EVEN_ROWS=rows % fold_rows == 0, WORDS=cfg["block_n"] // 4,
            FOLD_ROWS=fold_rows, GROUP_ROWS=(qw.group or 2) // 2,
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        return y
    k_chunk = chunk
    _wo_matmul_kernel[(n_tiles, n_splits, m_tiles)](
        x2, qw.qweight, qw.scale, zero, y2, p, count,
        M, N, K, k_chunk, n_splits, x2.stride(0), qw.qweight.stride(0), qw.scale.stride(0), y2.stride(0),
        BITS=qw.bits, GROUP=qw.group or 1, SPLIT=split, SWAP_AB=bool(cfg["swap_ab"]), FAST_CVT=bool(cfg["fast_cvt"]),
        INTERLEAVE=bool(cfg["interleave"]),
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return y
