"""The one-row path of wo_matmul (`path="gemv"`): y (1, N) = x (1, K) @ dequant(W)^T on the
CUDA cores, with no 16-row padding and exact in the weights (floats made from bits, scales
and zeros folded out of the per-weight work and applied in fp32).

- int4 (_wo_gemv_int4_kernel): one packed word column of 4 channels per thread, its K sums
  in-thread;
- int8 (_wo_gemv_int8_kernel): each channel's row of the (N, K) weight read as one
  contiguous run, summed across threads once at the end.

Both split K over programs (kernels.launch.split_plan) so that one row fills the GPU; the
last program of each output tile sums the fp32 partials. A chunk whose folded sums come
out NaN (x holds an inf or a NaN, where they would give inf - inf) is summed again weight
by weight, a slow path that finite inputs never take.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.checks import check_int_option, check_positive_option, check_pow2_option
from kernels.launch import cdiv, last_to_arrive, next_power_of_2, split_plan, sum_partials
from kernels.platform import interpreting
from kernels.tuning import LaunchSpace

from .quantize import QuantizedWeight
from .rounding import to_float
from .wo_mma import split_scratch


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
def _gemv_rows(q_tile, row_of, ok_of, k_row, k_end_row, ROWS: tl.constexpr, WORDS: tl.constexpr,
               STRIDE: tl.constexpr, MASKED: tl.constexpr):
    """ROWS rows of the weight words from row k_row as a (ROWS, WORDS) tile, loaded flat in
    row-major order so that lane w holds word w of every row: a 64-bit pointer per element
    at constant offsets (LDG with immediate offsets). Masked rows and words read as zero."""
    ptrs = q_tile + (tl.full([], 0, tl.int64) + k_row) * STRIDE
    if MASKED:
        q = tl.load(ptrs, mask=ok_of & (k_row + row_of < k_end_row), other=0)
    else:
        q = tl.load(ptrs)
    return tl.reshape(q, (ROWS, WORDS))


@triton.jit
def _next_batch(k0, KB, k_start, k_end):
    """The next batch's first k; past the chunk's end its first batch again, a harmless
    re-read that needs no mask. Loaded at the end of the loop body, the next batch's words
    are issued (ptxas hoists them) while this batch is computed, which ran faster than
    loading them explicitly one batch ahead."""
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
    SPLIT: tl.constexpr, MASKED: tl.constexpr, IS_BF16: tl.constexpr,
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
    weight (_gemv_int4_per_weight). (Packing the weight K-contiguous, (N, K/2) as int8 is,
    was measured here and gained too little to change every int4 path's format.)"""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    t = tl.arange(0, WORDS)
    # Neighbouring words swapped so that Triton sees no contiguity (it would give each
    # thread a vector of words and split the rows over threads; more words a thread ran
    # slower). The (rows, words) tile loads flat, row-major, which puts word w of every row
    # in lane w: loaded as 2-D, which dimension goes across the lanes is the compiler's
    # choice, and Triton 3.6 and 3.9 choose differently (the other way spills).
    rw = pid_n * WORDS + (t ^ 1)
    w_ok = rw < N // 4
    r = tl.arange(0, ROWS)
    q_cols = Q + rw
    i = tl.arange(0, ROWS * WORDS)
    row_of = i // WORDS
    word_of = pid_n * WORDS + ((i % WORDS) ^ 1)
    ok_of = word_of < N // 4
    q_tile = Q + word_of + row_of * STRIDE
    k_start = pid_k * k_chunk
    k_end = tl.minimum(k_start + k_chunk, K)
    acc0 = tl.zeros([WORDS], dtype=tl.float32)
    acc1 = tl.zeros([WORDS], dtype=tl.float32)
    acc2 = tl.zeros([WORDS], dtype=tl.float32)
    acc3 = tl.zeros([WORDS], dtype=tl.float32)
    KB: tl.constexpr = 2 * ROWS  # k per batch; a batch lies inside one group
    X32 = X.to(tl.pointer_type(tl.int32), bitcast=True)  # x[2j], x[2j + 1] as one word
    q = _gemv_rows(q_tile, row_of, ok_of, k_start // 2, k_end // 2, ROWS, WORDS, STRIDE, MASKED)
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
        a0l = tl.sum(_near_one(u0, lo_mask, one) * xe[:, None], axis=0)
        a0h = tl.sum(_near_one(u0, hi_mask, one) * xo[:, None], axis=0)
        a1l = tl.sum(_near_one(u1, lo_mask, one) * xe[:, None], axis=0)
        a1h = tl.sum(_near_one(u1, hi_mask, one) * xo[:, None], axis=0)
        a2l = tl.sum(_near_one(u2, lo_mask, one) * xe[:, None], axis=0)
        a2h = tl.sum(_near_one(u2, hi_mask, one) * xo[:, None], axis=0)
        a3l = tl.sum(_near_one(u3, lo_mask, one) * xe[:, None], axis=0)
        a3h = tl.sum(_near_one(u3, hi_mask, one) * xo[:, None], axis=0)
        x_sum = xe_sum + xo_sum
        sz = (k0 // GROUP) * stride_sg + 4 * rw
        acc0 += _fold_group(S, Z, sz, w_ok, a0l, a0h, xe_sum, xo_sum, x_sum)
        acc1 += _fold_group(S, Z, sz + 1, w_ok, a1l, a1h, xe_sum, xo_sum, x_sum)
        acc2 += _fold_group(S, Z, sz + 2, w_ok, a2l, a2h, xe_sum, xo_sum, x_sum)
        acc3 += _fold_group(S, Z, sz + 3, w_ok, a3l, a3h, xe_sum, xo_sum, x_sum)
        q = _gemv_rows(q_tile, row_of, ok_of, _next_batch(k0, KB, k_start, k_end) // 2, k_end // 2, ROWS, WORDS,
                       STRIDE, MASKED)
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
            total = sum_partials(P, cols, c_ok, n_splits, N, 8)
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
    (on this layout the loads alone run faster than a plain read of the same bytes). Each
    word's bytes, made q + 128 by one XOR, become the floats 1024 + (q + 128)
    (_bytes_as_floats: PRMT and HADD2.F32, none on the integer pipe, which the bit-field
    trick of the int4 kernel had kept busy, and slower); each is multiplied by its x and summed in fp32 per thread and word
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
            part = sum_partials(P, rn, n_ok, n_splits, N, 8)
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


def _default(bits: int, group: int, n: int, k: int) -> dict:
    if bits == 8:
        # 8 KB of weights a program and step: 16 rows of 512 k where N gives enough
        # programs, else 4 rows of 2048 k (16 rows would leave too few programs).
        wide = n >= 8192
        return dict(block_n=16 if wide else 4, block_k=512 if wide else 2048, num_warps=4, num_stages=3, waves=6)
    # one warp a program, 32 rows a batch: more, smaller batches in flight, or registers
    # capped for more warps a SM, ran slower
    return dict(rows=min(32, group // 2), num_warps=1, waves=8)


def _candidates(bits: int, group: int, n: int, k: int) -> list:
    if bits == 8:  # rows a program, k a step (at most the row), warps; K split below ~6 programs a SM
        # (a whole 4096-k row a step: one trip to memory a program at K = 4096)
        top = max(512, next_power_of_2(k))
        return [dict(block_n=bn, block_k=bk, num_warps=w, num_stages=3, waves=6)
                for bn in (2, 4, 8, 16, 32) for bk in (512, 1024, 2048, 4096) for w in (1, 2, 4, 8)
                if bk <= top and 512 * w <= bn * bk <= 16384]
    # up to 64 rows (one burst a group of 128) and 4 warps; 2 waves: longer chunks, fewer partials
    return [dict(rows=rows, num_warps=w, waves=waves)
            for rows in (8, 16, 32, 64) if (group // 2) % rows == 0 for w in (1, 2, 4) for waves in (2, 4, 8, 16)]


def _check(cfg: dict) -> None:
    check_pow2_option(cfg, "num_warps", 1, 32)
    check_positive_option(cfg, "waves")
    if "rows" in cfg:  # int4
        check_pow2_option(cfg, "rows", 4, 64)
    else:
        check_pow2_option(cfg, "block_n", 1, 1024)
        check_pow2_option(cfg, "block_k", 4, 2**14)  # at least one 32-bit word of 4 k
        check_int_option(cfg, "num_stages", 1, 8)


SPACE = LaunchSpace("wo_gemv", _default, _candidates, _check)


def launch_key(qw: QuantizedWeight) -> dict:
    N, K = qw.shape
    return dict(bits=qw.bits, group=qw.group or 0, n=N, k=K)


def gemv(x2: torch.Tensor, qw: QuantizedWeight, y2: torch.Tensor, config: dict | None = None, num_splits=None):
    """The one-row path into y2 (1, N): _wo_gemv_int4_kernel or _wo_gemv_int8_kernel."""
    cfg = SPACE.choose(x2.device, launch_key(qw), config)
    if x2.data_ptr() % 4:  # the kernels read x as 32-bit pairs
        x2 = x2.clone()
    if qw.bits == 8:
        _gemv_int8(x2, qw, y2, cfg, num_splits)
    else:
        _gemv_int4(x2, qw, y2, cfg, num_splits)


def _gemv_int4(x2: torch.Tensor, qw: QuantizedWeight, y2: torch.Tensor, cfg: dict, num_splits=None):
    N, K = qw.shape
    rows, warps = cfg["rows"], cfg["num_warps"]
    if (qw.group // 2) % rows:
        raise ValueError(f"the gemv path's int4 batches lie inside one group: rows must divide {qw.group // 2} "
                         f"(half the group {qw.group}), got {rows}")
    words = qw.qweight.view(torch.int32)  # four columns per word (N % 4 == 0: wo_matmul's gemv_takes)
    per_program = 32 * warps  # one word column per thread
    n_tiles = cdiv(N // 4, per_program)
    n_splits, k_chunk = split_plan(K, 2 * rows, n_tiles, x2.device, num_splits, cfg["waves"], min_blocks=1)
    p, count = split_scratch(n_splits, y2, n_tiles)
    _wo_gemv_int4_kernel[(n_tiles, n_splits)](
        x2, words, qw.scale, qw.zero, y2, p, count, N, K, k_chunk, n_splits, qw.scale.stride(0), 0x3F800000,
        GROUP=qw.group, STRIDE=words.stride(0), ROWS=rows, WORDS=per_program, SPLIT=n_splits > 1,
        MASKED=(N // 4) % per_program != 0, IS_BF16=x2.dtype == torch.bfloat16, num_warps=warps, num_stages=1)


def _gemv_int8(x2: torch.Tensor, qw: QuantizedWeight, y2: torch.Tensor, cfg: dict, num_splits=None):
    N, K = qw.shape
    block_n, block_k = cfg["block_n"], cfg["block_k"]
    n_tiles = cdiv(N, block_n)
    n_splits, k_chunk = split_plan(K, block_k, n_tiles, x2.device, num_splits, cfg["waves"], min_blocks=1)
    p, count = split_scratch(n_splits, y2, n_tiles)
    _wo_gemv_int8_kernel[(n_tiles, n_splits)](
        x2, qw.qweight, qw.scale, y2, p, count, N, K, k_chunk, n_splits, K // 4, -0x7F7F7F80,  # 0x80808080 as int32
        BLOCK_N=block_n, BLOCK_W=block_k // 4, SPLIT=n_splits > 1, MASKED=N % block_n != 0 or K % block_k != 0,
        IS_BF16=x2.dtype == torch.bfloat16, ASM=not interpreting(), num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"])
