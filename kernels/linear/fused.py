"""Fused linear layers of Mirage's decoder, in Triton, for decode-sized inputs (few rows).

    rmsnorm_linear(x, g, W)   y = RMSNorm(x; g, eps) @ W
    gated_mlp(x, W1, W3)      y = SiLU(x @ W1) * (x @ W3)
    lora_linear(x, W, A, B)   y = x @ W + s (x @ A) @ B     (A (K, r), B (r, N), r <= 64)
    linear(x, W)              y = x @ W

x (M, K) with any leading dims; weights (K, N) as Mirage writes them ("X W"), unit stride
along N. Activations fp16 or bf16; accumulation fp32.

One GEMM skeleton serves both: a program computes an (M, N) tile over a range of K.
RMSNorm fuses exactly because its scale is per row: RMSNorm(x) W = rstd * ((x * g) W),
with rstd = 1 / sqrt(mean(x^2) + eps) accumulated in the same pass over x. With few rows
the weights are the traffic, and there are too few N tiles to fill the GPU, so K is split
over several programs. Each writes its fp32 partial (and partial sums of squares), then
counts itself in with an atomic on its output tile; the last program to arrive sums the
partials and applies the epilogue (rstd, SiLU-and-multiply), so one launch does all of it.
With many partial rows a separate merge kernel sums them in parallel instead (faster
there, despite its dependent launch: see MAX_FIXUP_ROWS). LoRA splits the same way
because it is linear in K: each chunk adds (x_c A_c) B.

A prompt's rows (LARGE_ROWS and more) make enough tiles to fill the GPU without a split:
there the tiles are 128 rows deep, and GROUP_M row tiles run side by side over the same
weight columns, so a weight tile read from HBM serves GROUP_M row tiles from L2. Both
operands then go from TMA's shared-memory tiles straight to the tensor cores, so nothing
may touch x inside the loop: rmsnorm_linear normalizes the rows first (one more pass over
x, small beside the product) and the gated MLP reads through TMA too.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels.checks import (check_int, check_int_option, check_number, check_positive_option, check_pow2_option,
                            check_same_device, check_same_dtype, check_tensor)
from kernels.interpreter import exact_operand
from kernels.launch import (cdiv, grouped_tile, last_to_arrive, next_power_of_2, pdl_launch_dependents, pdl_options,
                            pdl_wait, sm_count, split_plan, tile_counters, tile_ranges, use_tma)
from kernels.norm.rmsnorm import rms_norm
from kernels.tuning import LaunchSpace, pow2_bucket

DTYPES = (torch.float16, torch.bfloat16)
MAX_FIXUP_ROWS = 64  # split partial rows (splits x M) merged in the kernel; more: a merge kernel
MAX_FIXUP_ROWS_TMA = 256  # the same with TMA reads (see _run)
LARGE_ROWS = 256  # from this many rows (bucketed up): prefill tiles (128-row, grouped, no K split)
KEY_ROWS_CAP = 4096  # from here every tile fills the GPU several times over: one launch key for all rows


def prompt_rows(m: int) -> bool:
    """Rows that take the prefill path (their launch key's bucket is LARGE_ROWS or more)."""
    return pow2_bucket(m) >= LARGE_ROWS


def _default_config(path: str, rows: int, n: int, k: int) -> dict:
    """Decode rows: as many rows a tile as there are (16 to 64). TMA (one weight): 64 x 128
    tiles, about 1.5 waves of split-K programs, the partials summed by the last program of
    each tile even at 64 rows. Pointer loads, one weight: wide tiles, two waves, 64-deep K
    blocks so that several programs fit on an SM (128-deep left one 4-warp program per SM).
    Gated (two weights streamed): one wave. Prompt rows (LARGE_ROWS): 128 x 128 tiles,
    64-deep K blocks, 8 warps, groups of 8 row tiles, no split, one program a tile
    (persistent: one program an SM walking the tiles, a candidate of the tuner)."""
    if rows >= LARGE_ROWS:
        return dict(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3, group_m=8, waves=1,
                    fixup_rows=MAX_FIXUP_ROWS, fixup="auto", persistent=False)
    block_m = max(16, min(64, rows))
    if path == "tma":
        return dict(block_m=block_m, block_n=64, block_k=128, num_warps=4, num_stages=3, group_m=1, waves=1.5,
                    fixup_rows=MAX_FIXUP_ROWS_TMA, fixup="auto", persistent=False)
    if path == "pointer":
        return dict(block_m=block_m, block_n=128, block_k=64, num_warps=4, num_stages=3, group_m=1, waves=2,
                    fixup_rows=MAX_FIXUP_ROWS, fixup="auto", persistent=False)
    return dict(block_m=block_m, block_n=64, block_k=128, num_warps=4, num_stages=3, group_m=1, waves=1,
                fixup_rows=MAX_FIXUP_ROWS, fixup="auto", persistent=False)


def _candidates(path: str, rows: int, n: int, k: int) -> list[dict]:
    """Decode rows: tile (N x K block) x pipeline depth x waves of split-K programs. Prompt
    rows: tile (M x N) x pipeline depth x warps, 64-deep K blocks, grouped."""
    if rows >= LARGE_ROWS:
        tiles = ((128, 128), (128, 256), (64, 256), (64, 128)) if not path.startswith("gated") else ((128, 128), (64, 128), (64, 256))
        grouped = [dict(block_m=bm, block_n=bn, block_k=64, num_warps=w, num_stages=st, group_m=8)
                   for bm, bn in tiles for w in (4, 8) for st in (3, 4)]
        persistent = [dict(block_m=128, block_n=bn, block_k=64, num_warps=8, num_stages=st, group_m=8, persistent=True)
                      for bn in (128, 256) for st in (3, 4)] if path.endswith("tma") else []
        return grouped + persistent
    tiles = ((32, 128), (64, 64), (64, 128), (128, 64), (128, 128))
    return [dict(block_n=bn, block_k=bk, num_stages=st, waves=wv)
            for bn, bk in tiles for st in (3, 4) for wv in (1, 1.5, 2, 4)]


def _check_config(cfg: dict) -> None:
    if cfg["fixup"] not in ("auto", "kernel", "merge"):
        raise ValueError(f"fixup must be 'auto', 'kernel' or 'merge', got {cfg['fixup']!r}")
    for name in ("block_n", "block_k"):
        if cfg[name] not in (16, 32, 64, 128, 256):
            raise ValueError(f"{name} must be a power of two from 16 to 256, got {cfg[name]!r}")
    if cfg["block_m"] not in (16, 32, 64, 128):
        raise ValueError(f"block_m must be 16, 32, 64 or 128, got {cfg['block_m']!r}")
    if isinstance(cfg["group_m"], bool) or not isinstance(cfg["group_m"], int) or cfg["group_m"] < 1:
        raise ValueError(f"group_m must be an int >= 1, got {cfg['group_m']!r}")
    if not isinstance(cfg["persistent"], bool):
        raise ValueError(f"persistent must be True or False, got {cfg['persistent']!r}")
    check_positive_option(cfg, "waves")
    check_int_option(cfg, "fixup_rows", 0, 2 ** 31 - 1)
    check_pow2_option(cfg, "num_warps", 1, 32)
    check_int_option(cfg, "num_stages", 1, 8)


LAUNCH = LaunchSpace("fused_linear", _default_config, _candidates, _check_config)
LATE_GATED_BYTES = 64 << 20  # gated MLPs with more weight bytes start only after the kernel before (see _run)


@triton.jit
def _fused_linear_kernel(
    X, G, W1, W3, Y, R, P1, P3, SS, A, B, COUNT, XD, W1D, W3D, AD,
    M, N, K, k_chunk, n_splits, eps, rank, lora_scale,
    stride_xm, stride_w1k, stride_w3k, stride_ym, stride_rm, stride_ak, stride_br,
    HAS_NORM: tl.constexpr, GATED: tl.constexpr, SPLIT: tl.constexpr, HAS_LORA: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, FIXUP: tl.constexpr, USE_TMA: tl.constexpr, PDL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    GROUP_M: tl.constexpr = 1, ROW_SCALE: tl.constexpr = False,
):
    pid_k = tl.program_id(1)
    if GROUP_M > 1:  # one program per tile, no split: GROUP_M row tiles walk the columns together
        pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    else:
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(2)
    rm, rn, m_ok, n_ok = tile_ranges(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)
    acc1 = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    ss = tl.zeros([BLOCK_M], dtype=tl.float32)
    E_MIN: tl.constexpr = -120.0  # ROW_SCALE: rows of zeros (2^120 stays finite in fp32)
    e_sum = tl.full([BLOCK_M], E_MIN, dtype=tl.float32)  # ROW_SCALE: acc1 and acc3 are in units of 2^e_sum
    tl.static_assert(not (ROW_SCALE and HAS_LORA))  # x A would mix the blocks' units
    xa = tl.zeros([BLOCK_M, BLOCK_R], dtype=tl.float32)
    rr = tl.arange(0, BLOCK_R)
    k_start = pid_k * k_chunk
    k_end = tl.minimum(k_start + k_chunk, K)
    pdl_wait(PDL)
    if HAS_NORM and USE_TMA:
        # Beside TMA loads, the compiler does not pipeline the load of g: each block would
        # wait for one L2 round trip. Load it a block ahead instead. (A 1-D TMA descriptor
        # for g faulted on an H100 with 32-wide blocks: misaligned address.)
        rk_first = k_start + tl.arange(0, BLOCK_K)
        g_next = tl.load(G + rk_first, mask=rk_first < k_end, other=0.0)
    for k0 in range(k_start, k_end, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < k_end
        # Chunks are whole K blocks, so a tensor-memory-access (TMA) load needs no mask: it
        # fills what lies past the tensor's edges (rows past M, columns past K) with zeros.
        if USE_TMA:
            x = XD.load([pid_m * BLOCK_M, k0])
        else:
            x = tl.load(X + rm[:, None].to(tl.int64) * stride_xm + rk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        if HAS_NORM:
            xf = x.to(tl.float32)
            ss += tl.sum(xf * xf, axis=1)
            if USE_TMA:
                g = g_next.to(tl.float32)
                g_next = tl.load(G + rk + BLOCK_K, mask=rk + BLOCK_K < k_end, other=0.0)
            else:
                g = tl.load(G + rk, mask=k_ok, other=0.0).to(tl.float32)
            xg = xf * g[None, :]
            if ROW_SCALE:
                # fp16: x g may leave fp16's range (or sink below its normal range) where
                # RMSNorm(x) g does not. Each row's operand is x g / 2^e with 2^e putting the
                # largest |x g| so far in [2^13, 2^14) (exact), the fp32 sums kept in units of
                # 2^e; e only grows, so the sums are only ever scaled down (never overflow)
                big = tl.max(tl.abs(xg), axis=1)
                e = tl.maximum(tl.where(big > 0, tl.floor(tl.log2(tl.maximum(big, 1e-30))) - 13.0, E_MIN), e_sum)
                xg = xg * tl.exp2(-e)[:, None]
                rescale = tl.exp2(e_sum - e)[:, None]
                acc1 = acc1 * rescale
                if GATED:
                    acc3 = acc3 * rescale
                e_sum = e
            x = xg.to(X.dtype.element_ty)
        w_mask = k_ok[:, None] & n_ok[None, :]
        if USE_TMA:
            w1 = W1D.load([k0, pid_n * BLOCK_N])
        else:
            w1 = tl.load(W1 + rk[:, None].to(tl.int64) * stride_w1k + rn[None, :], mask=w_mask, other=0.0)
        acc1 = tl.dot(exact_operand(x), exact_operand(w1), acc1)  # bf16 on the CPU lane: kernels/interpreter.py
        if GATED:
            if USE_TMA:
                w3 = W3D.load([k0, pid_n * BLOCK_N])
            else:
                w3 = tl.load(W3 + rk[:, None].to(tl.int64) * stride_w3k + rn[None, :], mask=w_mask, other=0.0)
            acc3 = tl.dot(exact_operand(x), exact_operand(w3), acc3)
        if HAS_LORA:
            if USE_TMA:  # beside TMA loads, a pointer load of A is not pipelined
                a = AD.load([k0, 0])
            else:
                a = tl.load(A + rk[:, None].to(tl.int64) * stride_ak + rr[None, :], mask=k_ok[:, None] & (rr[None, :] < rank), other=0.0)
            xa = tl.dot(exact_operand(x), exact_operand(a), xa)
    if ROW_SCALE:  # back from the last block's units
        acc1 = acc1 * tl.exp2(e_sum)[:, None]
        if GATED:
            acc3 = acc3 * tl.exp2(e_sum)[:, None]
    # PDL: the next kernel may launch once every program got here (its programs then wait
    # for this kernel to end); letting it launch before the loop slowed the layers.
    pdl_launch_dependents(PDL)
    if HAS_LORA:  # this chunk's (x A) B, rounded to the input dtype as the unfused x @ A is
        xa = tl.where(rr[None, :] < rank, xa, 0.0)  # past the rank: an infinite x times A's zero padding, NaN
        b = tl.load(B + rr[:, None] * stride_br + rn[None, :], mask=(rr[:, None] < rank) & n_ok[None, :], other=0.0)
        acc1 += lora_scale * tl.dot(exact_operand(xa.to(X.dtype.element_ty)), exact_operand(b))

    out_mask = m_ok[:, None] & n_ok[None, :]
    y_ptrs = Y + rm[:, None].to(tl.int64) * stride_ym + rn[None, :]
    if SPLIT:
        # Partials (split, M, N) in fp32; sums of squares (N tile, split, M): every N tile of
        # a split saw the same rows of x, and each tile's last program reads its own copies.
        offs = rm[:, None].to(tl.int64) * N + rn[None, :]
        tl.store(P1 + pid_k.to(tl.int64) * M * N + offs, acc1, mask=out_mask)
        if GATED:
            tl.store(P3 + pid_k.to(tl.int64) * M * N + offs, acc3, mask=out_mask)
        if HAS_NORM:
            tl.store(SS + (pid_n * n_splits + pid_k) * M + rm, ss, mask=m_ok)
        if FIXUP:
            if last_to_arrive(COUNT, pid_m * tl.num_programs(0) + pid_n, n_splits):
                acc1 = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                acc3 = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                ss = tl.zeros([BLOCK_M], dtype=tl.float32)
                mn = (tl.full([], 0, tl.int64) + M) * N  # 64-bit; M may be the constexpr 1
                for s in range(0, n_splits):  # .cg: from L2, never a stale L1 line
                    acc1 += tl.load(P1 + s * mn + offs, mask=out_mask, other=0.0, cache_modifier=".cg")
                    if GATED:
                        acc3 += tl.load(P3 + s * mn + offs, mask=out_mask, other=0.0, cache_modifier=".cg")
                    if HAS_NORM:
                        ss += tl.load(SS + (pid_n * n_splits + s) * M + rm, mask=m_ok, other=0.0, cache_modifier=".cg")
                y = _epilogue(acc1, acc3, ss[:, None], K, eps, HAS_NORM, GATED)
                _store_out(y, y_ptrs, R, rm, rn, out_mask, stride_rm, HAS_RESIDUAL)
    else:
        y = _epilogue(acc1, acc3, ss[:, None], K, eps, HAS_NORM, GATED)
        _store_out(y, y_ptrs, R, rm, rn, out_mask, stride_rm, HAS_RESIDUAL)


@triton.jit
def _prompt_kernel(XD, W1D, W3D, Y, R, M, N, K, stride_ym, stride_rm,
                   GATED: tl.constexpr, HAS_RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """Prompt rows, persistent: the programs (one an SM) walk the output tiles in
    GROUP_M-row groups; x and the weights through TMA straight to the tensor cores. The
    tile and K loops flattened into one lets the loads of a tile's first blocks overlap the
    epilogue of the one before."""
    k_blocks = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N), tl.num_programs(0),
                         flatten=True):
        pid_m, pid_n = grouped_tile(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc1 = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        acc3 = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for kb in range(k_blocks):
            x = XD.load([pid_m * BLOCK_M, kb * BLOCK_K])  # past K or M: zeros
            acc1 = tl.dot(exact_operand(x), exact_operand(W1D.load([kb * BLOCK_K, pid_n * BLOCK_N])), acc1)
            if GATED:
                acc3 = tl.dot(exact_operand(x), exact_operand(W3D.load([kb * BLOCK_K, pid_n * BLOCK_N])), acc3)
        rm, rn, m_ok, n_ok = tile_ranges(pid_m, pid_n, M, N, BLOCK_M, BLOCK_N)
        y = _epilogue(acc1, acc3, acc1, K, 0.0, False, GATED)
        _store_out(y, Y + rm[:, None].to(tl.int64) * stride_ym + rn[None, :], R, rm, rn, m_ok[:, None] & n_ok[None, :],
                   stride_rm, HAS_RESIDUAL)


@triton.jit
def _store_out(y, y_ptrs, R, rm, rn, mask, stride_rm, HAS_RESIDUAL: tl.constexpr):
    """y (+ the residual, added in fp32 before the one rounding) -> the output."""
    if HAS_RESIDUAL:
        y += tl.load(R + rm[:, None].to(tl.int64) * stride_rm + rn[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptrs, y.to(y_ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _epilogue(acc1, acc3, ss, K, eps, HAS_NORM: tl.constexpr, GATED: tl.constexpr):
    """The whole-K sums in fp32 -> the output: RMSNorm's row scale, then SiLU(acc1) * acc3.
    ss: the rows' sums of squares of x, shaped to broadcast against acc1 (a tile or one row)."""
    if HAS_NORM:  # the row scale multiplies both products
        rstd = 1.0 / tl.sqrt(ss / K + eps)
        acc1 = acc1 * rstd
        if GATED:
            acc3 = acc3 * rstd
    if GATED:
        acc1 = acc1 / (1.0 + tl.exp(-acc1)) * acc3
    return acc1


@triton.jit
def _merge_splits_kernel(
    P1, P3, SS, Y, R, M, N, K, n_splits, eps, stride_ym, stride_rm,
    HAS_NORM: tl.constexpr, GATED: tl.constexpr, HAS_RESIDUAL: tl.constexpr, PDL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """y[m, n-block] = epilogue(sum over splits of the partials) (+ residual)."""
    pdl_launch_dependents(PDL)
    pdl_wait(PDL)
    m = tl.program_id(0)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    s = tl.arange(0, BLOCK_S)
    s_ok = s < n_splits
    offs = s[:, None].to(tl.int64) * M * N + m * N + rn[None, :]
    mask = s_ok[:, None] & n_ok[None, :]
    y = tl.sum(tl.load(P1 + offs, mask=mask, other=0.0), axis=0)
    y3 = y  # unused unless GATED
    if GATED:
        y3 = tl.sum(tl.load(P3 + offs, mask=mask, other=0.0), axis=0)
    ss = 0.0  # unused unless HAS_NORM
    if HAS_NORM:  # the first N tile's copy of the sums of squares
        ss = tl.sum(tl.load(SS + s * M + m, mask=s_ok, other=0.0), axis=0)
    y = _epilogue(y, y3, ss, K, eps, HAS_NORM, GATED)
    if HAS_RESIDUAL:
        y += tl.load(R + m * stride_rm + rn, mask=n_ok, other=0.0).to(tl.float32)
    tl.store(Y + m * stride_ym + rn, y.to(Y.dtype.element_ty), mask=n_ok)


def _run(x, g, w1, w3, eps, num_splits, config, lora=None, residual=None):
    if num_splits is not None:
        check_int("num_splits", num_splits, minimum=1)
    K = x.shape[-1]
    N = w1.shape[1]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    y = torch.empty(*x.shape[:-1], N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    y2 = y.view(-1, N)
    config = dict(config or {})  # "tma" is resolved here, the rest by LAUNCH
    w3_arg = w3 if w3 is not None else w1
    # On Hopper one weight stream is read through TMA descriptors, and so are both of a gated
    # MLP's for prompt rows. With decode rows the gated kernel stays on pointer loads: TMA did
    # not speed it up there.
    tma = use_tma(config.pop("tma", "auto"), (x2, w1, w3_arg) + ((lora[0],) if lora is not None else ()),
                  "x and the weights (LoRA's A too) 16-byte aligned with row strides in multiples of 16 bytes",
                  auto=w3 is None or prompt_rows(M))
    path = ("gated_" if w3 is not None else "") + ("tma" if tma else "pointer")
    key = dict(path=path, rows=min(pow2_bucket(M), KEY_ROWS_CAP), n=N, k=K)
    cfg = LAUNCH.choose(x.device, key, config)
    block_m, block_n, block_k = cfg["block_m"], cfg["block_n"], cfg["block_k"]
    tiles = cdiv(N, block_n) * cdiv(M, block_m)
    group_m = cfg["group_m"] if num_splits in (None, 1) else 1  # grouped tiles take no split
    n_splits, k_chunk = split_plan(K, block_k, tiles, x.device, 1 if group_m > 1 else num_splits, cfg["waves"],
                                   min_blocks=4, nearest=tma)
    split = n_splits > 1
    # The tile's last program sums few partial rows itself; many go to the parallel merge kernel
    fixup = split and (cfg["fixup"] == "kernel" or (cfg["fixup"] == "auto" and n_splits * M <= cfg["fixup_rows"]))
    gated, has_norm = w3 is not None, g is not None
    n_tiles, m_tiles = cdiv(N, block_n), cdiv(M, block_m)
    r2 = residual.reshape(-1, N) if residual is not None else y2
    if r2.stride(-1) != 1:
        r2 = r2.contiguous()
    if cfg["persistent"] and tma and not split and not has_norm and lora is None:
        xd = TensorDescriptor.from_tensor(x2, [block_m, block_k])
        w1d, w3d = (TensorDescriptor.from_tensor(w, [block_k, block_n]) for w in (w1, w3_arg))
        programs = min(sm_count(x.device), n_tiles * m_tiles)
        _prompt_kernel[(programs,)](
            xd, w1d, w3d, y2, r2, M, N, K, y2.stride(0), r2.stride(0), GATED=gated, HAS_RESIDUAL=residual is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=group_m, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        return y
    if split:
        p1 = torch.empty(n_splits, M, N, dtype=torch.float32, device=x.device)
        p3 = torch.empty_like(p1) if gated else p1
        ss = torch.empty(n_tiles, n_splits, M, dtype=torch.float32, device=x.device) if has_norm else p1
    else:
        p1 = p3 = ss = y2  # unused
    count = tile_counters(x.device, n_tiles * m_tiles) if fixup else p1
    if tma:
        xd = TensorDescriptor.from_tensor(x2, [block_m, block_k])
        w1d, w3d = (TensorDescriptor.from_tensor(w, [block_k, block_n]) for w in (w1, w3_arg))
    else:
        xd, w1d, w3d = x2, w1, w3_arg  # unused
    a, b, lora_scale = lora if lora is not None else (w1, w1, 1.0)
    rank = a.shape[1] if lora is not None else 0
    block_r = max(16, next_power_of_2(max(rank, 1)))
    ad = TensorDescriptor.from_tensor(a, [block_k, block_r]) if tma and lora is not None else a  # columns past rank: zeros
    # A large gated MLP is not launched early (PDL): it gains nothing from a hidden launch
    # gap, and an early launch places its programs where the kernel before frees SMs first
    # (the 7-8B layers were faster without; a small one, nGPT-1B, is not). Its merge kernel
    # still launches early.
    early = not (gated and 2 * w1.numel() * w1.element_size() > LATE_GATED_BYTES)
    grid = (n_tiles * m_tiles, 1, 1) if group_m > 1 else (n_tiles, n_splits, m_tiles)
    _fused_linear_kernel[grid](
        x2, g if has_norm else x2, w1, w3_arg, y2, r2, p1, p3, ss, a, b, count, xd, w1d, w3d, ad,
        M, N, K, k_chunk, n_splits, float(eps), rank, float(lora_scale),
        x2.stride(0), w1.stride(0), w3_arg.stride(0), y2.stride(0), r2.stride(0), a.stride(0), b.stride(0),
        HAS_NORM=has_norm, GATED=gated, SPLIT=split, HAS_LORA=lora is not None, HAS_RESIDUAL=residual is not None,
        FIXUP=fixup, USE_TMA=tma,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_R=block_r, GROUP_M=group_m,
        ROW_SCALE=has_norm and x.dtype == torch.float16,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **pdl_options(x.device, launch_early=early),
    )
    if split and not fixup:
        merge_n = 256
        _merge_splits_kernel[(M, cdiv(N, merge_n))](
            p1, p3, ss, y2, r2, M, N, K, n_splits, float(eps), y2.stride(0), r2.stride(0),
            HAS_NORM=has_norm, GATED=gated, HAS_RESIDUAL=residual is not None, BLOCK_N=merge_n,
            BLOCK_S=next_power_of_2(n_splits), num_warps=4, **pdl_options(x.device),
        )
    return y


def _check_x_w(x, weights: dict):
    check_tensor("x", x, dtypes=DTYPES)
    check_same_device(x=x, **weights)
    K = x.shape[-1]
    n = None
    for name, w in weights.items():
        check_tensor(name, w, dtypes=DTYPES)
        if w.dtype != x.dtype:
            raise TypeError(f"{name} dtype {w.dtype} must match x dtype {x.dtype}")
        if w.dim() != 2 or w.shape[0] != K:
            raise ValueError(f"{name} must have shape (K={K}, N) to multiply x of shape {tuple(x.shape)}; got {tuple(w.shape)}")
        if w.stride(1) != 1:
            raise ValueError(f"{name} must have unit stride along N (got strides {w.stride()}); pass .contiguous()")
        if n is not None and w.shape[1] != n:
            raise ValueError(f"weights disagree on N: {n} vs {w.shape[1]} ({name})")
        n = w.shape[1]
    if K == 0:
        raise ValueError(f"x has K = 0 (shape {tuple(x.shape)})")


def _check_residual(residual, x, n):
    """residual: shaped like the output x @ W, in x's dtype (any strides: read as rows)."""
    if residual is None:
        return
    check_tensor("residual", residual, dtypes=DTYPES)
    check_same_device(x=x, residual=residual)
    check_same_dtype("residual", residual, "x", x)
    want = (*x.shape[:-1], n)
    if tuple(residual.shape) != want:
        raise ValueError(f"residual must have the output's shape {want}; got {tuple(residual.shape)}")


def _check_norm(x, norm_weight, eps):
    check_tensor("norm_weight", norm_weight, dtypes=DTYPES)
    check_same_device(x=x, norm_weight=norm_weight)
    check_same_dtype("norm_weight", norm_weight, "x", x)
    if norm_weight.shape != (x.shape[-1],):
        raise ValueError(f"norm_weight must have shape ({x.shape[-1]},); got {tuple(norm_weight.shape)}")
    check_number("eps", eps, minimum=0.0)


def rmsnorm_linear(x, norm_weight, w, eps: float = 1e-6, *, num_splits=None, config=None):
    """RMSNorm(x; norm_weight, eps) @ w: in one pass over x and w for decode rows; for prompt
    rows (LARGE_ROWS and more, no split asked) the rows normalized first, then the product."""
    _check_x_w(x, {"w": w})
    _check_norm(x, norm_weight, eps)
    if prompt_rows(x.numel() // x.shape[-1]) and num_splits in (None, 1):
        return _run(rms_norm(x, norm_weight, eps), None, w, None, 0.0, num_splits, config)
    return _run(x, norm_weight.contiguous(), w, None, eps, num_splits, config)


def gated_mlp(x, w1, w3, *, num_splits=None, config=None):
    """SiLU(x @ w1) * (x @ w3), both products in one kernel (x read once per tile). The
    decoder layers normalize in their add+RMSNorm kernel before it: fusing the norm here too
    saved a launch but lost time in the layer."""
    _check_x_w(x, {"w1": w1, "w3": w3})
    return _run(x, None, w1, w3, 0.0, num_splits, config)


MAX_LORA_RANK = 64


def lora_linear(x, w, a, b, scale: float = 1.0, *, residual=None, num_splits=None, config=None):
    """x @ w + scale * (x @ a) @ b (+ residual) in one kernel: w (K, N), a (K, r), b (r, N),
    r <= 64; residual shaped like the output."""
    _check_x_w(x, {"w": w})
    check_tensor("a", a, dtypes=DTYPES)
    check_tensor("b", b, dtypes=DTYPES)
    check_same_device(x=x, a=a, b=b)
    check_same_dtype("a", a, "x", x)
    check_same_dtype("b", b, "x", x)
    if a.dim() != 2 or a.shape[0] != x.shape[-1] or a.stride(1) != 1:
        raise ValueError(f"a must have shape (K={x.shape[-1]}, rank) and unit stride along rank; "
                         f"got {tuple(a.shape)}, strides {a.stride()}")
    r = a.shape[1]
    if not 1 <= r <= MAX_LORA_RANK:
        raise ValueError(f"LoRA rank {r} is not supported: 1 <= rank <= {MAX_LORA_RANK}")
    if b.dim() != 2 or b.shape != (r, w.shape[1]):
        raise ValueError(f"b must have shape (rank={r}, N={w.shape[1]}); got {tuple(b.shape)}")
    if b.stride(1) != 1:
        raise ValueError(f"b must have unit stride along N (got strides {b.stride()})")
    if check_number("scale", scale) == 0:
        raise ValueError("scale must be non-zero (use a plain matmul for scale 0)")
    _check_residual(residual, x, w.shape[1])
    return _run(x, None, w, None, 0.0, num_splits, config, lora=(a, b, scale), residual=residual)


def linear(x, w, *, residual=None, num_splits=None, config=None):
    """x @ w (+ residual, added before the output's one rounding; shaped like the output):
    the skeleton without norm, gate or adapter, split-K for few rows."""
    _check_x_w(x, {"w": w})
    _check_residual(residual, x, w.shape[1])
    return _run(x, None, w, None, 0.0, num_splits, config, residual=residual)
