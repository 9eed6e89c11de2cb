"""Weight-only quantized linear layers in Triton: W8A16 and W4A16 (grouped).

    y = x @ dequant(W)^T          x (M, K) fp16/bf16, W a QuantizedWeight (kernels/quant/quantize.py)

Three paths, chosen by the number of rows (defaults from H100 sweeps, see _config):
- one row (`path="gemv"`, _wo_gemv_kernel): the CUDA cores, no 16-row padding; exact in
  the weights (floats made from bits, scales and zeros applied in fp32);
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
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.checks import check_tensor
from kernels.launch import last_to_arrive, split_plan, tile_counters, tile_ranges

from .quantize import GROUP_SIZES, QuantizedWeight

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
def _load_tile(X, Q, S, Z, k0, k_end, rm, rn, m_ok, n_ok, stride_xm, stride_qk, stride_sg,
               BITS: tl.constexpr, GROUP: tl.constexpr, SWAP_AB: tl.constexpr, INTERLEAVE: tl.constexpr,
               X_SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
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
            elif X_SPLIT:  # x read contiguously, its even and odd columns parted in registers
                x_t = tl.load(x_cols + rk[:, None], mask=m_ok[None, :] & k_ok[:, None], other=0.0)
                x_a, x_b = tl.split(tl.permute(tl.reshape(x_t, (BLOCK_K // 2, 2, BLOCK_M)), (0, 2, 1)))
            else:
                x_a = tl.load(x_cols + 2 * j[:, None], mask=m_ok[None, :] & j_ok[:, None], other=0.0)
                x_b = tl.load(x_cols + 2 * j[:, None] + 1, mask=m_ok[None, :] & j_ok[:, None], other=0.0)
        else:
            w = tl.load(Q + j[:, None].to(tl.int64) * stride_qk + rn[None, :], mask=n_ok[None, :] & j_ok[:, None], other=0)
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
        return q.to(dtype)


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
    then accumulates straight into acc (each weight rounded once, as dequantize-then-GEMM)."""
    if BITS == 4 and DEQ_DOT:
        dt = x_a.dtype
        minus_zs = -z * s
        if SWAP_AB:  # the tile is (N, K / 2): scale and zero vary along axis 0
            s_b, minus_zs_b = s[:, None], minus_zs[:, None]
        else:
            s_b, minus_zs_b = s[None, :], minus_zs[None, :]
        lo = _dequant_nibble(w & 15, s_b, minus_zs_b).to(dt)
        hi = _dequant_nibble(w >> 4, s_b, minus_zs_b).to(dt)
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
def _bits_f32(bits):
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _int4_byte(acc, v, x_a, x_b, s, z, lo_mask, hi_mask):
    """acc += (q_lo - z) s x_a + (q_hi - z) s x_b for the byte whose two nibbles v holds at
    bits 12-15 (q_lo) and 16-19 (q_hi). ORed into the mantissa of 1.0 they are exact floats
    1 + q_lo / 2048 and 1 + q_hi / 128 (no conversion instruction; a nibble must stay below
    bit 23, the exponent), and one FMA each maps them to (q - z) s: the offset (2048 + z) s
    is far from 2^24 steps of s, so nothing cancels."""
    f_lo = _bits_f32((v & lo_mask) | 0x3F800000)
    f_hi = _bits_f32((v & hi_mask) | 0x3F800000)
    w_lo = f_lo * (2048.0 * s)[:, None] - ((2048.0 + z) * s)[:, None]
    w_hi = f_hi * (128.0 * s)[:, None] - ((128.0 + z) * s)[:, None]
    return acc + w_lo * x_a + w_hi * x_b


@triton.jit
def _int8_byte(acc, v, x, SHIFT: tl.constexpr):
    """acc += q 2^SHIFT x for the byte q + 128 that v holds at bits SHIFT to SHIFT + 7 (SHIFT
    0 or 8; the 256 of SHIFT 8 is taken out with the output scale). 2^23 + (q + 128) 2^SHIFT
    is an exact float from bits, and so is subtracting 2^23 + 128 2^SHIFT from it."""
    return acc + (_bits_f32(v | 0x4B000000) - (8388608.0 + (128 << SHIFT))) * x


@triton.jit
def _int4_block(Q, X, S, Z, k, q_offs, x_offs, rw, w_ok, stride_qk, stride_sg, BLOCK_K: tl.constexpr):
    """The int4 block at k (a whole group): its packed words, x's even and odd entries (in
    the tile's layout) and the group's scale and zero for byte columns 0-3, as stored."""
    row = tl.full([], 0, tl.int64) + k // 2  # 64-bit: the weight may pass 2^31 bytes
    q = tl.load(Q + row * stride_qk + q_offs, mask=w_ok[:, None], other=0)
    x_a = tl.load(X + k + x_offs)
    x_b = tl.load(X + k + 1 + x_offs)
    sz = (k // BLOCK_K) * stride_sg + 4 * rw
    s0 = tl.load(S + sz, mask=w_ok, other=0.0).to(tl.float32)
    s1 = tl.load(S + sz + 1, mask=w_ok, other=0.0).to(tl.float32)
    s2 = tl.load(S + sz + 2, mask=w_ok, other=0.0).to(tl.float32)
    s3 = tl.load(S + sz + 3, mask=w_ok, other=0.0).to(tl.float32)
    z0 = tl.load(Z + sz, mask=w_ok, other=0.0).to(tl.float32)
    z1 = tl.load(Z + sz + 1, mask=w_ok, other=0.0).to(tl.float32)
    z2 = tl.load(Z + sz + 2, mask=w_ok, other=0.0).to(tl.float32)
    z3 = tl.load(Z + sz + 3, mask=w_ok, other=0.0).to(tl.float32)
    return q, x_a, x_b, s0, s1, s2, s3, z0, z1, z2, z3


@triton.jit
def _int8_block(Q, X, k, k_end, q_offs, x_offs, r, w_ok, stride_qk, EVEN_K: tl.constexpr):
    """The int8 block at k: its words and x (in the tile's layout); rows past k_end read
    as zero unless EVEN_K (K and the chunks are whole blocks)."""
    row = tl.full([], 0, tl.int64) + k
    if EVEN_K:
        q = tl.load(Q + row * stride_qk + q_offs, mask=w_ok[:, None], other=0)
        x = tl.load(X + k + x_offs)
    else:
        q = tl.load(Q + row * stride_qk + q_offs, mask=w_ok[:, None] & (k + r < k_end)[None, :], other=0)
        x = tl.load(X + k + x_offs, mask=(k + r < k_end)[None, :], other=0.0)
    return q, x


@triton.jit
def _wo_gemv_kernel(
    X, Q, S, Z, Y, P, COUNT, N, K, k_chunk, n_splits, stride_qk, stride_sg, low_mask,
    BITS: tl.constexpr, SPLIT: tl.constexpr, EVEN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One row (decode, M = 1) on the CUDA cores: y[n] = sum_k x[k] w[k, n].
    Q is the packed weight read as 32-bit words: (K/2, N/4) for int4, (K, N/4) for int8;
    byte c of word i is column 4 i + c. Values become fp32 from bits (no conversion
    instruction), and the products accumulate in 2-D tiles, (words, rows), one per byte
    position, summed over K once at the end: the loop has no cross-thread reduction.
    int4 takes the tile's words in a permuted order (any order covers the same contiguous
    bytes per warp), which gives each thread two words of many rows: each group's
    per-column scale and zero then cost little against the rows they serve.
    Each block's inputs are loaded one block ahead. int4 blocks are one group
    (BLOCK_K = GROUP). low_mask (int4 0xF000, int8 0xFF) is an argument, not a literal:
    as a literal, ptxas rebuilds it in a register for every use (+15% instructions)."""
    WORDS: tl.constexpr = BLOCK_N // 4
    ROWS: tl.constexpr = BLOCK_K // 2 if BITS == 4 else BLOCK_K
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    t = tl.arange(0, WORDS)
    if BITS == 4:  # words permuted in pairs: two words of many rows per thread (see above)
        rw = pid_n * WORDS + ((t // 2) % 2) * (WORDS // 2) + (t // 4) * 2 + t % 2
    else:  # int8 has no per-block scale: 16-byte loads of four words per thread cost less
        rw = pid_n * WORDS + t
    w_ok = rw < N // 4
    i = tl.arange(0, ROWS)
    r = (i % 8) * (ROWS // 8) + i // 8  # rows permuted too, or Triton vectorizes x along them and reshuffles
    k_start = pid_k * k_chunk
    k_end = tl.minimum(k_start + k_chunk, K)
    acc0 = tl.zeros([WORDS, ROWS], dtype=tl.float32)
    acc1 = tl.zeros([WORDS, ROWS], dtype=tl.float32)
    acc2 = tl.zeros([WORDS, ROWS], dtype=tl.float32)
    acc3 = tl.zeros([WORDS, ROWS], dtype=tl.float32)
    # Offsets inside a block are loop-invariant 32-bit; each block moves one scalar 64-bit base.
    q_offs = rw[:, None] + r[None, :] * stride_qk
    ROW_STEP: tl.constexpr = 2 if BITS == 4 else 1  # k per row of Q
    # x broadcast over words, loaded in the weights' layout (no shared-memory shuffle). Its
    # pointer is equally contiguous along both axes, and Triton's coalescing then orders the
    # axes by position: 3.6 (the GPU image) puts axis 0 first, so words are axis 0, as they
    # must be for the weights. (Triton 3.9 breaks the tie the other way and shuffles.)
    x_offs = 0 * t[:, None] + ROW_STEP * r[None, :]
    # Everything a block needs is loaded one block ahead (past the chunk's end: its first block
    # again, a harmless re-read that needs no mask), so the loads of the next block fly while
    # this one is computed: without it the scale, zero and x loads stalled every block.
    if BITS == 4:
        high_mask = low_mask << 4  # the odd-k nibble, at bits 16-19
        q, x_a, x_b, s0, s1, s2, s3, z0, z1, z2, z3 = _int4_block(Q, X, S, Z, k_start, q_offs, x_offs, rw, w_ok,
                                                                 stride_qk, stride_sg, BLOCK_K)
        for k0 in range(k_start, k_end, BLOCK_K):  # whole blocks: K, chunks and k0 are multiples of BLOCK_K
            k_fetch = tl.where(k0 + BLOCK_K < k_end, k0 + BLOCK_K, k_start)
            nxt = _int4_block(Q, X, S, Z, k_fetch, q_offs, x_offs, rw, w_ok, stride_qk, stride_sg, BLOCK_K)
            x_a, x_b = x_a.to(tl.float32), x_b.to(tl.float32)
            # byte c's nibbles sit at bits 8c and 8c + 4: shift each pair to bits 12-19
            acc0 = _int4_byte(acc0, q << 12, x_a, x_b, s0, z0, low_mask, high_mask)
            acc1 = _int4_byte(acc1, q << 4, x_a, x_b, s1, z1, low_mask, high_mask)
            acc2 = _int4_byte(acc2, q >> 4, x_a, x_b, s2, z2, low_mask, high_mask)
            acc3 = _int4_byte(acc3, q >> 12, x_a, x_b, s3, z3, low_mask, high_mask)
            q, x_a, x_b, s0, s1, s2, s3, z0, z1, z2, z3 = nxt
    else:
        q, x = _int8_block(Q, X, k_start, k_end, q_offs, x_offs, r, w_ok, stride_qk, EVEN_K)
        for k0 in range(k_start, k_end, BLOCK_K):
            k_fetch = tl.where(k0 + BLOCK_K < k_end, k0 + BLOCK_K, k_start)
            q_next, x_next = _int8_block(Q, X, k_fetch, k_end, q_offs, x_offs, r, w_ok, stride_qk, EVEN_K)
            x = x.to(tl.float32)
            u = q ^ -2139062144  # 0x80808080 as int32: each signed byte q becomes q + 128
            u_hi = u >> 16  # bytes 2 and 3 at bits 0-15
            acc0 = _int8_byte(acc0, u & low_mask, x, 0)
            acc1 = _int8_byte(acc1, u & (low_mask << 8), x, 8)
            acc2 = _int8_byte(acc2, u_hi & low_mask, x, 0)
            acc3 = _int8_byte(acc3, u_hi & (low_mask << 8), x, 8)
            q, x = q_next, x_next
    out0 = tl.sum(acc0, axis=1)
    out1 = tl.sum(acc1, axis=1)
    out2 = tl.sum(acc2, axis=1)
    out3 = tl.sum(acc3, axis=1)
    if BITS == 8:  # the per-channel scale; bytes 1 and 3 were read 256 times too large
        col = 4 * rw
        out0 *= tl.load(S + col, mask=w_ok, other=0.0).to(tl.float32)
        out1 *= tl.load(S + col + 1, mask=w_ok, other=0.0).to(tl.float32) * (1.0 / 256.0)
        out2 *= tl.load(S + col + 2, mask=w_ok, other=0.0).to(tl.float32)
        out3 *= tl.load(S + col + 3, mask=w_ok, other=0.0).to(tl.float32) * (1.0 / 256.0)
    if SPLIT:
        part = P + pid_k.to(tl.int64) * N + 4 * rw
        tl.store(part, out0, mask=w_ok)
        tl.store(part + 1, out1, mask=w_ok)
        tl.store(part + 2, out2, mask=w_ok)
        tl.store(part + 3, out3, mask=w_ok)
        if last_to_arrive(COUNT, pid_n, n_splits):
            cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # the tile's words are these columns
            c_ok = cols < N
            total = tl.zeros([BLOCK_N], dtype=tl.float32)
            for s_ in range(0, n_splits):
                total += tl.load(P + s_ * N + cols, mask=c_ok, other=0.0, cache_modifier=".cg")
            tl.store(Y + cols, total.to(Y.dtype.element_ty), mask=c_ok)
    else:
        out = Y + 4 * rw
        tl.store(out, out0.to(Y.dtype.element_ty), mask=w_ok)
        tl.store(out + 1, out1.to(Y.dtype.element_ty), mask=w_ok)
        tl.store(out + 2, out2.to(Y.dtype.element_ty), mask=w_ok)
        tl.store(out + 3, out3.to(Y.dtype.element_ty), mask=w_ok)


@triton.jit
def _wo_matmul_kernel(
    X, Q, S, Z, Y, P, COUNT,
    M, N, K, k_chunk, n_splits, stride_xm, stride_qk, stride_sg, stride_ym,
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
        w, x_a, x_b, s, z = _load_tile(X, Q, S, Z, k0, k_end, rm, rn, m_ok, n_ok, stride_xm, stride_qk, stride_sg,
                                       BITS, GROUP, SWAP_AB, INTERLEAVE, X_SPLIT, BLOCK_M, BLOCK_N, BLOCK_K)
        acc, acc_t = _accumulate(acc, acc_t, w, x_a, x_b, s, z, BITS, SWAP_AB, FAST_CVT, INTERLEAVE, DEQ_DOT)
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


@triton.jit
def _dequant_kernel(Q, S, Z, W, K, N, stride_qk, stride_sg, BITS: tl.constexpr, GROUP: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    """W (K, N) = the weight the stored format represents, in W's dtype: q s (int8) or
    (q - z) s (int4), computed in fp32 as quantize.dequantize does and rounded once.
    A block is BLOCK_R rows of Q (int4: 2 BLOCK_R rows of W, inside one group)."""
    rr = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    rows = K if BITS == 8 else K // 2
    mask = (rr < rows)[:, None] & n_ok[None, :]
    q = tl.load(Q + rr[:, None].to(tl.int64) * stride_qk + rn[None, :], mask=mask, other=0)
    if BITS == 8:
        s = tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)
        w = q.to(tl.float32) * s[None, :]
        tl.store(W + rr[:, None].to(tl.int64) * N + rn[None, :], w.to(W.dtype.element_ty), mask=mask)
    else:
        g = (tl.program_id(0) * BLOCK_R * 2) // GROUP
        s = tl.load(S + g * stride_sg + rn, mask=n_ok, other=0.0).to(tl.float32)
        z = tl.load(Z + g * stride_sg + rn, mask=n_ok, other=0.0).to(tl.float32)
        lo = ((q & 15).to(tl.float32) - z[None, :]) * s[None, :]  # k = 2j
        hi = ((q >> 4).to(tl.float32) - z[None, :]) * s[None, :]  # k = 2j + 1
        out = W + (2 * rr[:, None]).to(tl.int64) * N + rn[None, :]
        tl.store(out, lo.to(W.dtype.element_ty), mask=mask)
        tl.store(out + N, hi.to(W.dtype.element_ty), mask=mask)


def dequantize_weight(qw: QuantizedWeight, dtype: torch.dtype, block_r: int = 16, block_n: int = 512,
                      num_warps: int = 4) -> torch.Tensor:
    """The (K, N) weight of qw in `dtype`, by the Triton kernel above: the same values as
    quantize.dequantize(qw).to(dtype).t(), bit for bit. block_r (rows of qweight per
    program) must divide group / 2 for int4, so that a block lies in one group."""
    N, K = qw.shape
    if qw.bits == 4 and (qw.group // 2) % block_r:
        raise ValueError(f"block_r {block_r} must divide half the group ({qw.group // 2})")
    w = torch.empty(K, N, dtype=dtype, device=qw.qweight.device)
    if w.numel() == 0:
        return w
    rows = K if qw.bits == 8 else K // 2
    zero = qw.zero if qw.bits == 4 else qw.scale
    _dequant_kernel[(triton.cdiv(rows, block_r), triton.cdiv(N, block_n))](
        qw.qweight, qw.scale, zero, w, K, N, qw.qweight.stride(0), qw.scale.stride(0) if qw.bits == 4 else 0,
        BITS=qw.bits, GROUP=qw.group or 1, BLOCK_R=block_r, BLOCK_N=block_n, num_warps=num_warps)
    return w


def _config(M: int, N: int, K: int, bits: int, group, path=None):
    """Launch defaults, from H100 sweeps (tools/quant_configs.py; results/<gpu>/quant_configs*.txt),
    bf16, 4096 -> 14336 unless said:
    - one row on the CUDA cores (gemv): int4 g128 44.9 -> 32.4 -> 27.3 us (words, loads a
      block ahead), int8 41.2 -> 31.0 -> 29.2 us;
    - int4, 2 to 191 rows: dequantized before the dot (deq_dot), weights as the MMA's left
      operand: 16 rows 49.2 -> 36.9 us, 64 rows 117 -> 64.7 us (quant_configs_deq-bits.txt);
      x read contiguously (x_split): 16 rows 31.4 us, 64 rows 47.2 us, 128 rows 76.7 us
      (quant_configs_x-split.txt);
    - int8, 16 rows 40.0 -> 31.1 us, 64 rows 45.2 -> 40.5 us (quant_configs_split-deq.txt);
    - from DEQUANT_MIN_ROWS rows, dequantize-then-cuBLAS: int4 2048 rows 1468 -> 356 us,
      int8 528 -> 363 us (cuBLAS bf16 alone 304 us; quant_configs_prefill.txt)."""
    path = path or ("gemv" if M == 1 and N % 4 == 0 else "dequant" if M >= DEQUANT_MIN_ROWS[bits] else "mma")
    if path not in ("mma", "gemv", "dequant"):
        raise ValueError(f"path must be 'mma', 'gemv' or 'dequant', got {path!r}")
    if path == "dequant":
        return dict(path="dequant", block_r=16, block_n=512, num_warps=4)
    if path == "gemv":
        if M != 1:
            raise ValueError(f"the gemv path computes one row; x has {M}")
        if N % 4:
            raise ValueError(f"the gemv path reads four columns per 32-bit word: out_features {N} is not a multiple of 4")
        # int4: 2 warps (168 registers a thread with everything loaded ahead), int8: 4. Fewer
        # output tiles want more K splits (int4 sweeps: 4096 -> 14336 best at 2 waves, 27.3 us;
        # 14336 -> 4096 at 8, 32.2 -> 27.7 us; 4096 -> 4096 at 4, 14.6 -> 13.0 us)
        waves = 2 if bits == 8 or N >= 128 * 64 else (8 if K >= 8192 else 4)
        return dict(path="gemv", block_m=1, block_n=64, block_k=group or 128, num_warps=2 if bits == 4 else 4,
                    num_stages=1, waves=waves)
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
    elif M <= 16:
        cfg |= dict(block_m=16, block_n=128, block_k=64, waves=2)
    elif M <= 64:
        cfg |= dict(block_m=64, block_n=128, block_k=64, waves=1)
    else:
        cfg |= dict(block_m=128, block_n=128, block_k=64, num_warps=8, waves=1, swap_ab=False)
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
    if cfg["path"] == "dequant":  # many rows: the weight once in x's dtype, then cuBLAS
        torch.mm(x2, dequantize_weight(qw, x.dtype, cfg["block_r"], cfg["block_n"], cfg["num_warps"]), out=y2)
        return y
    gemv = cfg["path"] == "gemv"
    if qw.bits == 4 and gemv and cfg["block_k"] != qw.group:
        raise ValueError(f"the gemv path takes one int4 group per block: block_k must be {qw.group}")
    if gemv and cfg["block_n"] % 16:
        raise ValueError(f"the gemv path takes block_n in multiples of 16 (four words of four columns), got {cfg['block_n']}")
    if qw.bits == 4 and (qw.group % cfg["block_k"] or cfg["block_k"] & (cfg["block_k"] - 1)):
        raise ValueError(f"block_k {cfg['block_k']} must be a power of two dividing the group {qw.group}: "
                         "a K block may not straddle two groups")
    n_tiles, m_tiles = triton.cdiv(N, cfg["block_n"]), triton.cdiv(M, cfg["block_m"])  # gemv: M = 1, one m tile
    n_splits, k_chunk = split_plan(K, cfg["block_k"], n_tiles * m_tiles, x.device, num_splits, cfg["waves"],
                                   min_blocks=2)
    split = n_splits > 1
    p = torch.empty(n_splits, M, N, dtype=torch.float32, device=x.device) if split else y2
    count = tile_counters(x.device, n_tiles * m_tiles) if split else y2
    zero = qw.zero if qw.bits == 4 else qw.scale
    if gemv:
        words = qw.qweight.view(torch.int32)  # four columns per word (N % 4 == 0, checked above)
        _wo_gemv_kernel[(n_tiles, n_splits)](
            x2, words, qw.scale, zero, y2, p, count, N, K, k_chunk, n_splits, words.stride(0),
            qw.scale.stride(0), 0xF000 if qw.bits == 4 else 0xFF, BITS=qw.bits, SPLIT=split,
            EVEN_K=K % cfg["block_k"] == 0, BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        return y
    _wo_matmul_kernel[(n_tiles, n_splits, m_tiles)](
        x2, qw.qweight, qw.scale, zero, y2, p, count,
        M, N, K, k_chunk, n_splits, x2.stride(0), qw.qweight.stride(0), qw.scale.stride(0), y2.stride(0),
        BITS=qw.bits, GROUP=qw.group or 1, SPLIT=split, SWAP_AB=bool(cfg["swap_ab"]), FAST_CVT=bool(cfg["fast_cvt"]),
        INTERLEAVE=bool(cfg["interleave"]), X_SPLIT=bool(cfg.get("x_split")), DEQ_DOT=bool(cfg.get("deq_dot")),
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return y
