"""The few-rows path of wo_matmul (`path="mma"`): y = x @ dequant(W)^T on the tensor cores,
K split over several programs so that a few rows fill the GPU; the last program of each
output tile sums the fp32 partials (arrival counters, as kernels/linear/fused.py).

- int8 (per output channel): the scale factors out of the K sum, so the tile GEMM runs on
  the int8 values converted to x's dtype (exact for |q| <= 127) and the scale is applied
  once to the fp32 result.
- int4 (per group; a K block lies inside one group): each weight is dequantized to x's
  dtype before the dot (one rounding per weight, as dequantize-then-GEMM), so the dots
  accumulate into one tile. x is read contiguously and its even and odd columns (the two
  nibbles of a byte hold k = 2j, 2j + 1) parted in registers.

`swap_ab` computes the tile transposed, W x^T, so that the converted weight is the MMA's
left operand, which Hopper's wgmma takes from registers (otherwise: mma.sync).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.checks import check_int_option, check_positive_option, check_pow2_option
from kernels.interpreter import exact_operand
from kernels.launch import cdiv, last_to_arrive, split_plan, tile_counters, tile_ranges
from kernels.tuning import LaunchSpace, pow2_bucket

from .quantize import QuantizedWeight
from .rounding import to_float


@triton.jit
def _load_tile(X, Q, S, Z, k0, k_end, rm, rn, m_ok, n_ok, stride_xm, stride_q, stride_sg,
               BITS: tl.constexpr, GROUP: tl.constexpr, SWAP_AB: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One K block: (weight tile, x tile(s), scale, zero). int8: x_b repeats x_a and s, z are
    unused; int4: the packed tile, x's even and odd columns, the group's scale and zero.
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
        # x read contiguously, its even and odd columns parted in registers (two stride-2
        # reads of x, one per nibble, ran slower)
        if SWAP_AB:
            w = tl.load(Q + j[None, :].to(tl.int64) * stride_q + rn[:, None], mask=n_ok[:, None] & j_ok[None, :], other=0)
            x_cols = X + rm[None, :].to(tl.int64) * stride_xm
            x_t = tl.load(x_cols + rk[:, None], mask=m_ok[None, :] & k_ok[:, None], other=0.0)
            x_a, x_b = tl.split(tl.permute(tl.reshape(x_t, (BLOCK_K // 2, 2, BLOCK_M)), (0, 2, 1)))
        else:
            w = tl.load(Q + j[:, None].to(tl.int64) * stride_q + rn[None, :], mask=n_ok[None, :] & j_ok[:, None], other=0)
            x_rows = X + rm[:, None].to(tl.int64) * stride_xm
            x_t = tl.load(x_rows + rk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            x_a, x_b = tl.split(tl.reshape(x_t, (BLOCK_M, BLOCK_K // 2, 2)))
    return w, x_a, x_b, s, z


@triton.jit
def _dequant_nibble(q, s, minus_zs):
    """(q - z) s in fp32 for 4-bit values q, without the integer-to-float instruction (a
    quarter of the FMA rate): q ORed under the exponent of 2^23 is the exact float 2^23 + q,
    less 2^23 it is q exactly; then q s - z s (one FMA once contracted)."""
    f = (q.to(tl.int32) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
    return f * s + minus_zs


@triton.jit
def _accumulate(acc, acc_t, w, x_a, x_b, s, z, BITS: tl.constexpr, SWAP_AB: tl.constexpr):
    """acc (M, N) += this block's product, or acc_t (N, M) with SWAP_AB.
    int4: the weights dequantized to x's dtype before the dot, which then accumulates
    straight into acc (keeping them exact, with the scale and zero applied to each block's
    dot afterwards, ran slower: every block's dot then starts afresh).
    Every dot operand passes through exact_operand (bf16 computed as fp32 under the interpreter)."""
    dt = x_a.dtype  # x's dtype, which the weights are converted to
    x_a = exact_operand(x_a)
    x_b = exact_operand(x_b)
    if BITS == 4:
        minus_zs = -z * s
        if SWAP_AB:  # the tile is (N, K / 2): scale and zero vary along axis 0
            s_b, minus_zs_b = s[:, None], minus_zs[:, None]
        else:
            s_b, minus_zs_b = s[None, :], minus_zs[None, :]
        lo = exact_operand(to_float(_dequant_nibble(w & 15, s_b, minus_zs_b), dt))
        hi = exact_operand(to_float(_dequant_nibble(w >> 4, s_b, minus_zs_b), dt))
        # two half-depth dots (the nibbles interleaved back into K order for one full-depth
        # dot ran slower)
        if SWAP_AB:
            acc_t = tl.dot(lo, x_a, acc_t)
            acc_t = tl.dot(hi, x_b, acc_t)
        else:
            acc = tl.dot(x_a, lo, acc)
            acc = tl.dot(x_b, hi, acc)
    else:
        if SWAP_AB:
            acc_t = tl.dot(exact_operand(to_float(w, dt)), x_a, acc_t)
        else:
            acc = tl.dot(x_a, exact_operand(to_float(w, dt)), acc)
    return acc, acc_t


@triton.jit
def _wo_mma_kernel(
    X, Q, S, Z, Y, P, COUNT,
    M, N, K, k_chunk, n_splits, stride_xm, stride_q, stride_sg, stride_ym,
    BITS: tl.constexpr, GROUP: tl.constexpr, SPLIT: tl.constexpr, SWAP_AB: tl.constexpr,
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
                                       BITS, GROUP, SWAP_AB, BLOCK_M, BLOCK_N, BLOCK_K)
        acc, acc_t = _accumulate(acc, acc_t, w, x_a, x_b, s, z, BITS, SWAP_AB)
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
            tl.store(y_ptrs, to_float(acc, Y.dtype.element_ty), mask=out_mask)
    else:
        if BITS == 8:
            acc = acc * tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptrs, to_float(acc, Y.dtype.element_ty), mask=out_mask)


def _default(rows: int, n: int, k: int, bits: int, group: int) -> dict:
    cfg = dict(num_warps=4, num_stages=3, swap_ab=True)
    if bits == 4:
        cfg |= dict(block_k=min(128, group))
        if rows <= 16:  # small layers fill the GPU with fewer K chunks
            cfg |= dict(block_m=16, block_n=64, waves=8 if k * n > 2**25 else 4)
        elif rows <= 64:
            cfg |= dict(block_m=64, block_n=64, waves=1)
        else:
            cfg |= dict(block_m=128, block_n=128, num_warps=8, waves=1)
    elif rows <= 16:  # int8's (N, K) rows read in long runs of k, not swapped
        cfg |= dict(block_m=16, block_n=64, block_k=256, waves=1 if n >= 8192 else 2, swap_ab=False)
    elif rows <= 64:
        cfg |= dict(block_m=64, block_n=64, block_k=128, waves=1, swap_ab=False)
    else:
        cfg |= dict(block_m=128, block_n=128, block_k=64, num_warps=8, waves=1, swap_ab=False)
    return cfg


def _candidates(rows: int, n: int, k: int, bits: int, group: int) -> list:
    bm = 16 if rows <= 16 else 64 if rows <= 64 else 128
    tile = dict(block_m=bm, num_warps=8 if bm == 128 else 4, num_stages=3)
    if bits == 4:  # a K block inside one group; at 16 rows the weights stay the MMA's left operand
        return [tile | dict(block_n=bn, block_k=min(128, group), waves=waves, swap_ab=swap)
                for bn in (64, 128, 256) for waves in (1, 2, 4, 8)
                for swap in ((True,) if rows <= 16 else (False, True))]
    return [tile | dict(block_n=bn, block_k=bk, waves=waves, swap_ab=swap)
            for bn in (64, 128) for waves in (1, 2, 4) for swap in (False, True) for bk in (64, 128, 256)]


def _check(cfg: dict) -> None:
    for name, low, high in (("block_m", 16, 256), ("block_n", 16, 256), ("block_k", 16, 1024), ("num_warps", 1, 16)):
        check_pow2_option(cfg, name, low, high)
    check_int_option(cfg, "num_stages", 1, 8)
    check_positive_option(cfg, "waves")
    if not isinstance(cfg["swap_ab"], bool):
        raise ValueError(f"swap_ab must be True or False, got {cfg['swap_ab']!r}")


SPACE = LaunchSpace("wo_mma", _default, _candidates, _check)


def launch_key(m: int, qw: QuantizedWeight) -> dict:
    N, K = qw.shape
    return dict(rows=pow2_bucket(m), n=N, k=K, bits=qw.bits, group=qw.group or 0)


def split_scratch(n_splits: int, out: torch.Tensor, n_tiles: int):
    """A K split's fp32 partials, (n_splits, *out.shape), and its output tiles' arrival
    counters; with one chunk neither is used and `out` stands in for both."""
    if n_splits == 1:
        return out, out
    return (torch.empty(n_splits, *out.shape, dtype=torch.float32, device=out.device),
            tile_counters(out.device, n_tiles))


def mma(x2: torch.Tensor, qw: QuantizedWeight, y2: torch.Tensor, config: dict | None = None, num_splits=None):
    """The tensor-core path into y2 (M, N) for x2 (M, K), contiguous."""
    M = x2.shape[0]
    N, K = qw.shape
    cfg = SPACE.choose(x2.device, launch_key(M, qw), config)
    if qw.bits == 4 and qw.group % cfg["block_k"]:
        raise ValueError(f"block_k {cfg['block_k']} must be a power of two dividing the group {qw.group}: "
                         "a K block may not straddle two groups")
    n_tiles, m_tiles = cdiv(N, cfg["block_n"]), cdiv(M, cfg["block_m"])
    n_splits, k_chunk = split_plan(K, cfg["block_k"], n_tiles * m_tiles, x2.device, num_splits, cfg["waves"],
                                   min_blocks=2)
    p, count = split_scratch(n_splits, y2, n_tiles * m_tiles)
    zero = qw.zero if qw.bits == 4 else qw.scale
    _wo_mma_kernel[(n_tiles, n_splits, m_tiles)](
        x2, qw.qweight, qw.scale, zero, y2, p, count,
        M, N, K, k_chunk, n_splits, x2.stride(0), qw.qweight.stride(0), qw.scale.stride(0), y2.stride(0),
        BITS=qw.bits, GROUP=qw.group or 1, SPLIT=n_splits > 1, SWAP_AB=cfg["swap_ab"],
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
