"""Lab: the one-row gemv with one word column per thread, the whole row batch in-thread,
and the int4 scale and zero (int8 offset) folded out of the per-weight work. Swept by
tools/gemv_lab_sweep.py against the kept gemv; the winner moved into kernels/quant/wo_matmul.py."""
import torch
import triton
import triton.language as tl

from kernels.launch import last_to_arrive, split_plan, tile_counters


@triton.jit
def _f32(bits):
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _load_rows(q_cols, q_rows, k, w_ok, STRIDE: tl.constexpr, EVEN_N: tl.constexpr):
    ptrs = (q_cols + (tl.full([], 0, tl.int64) + k // 2) * STRIDE)[:, None] + q_rows[None, :]
    if EVEN_N:
        return tl.load(ptrs)
    else:
        return tl.load(ptrs, mask=w_ok[:, None], other=0)


@triton.jit
def _gemv4_kernel(X, Q, S, Z, Y, P, COUNT, N, K, k_chunk, n_splits, stride_sg, one,
                  STRIDE: tl.constexpr, SPLIT: tl.constexpr, GROUP: tl.constexpr, WORDS: tl.constexpr,
                  WPT: tl.constexpr, RB: tl.constexpr, EVEN_N: tl.constexpr, PREFETCH: tl.constexpr, IS_BF16: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    t = tl.arange(0, WORDS)
    rw = pid_n * WORDS + ((t // WPT) ^ 1) * WPT + t % WPT
    w_ok = rw < N // 4
    r = tl.arange(0, RB)
    # a 64-bit pointer per thread, the rows at constant offsets from it (immediate offsets)
    q_cols = Q + rw
    q_rows = r * STRIDE
    k_start = pid_k * k_chunk
    k_end = tl.minimum(k_start + k_chunk, K)
    acc0 = tl.zeros([WORDS], dtype=tl.float32)
    acc1 = tl.zeros([WORDS], dtype=tl.float32)
    acc2 = tl.zeros([WORDS], dtype=tl.float32)
    acc3 = tl.zeros([WORDS], dtype=tl.float32)
    X32 = X.to(tl.pointer_type(tl.int32), bitcast=True)
    q = _load_rows(q_cols, q_rows, k_start, w_ok, STRIDE, EVEN_N)
    for k0 in range(k_start, k_end, 2 * RB):
        k_fetch = tl.where(k0 + 2 * RB < k_end, k0 + 2 * RB, k_start)
        if PREFETCH:
            q_next = _load_rows(q_cols, q_rows, k_fetch, w_ok, STRIDE, EVEN_N)
        xp = tl.load(X32 + k0 // 2 + r)  # x[2r], x[2r + 1] as one word
        if IS_BF16:
            xe = _f32(xp << 16)
            xo = _f32(xp & -65536)
        else:
            xe = (xp & 65535).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
            xo = (xp >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        xe_sum = tl.sum(xe, axis=0)
        xo_sum = tl.sum(xo, axis=0)
        sz = (k0 // GROUP) * stride_sg + 4 * rw
        # byte b's nibbles (bits 8b..8b+7) shifted to bits 15..22: ORed under the exponent
        # of 1.0 they are 1 + lo / 256 and 1 + hi / 16, exact floats from bits
        u0 = q << 15
        u1 = q << 7
        u2 = q >> 1
        u3 = q >> 9
        a0l = tl.sum(_f32((u0 & 0x78000) | one) * xe[None, :], axis=1)
        a0h = tl.sum(_f32((u0 & 0x780000) | one) * xo[None, :], axis=1)
        a1l = tl.sum(_f32((u1 & 0x78000) | one) * xe[None, :], axis=1)
        a1h = tl.sum(_f32((u1 & 0x780000) | one) * xo[None, :], axis=1)
        a2l = tl.sum(_f32((u2 & 0x78000) | one) * xe[None, :], axis=1)
        a2h = tl.sum(_f32((u2 & 0x780000) | one) * xo[None, :], axis=1)
        a3l = tl.sum(_f32((u3 & 0x78000) | one) * xe[None, :], axis=1)
        a3h = tl.sum(_f32((u3 & 0x780000) | one) * xo[None, :], axis=1)
        xs = xe_sum + xo_sum
        s0 = tl.load(S + sz, mask=w_ok, other=0.0).to(tl.float32)
        s1 = tl.load(S + sz + 1, mask=w_ok, other=0.0).to(tl.float32)
        s2 = tl.load(S + sz + 2, mask=w_ok, other=0.0).to(tl.float32)
        s3 = tl.load(S + sz + 3, mask=w_ok, other=0.0).to(tl.float32)
        z0 = tl.load(Z + sz, mask=w_ok, other=0.0).to(tl.float32)
        z1 = tl.load(Z + sz + 1, mask=w_ok, other=0.0).to(tl.float32)
        z2 = tl.load(Z + sz + 2, mask=w_ok, other=0.0).to(tl.float32)
        z3 = tl.load(Z + sz + 3, mask=w_ok, other=0.0).to(tl.float32)
        acc0 += s0 * (256.0 * (a0l - xe_sum) + 16.0 * (a0h - xo_sum) - z0 * xs)
        acc1 += s1 * (256.0 * (a1l - xe_sum) + 16.0 * (a1h - xo_sum) - z1 * xs)
        acc2 += s2 * (256.0 * (a2l - xe_sum) + 16.0 * (a2h - xo_sum) - z2 * xs)
        acc3 += s3 * (256.0 * (a3l - xe_sum) + 16.0 * (a3h - xo_sum) - z3 * xs)
        if PREFETCH:
            q = q_next
        else:
            q = _load_rows(q_cols, q_rows, k_fetch, w_ok, STRIDE, EVEN_N)
    if SPLIT:
        part = P + pid_k.to(tl.int64) * N + 4 * rw
        tl.store(part, acc0, mask=w_ok)
        tl.store(part + 1, acc1, mask=w_ok)
        tl.store(part + 2, acc2, mask=w_ok)
        tl.store(part + 3, acc3, mask=w_ok)
        if last_to_arrive(COUNT, pid_n, n_splits):
            cols = pid_n * 4 * WORDS + tl.arange(0, 4 * WORDS)
            c_ok = cols < N
            total = tl.zeros([4 * WORDS], dtype=tl.float32)
            for s_ in range(0, n_splits):
                total += tl.load(P + s_ * N + cols, mask=c_ok, other=0.0, cache_modifier=".cg")
            tl.store(Y + cols, total.to(Y.dtype.element_ty), mask=c_ok)
    else:
        out = Y + 4 * rw
        tl.store(out, acc0.to(Y.dtype.element_ty), mask=w_ok)
        tl.store(out + 1, acc1.to(Y.dtype.element_ty), mask=w_ok)
        tl.store(out + 2, acc2.to(Y.dtype.element_ty), mask=w_ok)
        tl.store(out + 3, acc3.to(Y.dtype.element_ty), mask=w_ok)


def gemv4(x, qw, words=32, wpt=1, num_warps=1, waves=4, prefetch=True, num_splits=None, rb=32, maxnreg=None):
    N, K = qw.shape
    G = qw.group
    x2 = x.reshape(-1, K).contiguous()
    y = torch.empty(N, dtype=x.dtype, device=x.device)
    n_tiles = triton.cdiv(N // 4, words)
    n_splits, k_chunk = split_plan(K, G, n_tiles, x.device, num_splits, waves, min_blocks=1)
    split = n_splits > 1
    p = torch.empty(n_splits, N, dtype=torch.float32, device=x.device) if split else y
    count = tile_counters(x.device, n_tiles) if split else y
    wq = qw.qweight.view(torch.int32)
    _gemv4_kernel[(n_tiles, n_splits)](x2, wq, qw.scale, qw.zero, y, p, count, N, K, k_chunk, n_splits,
                                       qw.scale.stride(0), 0x3F800000, STRIDE=wq.stride(0), SPLIT=split,
                                       GROUP=G, WORDS=words, WPT=wpt, RB=min(rb, G // 2), EVEN_N=(N // 4) % words == 0, PREFETCH=prefetch, IS_BF16=x.dtype == torch.bfloat16,
                                       num_warps=num_warps, num_stages=1, **({'maxnreg': maxnreg} if maxnreg else {}))
    return y.view(*x.shape[:-1], N)


@triton.jit
def _gemv8_kernel(X, Q, S, Y, P, COUNT, N, K, k_chunk, n_splits, one, flip,
                  STRIDE: tl.constexpr, SPLIT: tl.constexpr, WORDS: tl.constexpr, WPT: tl.constexpr,
                  RB: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr, PREFETCH: tl.constexpr):
    """int8 (K, N) read as words of four columns of one k; byte b of each word, made
    unsigned (q + 128) and shifted to bits 15..22 under the exponent of 1.0, is the float
    1 + (q + 128) / 256."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    t = tl.arange(0, WORDS)
    rw = pid_n * WORDS + ((t // WPT) ^ 1) * WPT + t % WPT
    w_ok = rw < N // 4
    r = tl.arange(0, RB)
    q_cols = Q + rw
    q_rows = r * STRIDE
    k_start = pid_k * k_chunk
    k_end = tl.minimum(k_start + k_chunk, K)
    acc0 = tl.zeros([WORDS], dtype=tl.float32)
    acc1 = tl.zeros([WORDS], dtype=tl.float32)
    acc2 = tl.zeros([WORDS], dtype=tl.float32)
    acc3 = tl.zeros([WORDS], dtype=tl.float32)
    x_tot = tl.zeros([], dtype=tl.float32)
    q = _load_rows8(q_cols, q_rows, k_start, k_end, r, w_ok, STRIDE, EVEN_N, EVEN_K)
    for k0 in range(k_start, k_end, RB):
        k_fetch = tl.where(k0 + RB < k_end, k0 + RB, k_start)
        if PREFETCH:
            q_next = _load_rows8(q_cols, q_rows, k_fetch, k_end, r, w_ok, STRIDE, EVEN_N, EVEN_K)
        if EVEN_K:
            xk = tl.load(X + k0 + r).to(tl.float32)
        else:
            xk = tl.load(X + k0 + r, mask=k0 + r < k_end, other=0.0).to(tl.float32)
        x_tot += tl.sum(xk, axis=0)
        u = q ^ flip  # each signed byte q becomes q + 128
        acc0 += tl.sum(_f32(((u << 15) & 0x7F8000) | one) * xk[None, :], axis=1)
        acc1 += tl.sum(_f32(((u << 7) & 0x7F8000) | one) * xk[None, :], axis=1)
        acc2 += tl.sum(_f32(((u >> 1) & 0x7F8000) | one) * xk[None, :], axis=1)
        acc3 += tl.sum(_f32(((u >> 9) & 0x7F8000) | one) * xk[None, :], axis=1)
        if PREFETCH:
            q = q_next
        else:
            q = _load_rows8(q_cols, q_rows, k_fetch, k_end, r, w_ok, STRIDE, EVEN_N, EVEN_K)
    # sum x (1 + (q + 128) / 256) = X + (sum x q + 128 X) / 256
    col = 4 * rw
    out0 = (256.0 * (acc0 - x_tot) - 128.0 * x_tot) * tl.load(S + col, mask=w_ok, other=0.0).to(tl.float32)
    out1 = (256.0 * (acc1 - x_tot) - 128.0 * x_tot) * tl.load(S + col + 1, mask=w_ok, other=0.0).to(tl.float32)
    out2 = (256.0 * (acc2 - x_tot) - 128.0 * x_tot) * tl.load(S + col + 2, mask=w_ok, other=0.0).to(tl.float32)
    out3 = (256.0 * (acc3 - x_tot) - 128.0 * x_tot) * tl.load(S + col + 3, mask=w_ok, other=0.0).to(tl.float32)
    if SPLIT:
        part = P + pid_k.to(tl.int64) * N + 4 * rw
        tl.store(part, out0, mask=w_ok)
        tl.store(part + 1, out1, mask=w_ok)
        tl.store(part + 2, out2, mask=w_ok)
        tl.store(part + 3, out3, mask=w_ok)
        if last_to_arrive(COUNT, pid_n, n_splits):
            cols = pid_n * 4 * WORDS + tl.arange(0, 4 * WORDS)
            c_ok = cols < N
            total = tl.zeros([4 * WORDS], dtype=tl.float32)
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
def _load_rows8(q_cols, q_rows, k, k_end, r, w_ok, STRIDE: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr):
    ptrs = (q_cols + (tl.full([], 0, tl.int64) + k) * STRIDE)[:, None] + q_rows[None, :]
    if EVEN_N and EVEN_K:
        return tl.load(ptrs)
    else:
        return tl.load(ptrs, mask=w_ok[:, None] & (k + r < k_end)[None, :], other=0)


def gemv8(x, qw, words=32, wpt=1, num_warps=1, waves=4, prefetch=True, num_splits=None, rb=32, maxnreg=None):
    N, K = qw.shape
    x2 = x.reshape(-1, K).contiguous()
    y = torch.empty(N, dtype=x.dtype, device=x.device)
    n_tiles = triton.cdiv(N // 4, words)
    n_splits, k_chunk = split_plan(K, rb, n_tiles, x.device, num_splits, waves, min_blocks=1)
    split = n_splits > 1
    p = torch.empty(n_splits, N, dtype=torch.float32, device=x.device) if split else y
    count = tile_counters(x.device, n_tiles) if split else y
    wq = qw.qweight.view(torch.int32)
    _gemv8_kernel[(n_tiles, n_splits)](x2, wq, qw.scale, y, p, count, N, K, k_chunk, n_splits, 0x3F800000,
                                       -2139062144, STRIDE=wq.stride(0), SPLIT=split, WORDS=words, WPT=wpt, RB=rb,
                                       EVEN_N=(N // 4) % words == 0, EVEN_K=K % rb == 0, PREFETCH=prefetch,
                                       num_warps=num_warps, num_stages=1, **({'maxnreg': maxnreg} if maxnreg else {}))
    return y.view(*x.shape[:-1], N)
