"""Weight-only quantized linear layers in Triton: W8A16 and W4A16 (grouped).

    y = x @ dequant(W)^T          x (M, K) fp16/bf16, W a QuantizedWeight (kernels/quant/quantize.py)

Three paths, chosen by the number of rows (defaults from H100 sweeps, see _config):
- one row (`path="gemv"`): the CUDA cores, no 16-row padding, exact in the weights
  (floats made from bits, scales and zeros folded out of the per-weight work and applied
  in fp32). int4 (_wo_gemv_int4_kernel): one packed word column of 4 channels per thread,
  its K sums in-thread; int8 (_wo_gemv_int8_kernel): each channel's row of the (N, K)
  weight read as one contiguous run, summed across threads once at the end;
- few rows (`path="mma"`, _wo_matmul_kernel): tensor cores, K split over several programs
  so that a few rows fill the GPU; the last program of each output tile sums the fp32
  partials (arrival counters, as kernels/linear/fused.py). int8 (per output channel): the
  scale factors out of the K sum, so the tile GEMM runs on the int8 values converted to
  x's dtype (exact for |q| <= 127) and the scale is applied once to the fp32 result. int4
  (per group; a K block lies inside one group): by default each weight is dequantized to
  x's dtype before the dot (`deq_dot`, one rounding per weight), so the dots accumulate
  into one tile;
- many rows (`path="dequant"`, from DEQUANT_MIN_ROWS): _dequant_kernel writes the weight
  once in x's dtype, then torch.mm (cuBLAS).
Options of the "mma" path:
- `swap_ab` computes the tile transposed, W x^T, so the converted weight is the MMA's left
  operand, which Hopper's wgmma takes from registers (otherwise: mma.sync, compiled for sm_90);
- `x_split` (int4): x read contiguously, its even and odd columns (the two nibbles of a
  byte hold k = 2j, 2j + 1) parted in registers, instead of two stride-2 reads;
- `deq_dot` off (int4) keeps the weights exact: the dot runs on the raw 4-bit values and
  each group's scale and zero enter once per output, since
  sum_k x_k (q_k - z) s = s * (sum_k x_k q_k - z * sum_k x_k); slower, as each block's dot
  starts afresh. Then `fast_cvt` makes the values bf16/fp16 from bits (OFFSET + q, q ORed
  into the mantissa) instead of the integer-to-float instruction (a quarter of the FMA
  rate), the zero point absorbing OFFSET;
- `interleave` (int4) puts the nibbles back in K order in registers, so x is read
  contiguously and one full-depth dot replaces two half-depth ones.
An inf or NaN in x gives float64's NaN positions and inf signs on every path (x w is +-inf
by the sign of the dequantized weight, NaN where it is 0). The paths that fold an offset or
a zero point out of the per-weight work (the gemv kernels; int4 with deq_dot off) would
compute inf - inf there: a chunk or tile whose sums come out NaN is summed again weight by
weight, a slow path that finite inputs never take.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.platform import interpreting
from kernels.checks import check_device, check_tensor
from kernels.interpreter import exact_operand
from kernels.launch import last_to_arrive, split_plan, tile_counters, tile_ranges

from .quantize import QuantizedWeight, check_int, check_quantized
from .rounding import to_float

DTYPES = (torch.float16, torch.bfloat16)
# From this many rows, dequantize-then-cuBLAS (path "dequant") is the default: the weight's
# dequantization (54 us for int4, 61 us for int8 at 4096 -> 14336 on an H100) costs less than
# the fused kernel's shortfall against cuBLAS there.
# - int4: at 128 rows fused 77 us, dequant 105 us; at 256 fused 128 us, dequant 109 us
#   (quant_configs_noswap.txt); they cross near 200 rows.
# - int8: at 256 rows fused 82 us, dequant 116 us; at 2048 fused 528 us, dequant 363 us
#   (quant_configs_split-deq.txt, quant_configs_prefill.txt).
DEQUANT_MIN_ROWS = {4: 192, 8: 512}


@triton.jit
def _load_tile(X, Q, S, Z, k0, k_end, rm, rn, m_ok, n_ok, stride_xm, stride_q, stride_sg,
               BITS: tl.constexpr, GROUP: tl.constexpr, SWAP_AB: tl.constexpr, INTERLEAVE: tl.constexpr,
               X_SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One K block: (weight tile, x tile(s), scale, zero). int8: x_b repeats x_a and s, z are
    unused; int4: the packed tile, x's even and odd columns (INTERLEAVE: x_a the whole x
    tile, read contiguously), the group's scale and zero.
    SWAP_AB: tiles transposed (weights [N, K], x [K, M]). Masked past k_end.
    stride_q: qweight's row stride, per output channel for int8 (N, K), per packed k pair
    for int4 (K/2, N)."""
    if BITS == 8:
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < k_end
        if SWAP_AB:
            w = tl.load(Q + rn[:, None].to(tl.int64) * stride_q + rk[None, :], mask=k_ok[None, :] & n_ok[:, None], other=0)
            x_a = tl.load(X + rm[None, :].to(tl.int64) * stride_xm + rk[:, None], mask=m_ok[None, :] & k_ok[:, None], other=0.0)
        else:
            w = tl.load(Q + rn[None, :].to(tl.int64) * stride_q + rk[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0)
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
            w = tl.load(Q + j[None, :].to(tl.int64) * stride_q + rn[:, None], mask=n_ok[:, None] & j_ok[None, :], other=0)
            x_cols = X + rm[None, :].to(tl.int64) * stride_xm
            if INTERLEAVE:
                x_a = tl.load(x_cols + rk[:, None], mask=m_ok[None, :] & k_ok[:, None], other=0.0)
                x_b = x_a
            elif X_SPLIT:  # x read contiguously, its even and odd columns parted in registers
                x_t = tl.load(x_cols + rk[:, None], mask=m_ok[None, :] & k_ok[:, None], other=0.0)
                x_a, x_b = tl.split(tl.permute(tl.reshape(x_t, (BLOCK_K // 2, 2, BLOCK_M)), (0, 2, 1)))
            else:
                x_a = tl.load(x_cols + 2 * j[:, None], mask=m_ok[None, :] & j_ok[:, None], other=0.0)
                x_b = tl.load(x_cols + 2 * j[:, None] + 1, mask=m_ok[None, :] & j_ok[:, None], other=0.0)
        else:
            w = tl.load(Q + j[:, None].to(tl.int64) * stride_q + rn[None, :], mask=n_ok[None, :] & j_ok[:, None], other=0)
            x_rows = X + rm[:, None].to(tl.int64) * stride_xm
            if INTERLEAVE:
                x_a = tl.load(x_rows + rk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
                x_b = x_a
            elif X_SPLIT:
                x_t = tl.load(x_rows + rk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
                x_a, x_b = tl.split(tl.reshape(x_t, (BLOCK_M, BLOCK_K // 2, 2)))
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
        return to_float(q, dtype)


@triton.jit
def _nibble_offset(dtype: tl.constexpr, FAST_CVT: tl.constexpr):
    if FAST_CVT and dtype == tl.bfloat16:
        return 128.0
    else:
        return 0.0


@triton.jit
def _dequant_nibble(q, s, minus_zs):
    """(q - z) s in fp32 for 4-bit values q, without the integer-to-float instruction (a
    quarter of the FMA rate): q ORed under the exponent of 2^23 is the exact float 2^23 + q,
    less 2^23 it is q exactly; then q s - z s (one FMA once contracted)."""
    f = (q.to(tl.int32) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
    return f * s + minus_zs


@triton.jit
def _accumulate(acc, acc_t, w, x_a, x_b, s, z, BITS: tl.constexpr, SWAP_AB: tl.constexpr, FAST_CVT: tl.constexpr,
                INTERLEAVE: tl.constexpr, DEQ_DOT: tl.constexpr):
    """acc (M, N) += this block's product, or acc_t (N, M) with SWAP_AB.
    DEQ_DOT (int4; the default): the weights dequantized to x's dtype before the dot, which
    then accumulates straight into acc (each weight rounded once, as dequantize-then-GEMM).
    Every dot operand passes through exact_operand (bf16 computed as fp32 under the interpreter)."""
    dt = x_a.dtype  # x's dtype, which the weights are converted to
    x_a = exact_operand(x_a)
    x_b = exact_operand(x_b)
    if BITS == 4 and DEQ_DOT:
        minus_zs = -z * s
        if SWAP_AB:  # the tile is (N, K / 2): scale and zero vary along axis 0
            s_b, minus_zs_b = s[:, None], minus_zs[:, None]
        else:
            s_b, minus_zs_b = s[None, :], minus_zs[None, :]
        lo = exact_operand(to_float(_dequant_nibble(w & 15, s_b, minus_zs_b), dt))
        hi = exact_operand(to_float(_dequant_nibble(w >> 4, s_b, minus_zs_b), dt))
        if SWAP_AB:
            if INTERLEAVE:
                acc_t = tl.dot(tl.reshape(tl.join(lo, hi), (lo.shape[0], 2 * lo.shape[1])), x_a, acc_t)
            else:
                acc_t = tl.dot(lo, x_a, acc_t)
                acc_t = tl.dot(hi, x_b, acc_t)
        else:
            if INTERLEAVE:
                q = tl.reshape(tl.permute(tl.join(lo, hi), (0, 2, 1)), (2 * lo.shape[0], lo.shape[1]))
                acc = tl.dot(x_a, q, acc)
            else:
                acc = tl.dot(x_a, lo, acc)
                acc = tl.dot(x_b, hi, acc)
    elif BITS == 8:
        if SWAP_AB:
            acc_t = tl.dot(exact_operand(to_float(w, dt)), x_a, acc_t)
        else:
            acc = tl.dot(x_a, exact_operand(to_float(w, dt)), acc)
    else:
        zo = z + _nibble_offset(dt, FAST_CVT)
        lo = exact_operand(_nibble_as(w & 15, dt, FAST_CVT))
        hi = exact_operand(_nibble_as(w >> 4, dt, FAST_CVT))
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
def _bits_f32(bits):
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _near_one(u, mask, one):
    """The field of u under `mask` (within bits 15-22) ORed under the exponent of 1.0: the
    exact float 1 + field / 2^23, made from bits (one LOP3, no conversion instruction).
    `one` (0x3F800000) is an argument, not a literal: with two literals ptxas splits the
    AND and the OR into two instructions."""
    return _bits_f32((u & mask) | one)


@triton.jit
def _bytes_as_floats(u, ASM: tl.constexpr):
    """The four bytes b of the int32 u (byte 0 first) as the floats 1024 + b, exactly: two
    PRMTs place the bytes under fp16's exponent of 1024 (0x64), two a word, and each half
    widens to fp32 by one HADD2.F32 on the FMA pipe: no shifts or masks on the integer pipe,
    whose two instructions a weight had held the int8 gemv back. ASM False (the Triton
    interpreter, which runs no PTX): the same values by integer ops."""
    if ASM:
        return tl.inline_asm_elementwise(
            asm="""{
            .reg .b32 t0, t1;
            .reg .b16 h0, h1, h2, h3;
            prmt.b32 t0, $4, 0x64646464, 0x4240;
            prmt.b32 t1, $4, 0x64646464, 0x4341;
            mov.b32 {h0, h2}, t0;
            mov.b32 {h1, h3}, t1;
            cvt.f32.f16 $0, h0;
            cvt.f32.f16 $1, h1;
            cvt.f32.f16 $2, h2;
            cvt.f32.f16 $3, h3;
            }""",
            constraints="=r,=r,=r,=r,r", args=[u], dtype=(tl.float32, tl.float32, tl.float32, tl.float32),
            is_pure=True, pack=1)
    else:
        return ((u & 255).to(tl.float32) + 1024.0, ((u >> 8) & 255).to(tl.float32) + 1024.0,
                ((u >> 16) & 255).to(tl.float32) + 1024.0, ((u >> 24) & 255).to(tl.float32) + 1024.0)


@triton.jit
def _gemv_rows(q_cols, q_rows, k_row, k_end_row, r, w_ok, STRIDE: tl.constexpr, MASKED: tl.constexpr):
    """ROWS rows of the weight words from row k_row, one word column per thread: a 64-bit
    pointer per thread and the rows at constant offsets from it (LDG with immediate offsets,
    no address arithmetic per row). Masked rows and words read as zero."""
    ptrs = (q_cols + (tl.full([], 0, tl.int64) + k_row) * STRIDE)[:, None] + q_rows[None, :]
    if MASKED:
        return tl.load(ptrs, mask=w_ok[:, None] & (k_row + r < k_end_row)[None, :], other=0)
    else:
        return tl.load(ptrs)


@triton.jit
def _next_batch(k0, KB, k_start, k_end):
    """The next batch's first k; past the chunk's end its first batch again, a harmless
    re-read that needs no mask. Loaded at the end of the loop body, the next batch's words
    are issued (ptxas hoists them) while this batch is computed: 19.8 against 20.9 us for
    loading them explicitly one batch ahead (gemv_lab2.txt). (A load at the top of the body
    would have nothing of its own warp to overlap it: ptxas does not move loads across
    iterations; not timed.)"""
    return tl.where(k0 + KB < k_end, k0 + KB, k_start)


@triton.jit
def _dequant_pair(S, Z, sz, w_ok, q, shift: tl.constexpr, xe, xo):
    """One column's x[2j] w[2j] + x[2j + 1] w[2j + 1], each weight dequantized as
    quantize.dequantize does, (q - z) s in fp32: the nibbles at bits shift and shift + 4 of q."""
    s = tl.load(S + sz, mask=w_ok, other=0.0).to(tl.float32)
    z = tl.load(Z + sz, mask=w_ok, other=0.0).to(tl.float32)
    w_lo = (((q >> shift) & 15).to(tl.float32) - z) * s
    w_hi = (((q >> (shift + 4)) & 15).to(tl.float32) - z) * s
    return w_lo * xe + w_hi * xo


@triton.jit
def _gemv_int4_per_weight(X32, q_cols, S, Z, rw, w_ok, k_start, k_end, stride_sg, GROUP: tl.constexpr,
                          STRIDE: tl.constexpr, WORDS: tl.constexpr, IS_BF16: tl.constexpr):
    """The chunk's four column sums of _wo_gemv_int4_kernel with each weight dequantized
    before its product, one packed row at a time (few registers; slow): for chunks where x
    holds an inf or a NaN, where the folded sums s (sum x q - z sum x) give inf - inf and
    x w gives +-inf, or NaN where w = 0."""
    acc0 = tl.zeros([WORDS], dtype=tl.float32)
    acc1 = tl.zeros([WORDS], dtype=tl.float32)
    acc2 = tl.zeros([WORDS], dtype=tl.float32)
    acc3 = tl.zeros([WORDS], dtype=tl.float32)
    for j in range(k_start // 2, k_end // 2):
        q = tl.load(q_cols + (tl.full([], 0, tl.int64) + j) * STRIDE, mask=w_ok, other=0)
        xe, xo = _x_pair(tl.load(X32 + j), IS_BF16)
        sz = ((2 * j) // GROUP) * stride_sg + 4 * rw
        acc0 += _dequant_pair(S, Z, sz, w_ok, q, 0, xe, xo)
        acc1 += _dequant_pair(S, Z, sz + 1, w_ok, q, 8, xe, xo)
        acc2 += _dequant_pair(S, Z, sz + 2, w_ok, q, 16, xe, xo)
        acc3 += _dequant_pair(S, Z, sz + 3, w_ok, q, 24, xe, xo)
    return acc0, acc1, acc2, acc3


@triton.jit
def _wo_gemv_int4_kernel(
    X, Q, S, Z, Y, P, COUNT, N, K, k_chunk, n_splits, stride_sg, one,
    GROUP: tl.constexpr, STRIDE: tl.constexpr, ROWS: tl.constexpr, WORDS: tl.constexpr,
    WPT: tl.constexpr, SPLIT: tl.constexpr, MASKED: tl.constexpr, IS_BF16: tl.constexpr,
):
    """One row (decode, M = 1) of int4 on the CUDA cores: y[n] = sum_k x[k] w[k, n].
    Q is the packed (K/2, N) weight read as 32-bit words, STRIDE = N / 4 words a row (byte
    c of word i: column 4 i + c, its low nibble k = 2j, its high nibble 2j + 1). Each
    thread takes one word column (four output columns) and ROWS rows of it at a time, all
    in its own registers, so every sum over K stays inside the thread: no shuffles, no
    shared memory, and the warp's 32 words of a row are one 128-byte read.
    The scale and zero fold out of the per-weight work (all in fp32): each nibble is made
    the float 1 + q 2^-e from bits and multiplied by x, so
      sum_k x_k (1 + q_k 2^-e) = sum_k x_k + 2^-e sum_k x_k q_k,
    and s (sum x q - z sum x) is recovered once per row batch and group part. e is 8 or 4:
    the fields sit at bits 15-22, so 2^-e sum x q is not small against sum x, and taken out
    per batch the offset sum x never builds up (~18 bits kept). About 3 instructions a
    weight (shift per byte, LOP3, FFMA).
    Many one-warp programs (K split ~8 waves) keep enough rows in flight; a row batch
    loads as one burst of ROWS loads per thread, issued while the batch before is computed.
    A chunk whose sums come out NaN (x holds an inf or a NaN) is summed again weight by
    weight (_gemv_int4_per_weight)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    t = tl.arange(0, WORDS)
    # WPT words per thread (one vector load a row): neighbouring runs of WPT words swapped
    # so that Triton sees no longer contiguity (it would give each thread a longer vector
    # and split the rows over threads). Triton 3.6 then lays the (words, rows) tile out
    # words-first, rows in-thread.
    rw = pid_n * WORDS + ((t // WPT) ^ 1) * WPT + t % WPT
    w_ok = rw < N // 4
    r = tl.arange(0, ROWS)
    q_cols = Q + rw
    q_rows = r * STRIDE
    k_start = pid_k * k_chunk
    k_end = tl.minimum(k_start + k_chunk, K)
    acc0 = tl.zeros([WORDS], dtype=tl.float32)
    acc1 = tl.zeros([WORDS], dtype=tl.float32)
    acc2 = tl.zeros([WORDS], dtype=tl.float32)
    acc3 = tl.zeros([WORDS], dtype=tl.float32)
    KB: tl.constexpr = 2 * ROWS  # k per batch; a batch lies inside one group
    X32 = X.to(tl.pointer_type(tl.int32), bitcast=True)  # x[2j], x[2j + 1] as one word
    q = _gemv_rows(q_cols, q_rows, k_start // 2, k_end // 2, r, w_ok, STRIDE, MASKED)
    for k0 in range(k_start, k_end, KB):
        xp = tl.load(X32 + k0 // 2 + r)
        xe, xo = _x_pair(xp, IS_BF16)
        xe_sum = tl.sum(xe, axis=0)
        xo_sum = tl.sum(xo, axis=0)
        # byte b's nibbles (bits 8b..8b+7) shifted to bits 15-22: 1 + lo / 256, 1 + hi / 16
        u0 = q << 15
        u1 = q << 7
        u2 = q >> 1
        u3 = q >> 9
        lo_mask: tl.constexpr = 0x78000
        hi_mask: tl.constexpr = 0x780000
        a0l = tl.sum(_near_one(u0, lo_mask, one) * xe[None, :], axis=1)
        a0h = tl.sum(_near_one(u0, hi_mask, one) * xo[None, :], axis=1)
        a1l = tl.sum(_near_one(u1, lo_mask, one) * xe[None, :], axis=1)
        a1h = tl.sum(_near_one(u1, hi_mask, one) * xo[None, :], axis=1)
        a2l = tl.sum(_near_one(u2, lo_mask, one) * xe[None, :], axis=1)
        a2h = tl.sum(_near_one(u2, hi_mask, one) * xo[None, :], axis=1)
        a3l = tl.sum(_near_one(u3, lo_mask, one) * xe[None, :], axis=1)
        a3h = tl.sum(_near_one(u3, hi_mask, one) * xo[None, :], axis=1)
        x_sum = xe_sum + xo_sum
        sz = (k0 // GROUP) * stride_sg + 4 * rw
        acc0 += _fold_group(S, Z, sz, w_ok, a0l, a0h, xe_sum, xo_sum, x_sum)
        acc1 += _fold_group(S, Z, sz + 1, w_ok, a1l, a1h, xe_sum, xo_sum, x_sum)
        acc2 += _fold_group(S, Z, sz + 2, w_ok, a2l, a2h, xe_sum, xo_sum, x_sum)
        acc3 += _fold_group(S, Z, sz + 3, w_ok, a3l, a3h, xe_sum, xo_sum, x_sum)
        q = _gemv_rows(q_cols, q_rows, _next_batch(k0, KB, k_start, k_end) // 2, k_end // 2, r, w_ok, STRIDE,
                       MASKED)
    if _any_nan(acc0) | _any_nan(acc1) | _any_nan(acc2) | _any_nan(acc3):  # x holds an inf or a NaN
        acc0, acc1, acc2, acc3 = _gemv_int4_per_weight(X32, q_cols, S, Z, rw, w_ok, k_start, k_end, stride_sg,
                                                       GROUP, STRIDE, WORDS, IS_BF16)
    if SPLIT:
        part = P + pid_k.to(tl.int64) * N + 4 * rw
        tl.store(part, acc0, mask=w_ok)
        tl.store(part + 1, acc1, mask=w_ok)
        tl.store(part + 2, acc2, mask=w_ok)
        tl.store(part + 3, acc3, mask=w_ok)
        if last_to_arrive(COUNT, pid_n, n_splits):
            cols = pid_n * 4 * WORDS + tl.arange(0, 4 * WORDS)  # the tile's words are these columns
            c_ok = cols < N
            total = tl.zeros([4 * WORDS], dtype=tl.float32)
            for s_ in range(0, n_splits):
                total += tl.load(P + s_ * N + cols, mask=c_ok, other=0.0, cache_modifier=".cg")
            tl.store(Y + cols, to_float(total, Y.dtype.element_ty), mask=c_ok)
    else:
        out = Y + 4 * rw
        tl.store(out, to_float(acc0, Y.dtype.element_ty), mask=w_ok)
        tl.store(out + 1, to_float(acc1, Y.dtype.element_ty), mask=w_ok)
        tl.store(out + 2, to_float(acc2, Y.dtype.element_ty), mask=w_ok)
        tl.store(out + 3, to_float(acc3, Y.dtype.element_ty), mask=w_ok)


@triton.jit
def _any_nan(v):
    """Whether the 1-D tensor v holds a NaN (one reduction: the common case's whole cost)."""
    return tl.max((v != v).to(tl.int32), axis=0) != 0


@triton.jit
def _signed_byte(u, shift: tl.constexpr):
    """The signed byte at bits shift .. shift + 7 of the int32 u, as fp32."""
    return ((u << (24 - shift)) >> 24).to(tl.float32)


@triton.jit
def _gemv_int8_per_weight(Q32, X32, rn, n_ok, stride_w, k_start, k_end, BLOCK_N: tl.constexpr,
                          IS_BF16: tl.constexpr):
    """sum_k x[k] q[n, k] over the chunk with each weight's product taken alone, one word
    (4 k) of each row a step (few registers; slow): for chunks where x holds an inf or a
    NaN, where the main loop's offset (f - 1152) x, summed as f x - 1152 x, gives inf - inf
    and q x gives +-inf, or NaN where q = 0, as x w does."""
    rows = Q32 + rn.to(tl.int64) * stride_w
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for w in range(k_start // 4, k_end // 4):
        u = tl.load(rows + w, mask=n_ok, other=0)
        x0, x1 = _x_pair(tl.load(X32 + 2 * w), IS_BF16)
        x2, x3 = _x_pair(tl.load(X32 + 2 * w + 1), IS_BF16)
        acc += _signed_byte(u, 0) * x0 + _signed_byte(u, 8) * x1 + _signed_byte(u, 16) * x2 + _signed_byte(u, 24) * x3
    return acc


@triton.jit
def _wo_gemv_int8_kernel(
    X, Q, S, Y, P, COUNT, N, K, k_chunk, n_splits, stride_w, flip,
    BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, SPLIT: tl.constexpr, MASKED: tl.constexpr,
    IS_BF16: tl.constexpr, ASM: tl.constexpr,
):
    """One row (decode, M = 1) of int8 on the CUDA cores: y[n] = s[n] sum_k x[k] q[n, k].
    Q is the (N, K) weight read as 32-bit words of 4 k, stride_w = K / 4 words a row; a
    program takes BLOCK_N rows and BLOCK_W words of each a step, each row a contiguous run
    (on this layout the loads alone run faster than a plain read of the same bytes,
    gemv_nk_lab2.txt). Each word's bytes, made q + 128 by one XOR, become the floats
    1024 + (q + 128) (_bytes_as_floats: PRMT and HADD2.F32, none on the integer pipe,
    which the bit-field trick of the int4 kernel had kept busy: 26.1 against 24.5 us,
    gemv_nk_lab3.txt); each is multiplied by its x and summed in fp32 per thread and word
    slot, and the offset 1152 x is taken out every step, so it never builds up. One sum
    across threads a row at the end, then the channel scale.
    K is a multiple of 4 (whole words); rows past N and words past the chunk are masked
    (MASKED) and read as zero, with x zero there too. A chunk whose sums come out NaN (x
    holds an inf or a NaN) is summed again weight by weight (_gemv_int8_per_weight)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    rw = tl.arange(0, BLOCK_W)
    q_rows = Q.to(tl.pointer_type(tl.int32), bitcast=True) + rn.to(tl.int64)[:, None] * stride_w
    X32 = X.to(tl.pointer_type(tl.int32), bitcast=True)  # x[2j], x[2j + 1] as one word
    k_start = pid_k * k_chunk
    k_end = tl.minimum(k_start + k_chunk, K)
    acc = tl.zeros([BLOCK_N, BLOCK_W], dtype=tl.float32)
    for k0 in range(k_start, k_end, 4 * BLOCK_W):
        w = k0 // 4 + rw
        if MASKED:
            w_ok = 4 * w < k_end
            u = tl.load(q_rows + w[None, :], mask=n_ok[:, None] & w_ok[None, :], other=0)
            x01 = tl.load(X32 + 2 * w, mask=w_ok, other=0)
            x23 = tl.load(X32 + 2 * w + 1, mask=w_ok, other=0)
        else:
            u = tl.load(q_rows + w[None, :])
            x01 = tl.load(X32 + 2 * w)
            x23 = tl.load(X32 + 2 * w + 1)
        x0, x1 = _x_pair(x01, IS_BF16)
        x2, x3 = _x_pair(x23, IS_BF16)
        f0, f1, f2, f3 = _bytes_as_floats(u ^ flip, ASM)  # q + 1152, exactly
        acc += f0 * x0[None, :]
        acc += f1 * x1[None, :]
        acc += f2 * x2[None, :]
        acc += f3 * x3[None, :]
        acc -= 1152.0 * (x0 + x1 + x2 + x3)[None, :]
    part = tl.sum(acc, axis=1)
    if _any_nan(part):  # x holds an inf or a NaN
        part = _gemv_int8_per_weight(Q.to(tl.pointer_type(tl.int32), bitcast=True), X32, rn, n_ok, stride_w, k_start,
                                     k_end, BLOCK_N, IS_BF16)
    if SPLIT:
        tl.store(P + pid_k.to(tl.int64) * N + rn, part, mask=n_ok)
        if last_to_arrive(COUNT, pid_n, n_splits):
            part = tl.zeros([BLOCK_N], dtype=tl.float32)
            for s_ in range(0, n_splits):
                part += tl.load(P + s_ * N + rn, mask=n_ok, other=0.0, cache_modifier=".cg")
            s = tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)
            tl.store(Y + rn, to_float(part * s, Y.dtype.element_ty), mask=n_ok)
    else:
        s = tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)
        tl.store(Y + rn, to_float(part * s, Y.dtype.element_ty), mask=n_ok)


@triton.jit
def _x_pair(xp, IS_BF16: tl.constexpr):
    """The two 16-bit x values of the 32-bit word xp (low half first) in fp32."""
    if IS_BF16:
        return _bits_f32(xp << 16), _bits_f32(xp & -65536)
    else:
        return ((xp & 65535).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32),
                (xp >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32))


@triton.jit
def _fold_group(S, Z, sz, w_ok, a_lo, a_hi, xe_sum, xo_sum, x_sum):
    """One column's int4 batch, (q - z) s summed against x: sum x q from the low nibbles'
    sum x (1 + q / 256) and the high nibbles' sum x (1 + q / 16), then s (sum x q - z sum x)."""
    s = tl.load(S + sz, mask=w_ok, other=0.0).to(tl.float32)
    z = tl.load(Z + sz, mask=w_ok, other=0.0).to(tl.float32)
    return s * (256.0 * (a_lo - xe_sum) + 16.0 * (a_hi - xo_sum) - z * x_sum)


@triton.jit
def _int4_tile_per_weight(X, Q, S, Z, k_start, k_end, rm, rn, m_ok, n_ok, stride_xm, stride_q, stride_sg,
                          GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """The int4 tile's product over the chunk with each weight dequantized first, (q - z) s
    in fp32 as quantize.dequantize does: for rows whose x holds an inf or a NaN, where the
    options that keep the weights exact (deq_dot off) give inf - inf. The dots may round the
    operands to tf32, which keeps every nonzero weight nonzero and its sign (fp32's exponent
    range), so x w is still +-inf or NaN where x is inf or NaN, as in float64."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        w, x_a, x_b, s, z = _load_tile(X, Q, S, Z, k0, k_end, rm, rn, m_ok, n_ok, stride_xm, stride_q, stride_sg,
                                       4, GROUP, False, False, False, BLOCK_M, BLOCK_N, BLOCK_K)
        lo = ((w & 15).to(tl.float32) - z[None, :]) * s[None, :]
        hi = ((w >> 4).to(tl.float32) - z[None, :]) * s[None, :]
        acc = tl.dot(x_a.to(tl.float32), lo, acc)
        acc = tl.dot(x_b.to(tl.float32), hi, acc)
    return acc


@triton.jit
def _wo_matmul_kernel(
    X, Q, S, Z, Y, P, COUNT,
    M, N, K, k_chunk, n_splits, stride_xm, stride_q, stride_sg, stride_ym,
    BITS: tl.constexpr, GROUP: tl.constexpr, SPLIT: tl.constexpr, SWAP_AB: tl.constexpr, FAST_CVT: tl.constexpr,
    INTERLEAVE: tl.constexpr, X_SPLIT: tl.constexpr, DEQ_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
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
        w, x_a, x_b, s, z = _load_tile(X, Q, S, Z, k0, k_end, rm, rn, m_ok, n_ok, stride_xm, stride_q, stride_sg,
                                       BITS, GROUP, SWAP_AB, INTERLEAVE, X_SPLIT, BLOCK_M, BLOCK_N, BLOCK_K)
        acc, acc_t = _accumulate(acc, acc_t, w, x_a, x_b, s, z, BITS, SWAP_AB, FAST_CVT, INTERLEAVE, DEQ_DOT)
    if SWAP_AB:
        acc = tl.trans(acc_t)
    if BITS == 4 and not DEQ_DOT:  # s (sum x q - z sum x) gives inf - inf where x holds an inf
        nan_rows = tl.max((acc != acc).to(tl.int32), axis=1) != 0
        if tl.max(nan_rows.to(tl.int32), axis=0) != 0:
            exact = _int4_tile_per_weight(X, Q, S, Z, k_start, k_end, rm, rn, m_ok, n_ok, stride_xm, stride_q,
                                          stride_sg, GROUP, BLOCK_M, BLOCK_N, BLOCK_K)
            acc = tl.where(nan_rows[:, None], exact, acc)

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
            tl.store(y_ptrs, to_float(acc, Y.dtype.element_ty), mask=out_mask)
    else:
        if BITS == 8:
            acc = acc * tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptrs, to_float(acc, Y.dtype.element_ty), mask=out_mask)


@triton.jit
def _dequant_kernel(Q, S, Z, W, K, N, stride_q, stride_sg, BITS: tl.constexpr, GROUP: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """The weight the stored format represents, in W's dtype, computed in fp32 as
    quantize.dequantize does and rounded once. A block is BLOCK_R rows by BLOCK_C columns
    of Q: int8, W (N, K) = q s, rows the output channels; int4, W (K, N) = (q - z) s, rows
    the packed k pairs (2 BLOCK_R rows of W, inside one group)."""
    rr = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    if BITS == 8:
        r_ok = rr < N
        mask = r_ok[:, None] & (rc < K)[None, :]
        q = tl.load(Q + rr[:, None].to(tl.int64) * stride_q + rc[None, :], mask=mask, other=0)
        s = tl.load(S + rr, mask=r_ok, other=0.0).to(tl.float32)
        w = q.to(tl.float32) * s[:, None]
        tl.store(W + rr[:, None].to(tl.int64) * K + rc[None, :], to_float(w, W.dtype.element_ty), mask=mask)
    else:
        c_ok = rc < N
        mask = (rr < K // 2)[:, None] & c_ok[None, :]
        q = tl.load(Q + rr[:, None].to(tl.int64) * stride_q + rc[None, :], mask=mask, other=0)
        g = (tl.program_id(0) * BLOCK_R * 2) // GROUP
        s = tl.load(S + g * stride_sg + rc, mask=c_ok, other=0.0).to(tl.float32)
        z = tl.load(Z + g * stride_sg + rc, mask=c_ok, other=0.0).to(tl.float32)
        lo = ((q & 15).to(tl.float32) - z[None, :]) * s[None, :]  # k = 2j
        hi = ((q >> 4).to(tl.float32) - z[None, :]) * s[None, :]  # k = 2j + 1
        out = W + (2 * rr[:, None]).to(tl.int64) * N + rc[None, :]
        tl.store(out, to_float(lo, W.dtype.element_ty), mask=mask)
        tl.store(out + N, to_float(hi, W.dtype.element_ty), mask=mask)


def dequantize_weight(qw: QuantizedWeight, dtype: torch.dtype, block_r: int = 16, block_n: int = 512,
                      num_warps: int = 4) -> torch.Tensor:
    """The (K, N) weight of qw in `dtype`, by the Triton kernel above: the same values as
    quantize.dequantize(qw).to(dtype).t(), bit for bit. For int8 it is the transposed view
    of an (N, K) tensor, as nn.Linear holds its weight (torch.mm reads it so, no copy).
    block_r (rows of qweight per program) must divide group / 2 for int4, so that a block
    lies in one group; block_n: columns of qweight per program."""
    _check_kernel_weight(qw)
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"dtype must be torch.float16, bfloat16 or float32, got {dtype!r}")
    for name, v, top in (("block_r", block_r, 1024), ("block_n", block_n, 4096), ("num_warps", num_warps, 32)):
        check_int(name, v, 1)
        if v & (v - 1) or v > top:
            raise ValueError(f"{name} must be a power of two up to {top}, got {v}")
    N, K = qw.shape
    if qw.bits == 4 and (qw.group // 2) % block_r:
        raise ValueError(f"block_r {block_r} must divide half the group ({qw.group // 2})")
    w = torch.empty(*((N, K) if qw.bits == 8 else (K, N)), dtype=dtype, device=qw.qweight.device)
    if w.numel():
        rows, cols = qw.qweight.shape
        zero = qw.zero if qw.bits == 4 else qw.scale
        _dequant_kernel[(triton.cdiv(rows, block_r), triton.cdiv(cols, block_n))](
            qw.qweight, qw.scale, zero, w, K, N, qw.qweight.stride(0), qw.scale.stride(0) if qw.bits == 4 else 0,
            BITS=qw.bits, GROUP=qw.group or 1, BLOCK_R=block_r, BLOCK_C=block_n, num_warps=num_warps)
    return w.t() if qw.bits == 8 else w


def _check_kernel_weight(qw) -> None:
    """qw in the stored format (quantize.check_quantized), contiguous, where the kernels run."""
    check_quantized(qw)
    for name in ("qweight", "scale", "zero") if qw.bits == 4 else ("qweight", "scale"):
        t = getattr(qw, name)
        check_device(f"qw.{name}", t)
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")


def gemv_takes(N: int, K: int, bits: int) -> bool:
    """Whether the one-row path takes the shape: it reads whole 32-bit words, 4 output
    channels of an int4 row (N % 4), or 4 input channels of an int8 row (K % 4)."""
    for name, v in (("N", N), ("K", K), ("bits", bits)):
        check_int(name, v)
    if bits not in (4, 8):
        raise ValueError(f"bits must be 8 or 4, got {bits}")
    return (N if bits == 4 else K) % 4 == 0


def _gemv_refusal(N: int, K: int, qw: QuantizedWeight) -> str | None:
    """Why the one-row path cannot read this weight, or None: its shape (gemv_takes) or a
    qweight not on a 4-byte boundary (a view at an odd offset: the 32-bit loads would fault)."""
    if not gemv_takes(N, K, qw.bits):
        return ("the gemv path reads 32-bit words of four weights: "
                + (f"out_features {N}" if qw.bits == 4 else f"in_features {K}") + " is not a multiple of 4")
    if qw.qweight.data_ptr() % 4:
        return ("the gemv path reads the weight as 32-bit words: qweight does not start on a 4-byte boundary "
                "(a view at an odd offset); pass a contiguous copy")
    return None


def _config(M: int, N: int, K: int, bits: int, group, path=None, gemv_refusal=None):
    """Launch defaults, from H100 sweeps (tools/quant_configs.py; results/<gpu>/quant_configs*.txt),
    bf16, 4096 -> 14336 unless said:
    - one row on the CUDA cores (gemv): int4 g128 44.9 -> 32.4 -> 27.3 us (words, loads a
      block ahead) -> 19.8 us (one word column per thread, scale and zero folded out of the
      per-weight work; gemv_lab2.txt), int8 41.2 -> 31.0 -> 29.2 -> 27.6 us on the (K, N)
      layout, 24.5 us on (N, K) with the bytes made floats off the integer pipe
      (gemv_nk_lab4.txt);
    - int4, 2 to 191 rows: dequantized before the dot (deq_dot), weights as the MMA's left
      operand: 16 rows 49.2 -> 36.9 us, 64 rows 117 -> 64.7 us (quant_configs_deq-bits.txt);
      x read contiguously (x_split): 16 rows 31.4 us, 64 rows 47.2 us, 128 rows 76.7 us
      (quant_configs_x-split.txt);
    - int8, 16 rows 40.0 -> 31.1 us, 64 rows 45.2 -> 40.5 us (quant_configs_split-deq.txt); on
      the (N, K) layout 26.2 and 36.4 us with longer runs of k (quant_configs_mma-nk*.txt);
    - from DEQUANT_MIN_ROWS rows, dequantize-then-cuBLAS: int4 2048 rows 1468 -> 356 us,
      int8 528 -> 363 us (cuBLAS bf16 alone 304 us; quant_configs_prefill.txt)."""
    path = path or ("gemv" if M == 1 and gemv_refusal is None else "dequant" if M >= DEQUANT_MIN_ROWS[bits]
                    else "mma")
    if path not in ("mma", "gemv", "dequant"):
        raise ValueError(f"path must be 'mma', 'gemv' or 'dequant', got {path!r}")
    if path == "dequant":
        return dict(path="dequant", block_r=16, block_n=512, num_warps=4)
    if path == "gemv":
        if M != 1:
            raise ValueError(f"the gemv path computes one row; x has {M}")
        if gemv_refusal:
            raise ValueError(gemv_refusal)
        if bits == 8:
            # 8 KB of weights a program and step (H100, quant_configs_gemv-nk.txt): 16 rows of
            # 512 k over 4 warps where N gives enough programs (4096 -> 14336: 24.4 us, the
            # read bound 24.2), else 4 rows of 2048 k over 4 warps (14336 -> 4096 25.3 us,
            # 4096 -> 4096 11.1, 4096 -> 6144 14.5; 16 rows at 14336 -> 4096, 256 programs,
            # ran 32.4 us, gemv_nk_lab4.txt). K is split only below ~6 programs a SM.
            wide = N >= 8192
            return dict(path="gemv", block_n=16 if wide else 4, block_k=512 if wide else 2048, num_warps=4,
                        num_stages=3, waves=6)
        # one warp a program, 32 rows a batch, K split over ~8 waves of programs (H100 sweep,
        # gemv_lab2.txt: int4 4096 -> 14336 19.8 us, 14336 -> 4096 21.3 us; more waves of
        # 16-row batches, 64 registers a thread, ran 20.6 and 22.9 us).
        return dict(path="gemv", rows=min(32, group // 2), num_warps=1, waves=8, maxnreg=None)
    cfg = dict(path="mma", num_warps=4, num_stages=3, swap_ab=True, fast_cvt=False, interleave=False, x_split=False,
               deq_dot=bits == 4)
    if bits == 4:
        cfg |= dict(block_k=min(128, group), x_split=True)
        if M <= 16:  # 4096 -> 4096 at 16 rows: 4 waves 14.8 us, 8 waves 17.0 (quant_configs_x-split.txt)
            cfg |= dict(block_m=16, block_n=64, waves=8 if K * N > 2**25 else 4)
        elif M <= 64:
            cfg |= dict(block_m=64, block_n=64, waves=1)
        else:
            cfg |= dict(block_m=128, block_n=128, num_warps=8, waves=1)
    elif M <= 16:  # (N, K) rows read 256 k at a time (quant_configs_mma-nk.txt: 16 rows 38.5 -> 26.2 us)
        cfg |= dict(block_m=16, block_n=64, block_k=256, waves=1 if N >= 8192 else 2, swap_ab=False)
    elif M <= 64:  # 64 rows 42.5 -> 36.4 us (quant_configs_mma-nk64.txt)
        cfg |= dict(block_m=64, block_n=64, block_k=128, waves=1, swap_ab=False)
    else:
        cfg |= dict(block_m=128, block_n=128, block_k=64, num_warps=8, waves=1, swap_ab=False)
    return cfg


def wo_matmul(x: torch.Tensor, qw: QuantizedWeight, *, num_splits=None, _config_override=None) -> torch.Tensor:
    """x @ dequant(qw)^T for x (..., K) fp16/bf16; returns (..., N) in x's dtype."""
    check_tensor("x", x, dtypes=DTYPES)
    _check_kernel_weight(qw)
    N, K = qw.shape
    if x.shape[-1] != K:
        raise ValueError(f"x has {x.shape[-1]} input channels; the weight has in_features {K}")
    if qw.qweight.device != x.device:
        raise ValueError(f"qweight is on {qw.qweight.device}, x on {x.device}: they must be on one device")
    if qw.scale.dtype != x.dtype or (qw.zero is not None and qw.zero.dtype != x.dtype):
        raise TypeError(f"scales are {qw.scale.dtype} but x is {x.dtype}: quantize with dtype={x.dtype}")
    if num_splits is not None:
        check_int("num_splits", num_splits, 1)

    x2 = x.reshape(math.prod(x.shape[:-1]), K)  # (-1, K) is ambiguous for K = 0
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    M = x2.shape[0]
    y = torch.empty(*x.shape[:-1], N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    if K == 0:  # an empty sum
        return y.zero_()
    y2 = y.view(-1, N)
    cfg = _config(M, N, K, qw.bits, qw.group, (_config_override or {}).get("path"), _gemv_refusal(N, K, qw))
    cfg.update(_config_override or {})
    if cfg["path"] == "dequant":  # many rows: the weight once in x's dtype, then cuBLAS
        torch.mm(x2, dequantize_weight(qw, x.dtype, cfg["block_r"], cfg["block_n"], cfg["num_warps"]), out=y2)
        return y
    if cfg["path"] == "gemv":
        _gemv(x2, qw, y2, cfg, num_splits)
        return y
    if qw.bits == 4 and (qw.group % cfg["block_k"] or cfg["block_k"] & (cfg["block_k"] - 1)):
        raise ValueError(f"block_k {cfg['block_k']} must be a power of two dividing the group {qw.group}: "
                         "a K block may not straddle two groups")
    n_tiles, m_tiles = triton.cdiv(N, cfg["block_n"]), triton.cdiv(M, cfg["block_m"])
    n_splits, k_chunk = split_plan(K, cfg["block_k"], n_tiles * m_tiles, x.device, num_splits, cfg["waves"],
                                   min_blocks=2)
    split = n_splits > 1
    p, count = _split_scratch(n_splits, y2, n_tiles * m_tiles)
    zero = qw.zero if qw.bits == 4 else qw.scale
    _wo_matmul_kernel[(n_tiles, n_splits, m_tiles)](
        x2, qw.qweight, qw.scale, zero, y2, p, count,
        M, N, K, k_chunk, n_splits, x2.stride(0), qw.qweight.stride(0), qw.scale.stride(0), y2.stride(0),
        BITS=qw.bits, GROUP=qw.group or 1, SPLIT=split, SWAP_AB=bool(cfg["swap_ab"]), FAST_CVT=bool(cfg["fast_cvt"]),
        INTERLEAVE=bool(cfg["interleave"]), X_SPLIT=bool(cfg.get("x_split")), DEQ_DOT=bool(cfg.get("deq_dot")),
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return y


def _split_scratch(n_splits: int, out: torch.Tensor, n_tiles: int):
    """A K split's fp32 partials, (n_splits, *out.shape), and its output tiles' arrival
    counters; with one chunk neither is used and `out` stands in for both."""
    if n_splits == 1:
        return out, out
    return (torch.empty(n_splits, *out.shape, dtype=torch.float32, device=out.device),
            tile_counters(out.device, n_tiles))


def _gemv(x2: torch.Tensor, qw: QuantizedWeight, y2: torch.Tensor, cfg: dict, num_splits=None):
    """The one-row path into y2 (1, N): _wo_gemv_int4_kernel or _wo_gemv_int8_kernel."""
    N, K = qw.shape
    takes = {"path", "num_warps", "waves"} | ({"rows", "maxnreg", "words_per_thread"} if qw.bits == 4
                                              else {"block_n", "block_k", "num_stages"})
    unknown = set(cfg) - takes
    if unknown:
        raise ValueError(f"the int{qw.bits} gemv path has no option {sorted(unknown)[0]!r} "
                         f"(it takes {', '.join(sorted(takes - {'path'}))})")
    if x2.data_ptr() % 4:  # the kernels read x as 32-bit pairs
        x2 = x2.clone()
    if qw.bits == 8:
        _gemv_int8(x2, qw, y2, cfg, num_splits)
        return
    rows, warps = cfg["rows"], cfg["num_warps"]
    if rows not in (4, 8, 16, 32, 64):
        raise ValueError(f"the gemv path takes rows (weight rows per batch) in 4, 8, 16, 32, 64; got {rows}")
    if (qw.group // 2) % rows:
        raise ValueError(f"the gemv path's int4 batches lie inside one group: rows must divide {qw.group // 2} "
                         f"(half the group {qw.group}), got {rows}")
    words = qw.qweight.view(torch.int32)  # four columns per word (N % 4 == 0, checked by _config)
    wpt = cfg.get("words_per_thread", 1)
    if wpt not in (1, 2, 4):
        raise ValueError(f"the gemv path takes words_per_thread 1, 2 or 4; got {wpt}")
    per_program = 32 * warps * wpt  # wpt word columns per thread
    n_tiles = triton.cdiv(N // 4, per_program)
    n_splits, k_chunk = split_plan(K, qw.group, n_tiles, x2.device, num_splits, cfg["waves"], min_blocks=1)
    split = n_splits > 1
    p, count = _split_scratch(n_splits, y2, n_tiles)
    extra = {"maxnreg": cfg["maxnreg"]} if cfg.get("maxnreg") else {}
    _wo_gemv_int4_kernel[(n_tiles, n_splits)](
        x2, words, qw.scale, qw.zero, y2, p, count, N, K, k_chunk, n_splits, qw.scale.stride(0), 0x3F800000,
        GROUP=qw.group, STRIDE=words.stride(0), ROWS=rows, WORDS=per_program, WPT=wpt, SPLIT=split,
        MASKED=(N // 4) % per_program != 0, IS_BF16=x2.dtype == torch.bfloat16, num_warps=warps, num_stages=1,
        **extra)


def _gemv_int8(x2: torch.Tensor, qw: QuantizedWeight, y2: torch.Tensor, cfg: dict, num_splits=None):
    N, K = qw.shape
    block_n, block_k, warps = cfg["block_n"], cfg["block_k"], cfg["num_warps"]
    for name, v in (("block_n", block_n), ("block_k", block_k)):
        if not isinstance(v, int) or v < 1 or v & (v - 1):
            raise ValueError(f"the int8 gemv path's {name} must be a power of two, got {v!r}")
    if block_k < 4:
        raise ValueError(f"the int8 gemv path's block_k must be at least 4 (one 32-bit word), got {block_k}")
    n_tiles = triton.cdiv(N, block_n)
    n_splits, k_chunk = split_plan(K, block_k, n_tiles, x2.device, num_splits, cfg["waves"], min_blocks=1)
    split = n_splits > 1
    p, count = _split_scratch(n_splits, y2, n_tiles)
    _wo_gemv_int8_kernel[(n_tiles, n_splits)](
        x2, qw.qweight, qw.scale, y2, p, count, N, K, k_chunk, n_splits, K // 4, -0x7F7F7F80,  # 0x80808080 as int32
        BLOCK_N=block_n, BLOCK_W=block_k // 4, SPLIT=split, MASKED=N % block_n != 0 or K % block_k != 0,
        IS_BF16=x2.dtype == torch.bfloat16, ASM=not interpreting(), num_warps=warps, num_stages=cfg["num_stages"])
