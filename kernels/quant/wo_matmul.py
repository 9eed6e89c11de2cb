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
from kernels.launch import last_to_arrive, split_plan, tile_counters

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
    conversion instruction, which runs at a quarter of the FMA rate; the caller subtracts OFFSET."""
    if FAST_CVT:
        if dtype == tl.bfloat16:
            return (q.to(tl.int16) | 0x4300).to(tl.bfloat16, bitcast=True)  # 128 + q
        else:
            return (q.to(tl.int16) | 0x6400).to(tl.float16, bitcast=True)  # 1024 + q
    else:
        return q.to(dtype)


@triton.jit
def _nibble_offset(dtype: tl.constexpr, FAST_CVT: tl.constexpr):
    if FAST_CVT:
        if dtype == tl.bfloat16:
            return 128.0
        else:
            return 1024.0
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
def _wo_gemv_kernel(
    X, Q, S, Z, Y, P, COUNT, N, K, k_chunk, n_splits, stride_qk, stride_sg,
    BITS: tl.constexpr, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One row (decode, M = 1) on the CUDA cores: y[n] = sum_k x[k] w[k, n].
    Integers become fp32 from bits: 2^23 + q has q in its mantissa (no conversion
    instruction). The products accumulate in a 2-D tile, summed over K once at the end, so
    the loop has no cross-thread reduction. int4 blocks are one group (BLOCK_K = GROUP)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    k_start = pid_k * k_chunk
    k_end = tl.minimum(k_start + k_chunk, K)
    if BITS == 8:
        acc2 = tl.zeros([BLOCK_K, BLOCK_N], dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            k_ok = rk < k_end
            q = tl.load(Q + rk[:, None].to(tl.int64) * stride_qk + rn[None, :], mask=k_ok[:, None] & n_ok[None, :], other=0)
            x = tl.load(X + rk, mask=k_ok, other=0.0).to(tl.float32)
            w = (q.to(tl.int32) + (0x4B000000 + 128)).to(tl.float32, bitcast=True) - 8388736.0  # 2^23 + 128
            acc2 += w * x[:, None]
        acc = tl.sum(acc2, axis=0) * tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)
    else:
        acc2 = tl.zeros([BLOCK_K // 2, BLOCK_N], dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):  # whole blocks: K, chunks and k0 are multiples of BLOCK_K
            j = k0 // 2 + tl.arange(0, BLOCK_K // 2)
            packed = tl.load(Q + j[:, None].to(tl.int64) * stride_qk + rn[None, :], mask=n_ok[None, :], other=0)
            x_a = tl.load(X + 2 * j).to(tl.float32)
            x_b = tl.load(X + 2 * j + 1).to(tl.float32)
            g = k0 // BLOCK_K
            s = tl.load(S + g * stride_sg + rn, mask=n_ok, other=0.0).to(tl.float32)
            z = tl.load(Z + g * stride_sg + rn, mask=n_ok, other=0.0).to(tl.float32)
            p = packed.to(tl.int32)
            # (2^23 + q) - 2^23 = q exactly; the zero point is fractional (HQQ), so it is
            # subtracted after, not folded into the offset (fp32 has no fraction at 2^23)
            lo = ((p & 15) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
            hi = ((p >> 4) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
            acc2 += ((lo - z[None, :]) * x_a[:, None] + (hi - z[None, :]) * x_b[:, None]) * s[None, :]
        acc = tl.sum(acc2, axis=0)
    if SPLIT:
        tl.store(P + pid_k.to(tl.int64) * N + rn, acc, mask=n_ok)
        if last_to_arrive(COUNT, pid_n, n_splits):
            acc = tl.zeros([BLOCK_N], dtype=tl.float32)
            for s_ in range(0, n_splits):
                acc += tl.load(P + s_ * N + rn, mask=n_ok, other=0.0, cache_modifier=".cg")
            tl.store(Y + rn, acc.to(Y.dtype.element_ty), mask=n_ok)
    else:
        tl.store(Y + rn, acc.to(Y.dtype.element_ty), mask=n_ok)


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
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
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


def _config(M: int, bits: int, group, path=None):
    """Launch defaults, from H100 sweeps (tools/quant_configs.py; results/<gpu>/quant_configs*.txt),
    4096 -> 14336: one row on the CUDA cores (gemv): int4 g128 44.9 -> 32.4 us, int8 41.2 ->
    31.0 us; 16 rows, weights as the left operand with int4 converted from bits: 70.6 ->
    48.4 us; 2048 rows: int4 interleaved 5335 -> 1468 us (still 4.8x cuBLAS bf16: see the
    README), int8 579 -> 528 us."""
    path = path or ("gemv" if M == 1 else "mma")
    if path not in ("mma", "gemv"):
        raise ValueError(f"path must be 'mma' or 'gemv', got {path!r}")
    if path == "gemv":
        if M != 1:
            raise ValueError(f"the gemv path computes one row; x has {M}")
        return dict(path="gemv", block_m=1, block_n=64, block_k=group or 128, num_warps=4, num_stages=2, waves=8)
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
    cfg = _config(M, qw.bits, qw.group, (_config_override or {}).get("path"))
    cfg.update(_config_override or {})
    gemv = cfg["path"] == "gemv"
    if qw.bits == 4 and gemv and cfg["block_k"] != qw.group:
        raise ValueError(f"the gemv path takes one int4 group per block: block_k must be {qw.group}")
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
        _wo_gemv_kernel[(n_tiles, n_splits)](
            x2, qw.qweight, qw.scale, zero, y2, p, count, N, K, k_chunk, n_splits, qw.qweight.stride(0),
            qw.scale.stride(0), BITS=qw.bits, SPLIT=split, BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        return y
    _wo_matmul_kernel[(n_tiles, n_splits, m_tiles)](
        x2, qw.qweight, qw.scale, zero, y2, p, count,
        M, N, K, k_chunk, n_splits, x2.stride(0), qw.qweight.stride(0), qw.scale.stride(0), y2.stride(0),
        BITS=qw.bits, GROUP=qw.group or 1, SPLIT=split, SWAP_AB=bool(cfg["swap_ab"]), FAST_CVT=bool(cfg["fast_cvt"]),
        INTERLEAVE=bool(cfg["interleave"]),
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return y
