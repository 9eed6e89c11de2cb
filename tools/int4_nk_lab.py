"""Lab, measured and not taken: the one-row int4 product on a K-contiguous packing, the
step that took int8's gemv from 88% to 99% of a pure read (gemv_nk_lab*.txt). The int4
weight is repacked here as (N, K/2) bytes, byte j of row n holding k = 2j (low nibble) and
2j + 1 (high nibble); the suite's own kernel reads the (K/2, N) format.

Two kernels, each swept over its launch shapes (results/<gpu>/int4_nk_lab_*.txt, H100,
bf16, g128, cold L2; the suite's kernel 19.7 us at 4096 -> 14336, 20.9-21.0 at 14336 -> 4096,
the pure read of the 31.2 MB 15.0-15.3):
- tile (_int4_nk_kernel): a program takes BLOCK_N rows and BLOCK_W words of each a step,
  16 bytes of a row a thread, the warp's run of a row contiguous (int8's winning shape).
  Nibbles to floats either as fp16 1024 + q and 1024 + 16 q by masks under fp16's
  exponent, widened by HADD2.F32 (`--kernel tile16`: best 22.1 / 22.9 us), or by the
  suite's bit-field trick, 1 + q/256 and 1 + q/16 in fp32 (NEAR; `--kernel tile`: best
  19.5 / 19.6 us). Each word's sum folded with the group's scale and zero per word or per
  4 words (QUAD); X_VEC reads x as one 16-byte vector a word; scale/zero (K/group, N) or
  (N, K/group) (suffix N). Triton lays x's vectors out across threads and converts them
  through shared memory every step (BAR, LDS, STS in the loop: ~4 instructions a weight
  against the suite's kernel's ~3.2), which eats what the contiguous rows gain.
- rows (_int4_nk_rows_kernel): a thread per row (R rows a thread), every k sum in-thread,
  no layout conversion (~3.4 instructions a weight at R = 4); but a warp's load touches 32
  rows 16 bytes each, and the loads alone (LOADS-) run 20.6 us at best: worse than the
  suite's whole kernel.
So the int4 format stays (K/2, N): 0-6% at best for a format change of every int4 path.
Usage: PYTHONPATH=. python3 tools/int4_nk_lab.py [--compile-only I/N] [--kernel tile|tile16|rows] [K:N ...]
(cold L2, events, bf16); --compile-only fills Triton's cache from parallel processes."""
import itertools
import sys

import torch
import triton
import triton.language as tl

from kernels.launch import last_to_arrive, split_plan
from kernels.quant import quantize_int4_weight, unpack_int4, wo_matmul
from kernels.quant.wo_matmul import _near_one, _split_scratch, _x_pair


@triton.jit
def _store_rows(Y, P, COUNT, part, rn, pid_n, pid_k, n_splits, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr):
    """The rows' sums to Y; with a K split, to this chunk's fp32 partials, the last program
    of the rows to arrive summing them."""
    if SPLIT:
        N = tl.num_programs(0) * BLOCK_N
        tl.store(P + pid_k.to(tl.int64) * N + rn, part)
        if last_to_arrive(COUNT, pid_n, n_splits):
            part = tl.zeros([BLOCK_N], dtype=tl.float32)
            for s_ in range(0, n_splits):
                part += tl.load(P + s_ * N + rn, cache_modifier=".cg")
            tl.store(Y + rn, part.to(Y.dtype.element_ty))
    else:
        tl.store(Y + rn, part.to(Y.dtype.element_ty))


@triton.jit
def _int4_nk_kernel(X, Q, S, Z, Y, P, COUNT, K, k_chunk, n_splits, stride_w, stride_sn, stride_sg, one,
                    GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, QUAD: tl.constexpr,
                    X_VEC: tl.constexpr, SPLIT: tl.constexpr, NEAR: tl.constexpr):
    """y[n] = sum_k x[k] (q[n, k] - z[n, g]) s[n, g]; Q (N, K/2) read as 32-bit words (8 k),
    stride_w = K / 8 words a row; no masks (N % BLOCK_N == 0, k_chunk % (8 BLOCK_W) == 0)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rw = tl.arange(0, BLOCK_W)
    q_rows = Q.to(tl.pointer_type(tl.int32), bitcast=True) + rn.to(tl.int64)[:, None] * stride_w
    X32 = X.to(tl.pointer_type(tl.int32), bitcast=True)
    sz_rows = rn.to(tl.int64)[:, None] * stride_sn
    k_start = pid_k * k_chunk
    if QUAD:
        acc = tl.zeros([BLOCK_N, BLOCK_W // 4], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_W], dtype=tl.float32)
    for k0 in range(k_start, k_start + k_chunk, 8 * BLOCK_W):
        w = k0 // 8 + rw
        u = tl.load(q_rows + w[None, :])
        if X_VEC:  # one 16-byte read a word, its four 32-bit pairs parted in registers
            xw = tl.load(X32 + 4 * w[:, None] + tl.arange(0, 4)[None, :])
            x02, x13 = tl.split(tl.reshape(xw, (BLOCK_W, 2, 2)))
            p0, p2 = tl.split(x02)
            p1, p3 = tl.split(x13)
        else:
            p0 = tl.load(X32 + 4 * w)
            p1 = tl.load(X32 + 4 * w + 1)
            p2 = tl.load(X32 + 4 * w + 2)
            p3 = tl.load(X32 + 4 * w + 3)
        x0, x1 = _x_pair(p0, True)  # k = 8w + 0, 1: byte 0's low, high nibble
        x2, x3 = _x_pair(p1, True)  # byte 1
        x4, x5 = _x_pair(p2, True)  # byte 2
        x6, x7 = _x_pair(p3, True)  # byte 3
        if NEAR:  # the suite's bit-field trick: 1 + q / 256 (low), 1 + q / 16 (high) as fp32
            u0 = u << 15
            u1 = u << 7
            u2 = u >> 1
            u3 = u >> 9
            lo = (_near_one(u0, 0x78000, one) * x0[None, :] + _near_one(u1, 0x78000, one) * x2[None, :]
                  + _near_one(u2, 0x78000, one) * x4[None, :] + _near_one(u3, 0x78000, one) * x6[None, :])
            hi = (_near_one(u0, 0x780000, one) * x1[None, :] + _near_one(u1, 0x780000, one) * x3[None, :]
                  + _near_one(u2, 0x780000, one) * x5[None, :] + _near_one(u3, 0x780000, one) * x7[None, :])
            x_lo = x0 + x2 + x4 + x6
            x_hi = x1 + x3 + x5 + x7
            xq = 256.0 * lo + (16.0 * hi - (256.0 * x_lo + 16.0 * x_hi)[None, :])
        else:
            u8 = u >> 8
            a0, a4 = _x_pair((u & 0x000F000F) | 0x64006400, False)  # 1024 + q: bytes 0, 2 low
            a1, a5 = _x_pair((u & 0x00F000F0) | 0x64006400, False)  # 1024 + 16 q: bytes 0, 2 high
            a2, a6 = _x_pair((u8 & 0x000F000F) | 0x64006400, False)  # bytes 1, 3 low
            a3, a7 = _x_pair((u8 & 0x00F000F0) | 0x64006400, False)  # bytes 1, 3 high
            lo = a0 * x0[None, :] + a2 * x2[None, :] + a4 * x4[None, :] + a6 * x6[None, :]
            hi = a1 * x1[None, :] + a3 * x3[None, :] + a5 * x5[None, :] + a7 * x7[None, :]
            x_lo = x0 + x2 + x4 + x6
            x_hi = x1 + x3 + x5 + x7
            # sum x q over the word: lo - 1024 x_lo, (hi - 1024 x_hi) / 16
            xq = (lo - 1024.0 * x_lo[None, :]) + 0.0625 * (hi - 1024.0 * x_hi[None, :])
        xs = x_lo + x_hi
        if QUAD:  # four words (32 k) lie in one group: fold them first, scale and zero once
            xq = tl.sum(tl.reshape(xq, (BLOCK_N, BLOCK_W // 4, 4)), axis=2)
            xs = tl.sum(tl.reshape(xs, (BLOCK_W // 4, 4)), axis=1)
            g = (k0 + 32 * tl.arange(0, BLOCK_W // 4)) // GROUP
        else:
            g = (k0 + 8 * rw) // GROUP
        s = tl.load(S + sz_rows + g[None, :] * stride_sg).to(tl.float32)
        z = tl.load(Z + sz_rows + g[None, :] * stride_sg).to(tl.float32)
        acc += s * (xq - z * xs[None, :])
    _store_rows(Y, P, COUNT, tl.sum(acc, axis=1), rn, pid_n, pid_k, n_splits, BLOCK_N, SPLIT)


@triton.jit
def _part_sums(u, X32, w0, a_lo, a_hi, x_even, x_odd, one, IS_BF16: tl.constexpr):
    """Four words a row (32 k from word w0; u [BLOCK_N, 4]) against x, by the suite's int4
    gemv trick: each nibble shifted under bits 15-22 and ORed under 1.0's exponent gives
    1 + q / 256 (low) or 1 + q / 16 (high), so a word costs 4 shifts, 8 LOP3, 8 FFMA.
    Adds to the running tiles x (1 + q/256) over even k and x (1 + q/16) over odd k
    ([BLOCK_N, 4], summed over the word slots once a group) and to x's even and odd sums
    ([4], likewise: a sum over the slots a step costs shuffles, Triton laying it across threads)."""
    x_at = 4 * tl.arange(0, 4)  # word slots at constant offsets from one scalar pointer
    x_base = X32 + 4 * w0
    lo_mask: tl.constexpr = 0x78000
    hi_mask: tl.constexpr = 0x780000
    for b in tl.static_range(4):  # byte b of each word: k = 8 w + 2 b (low), 2 b + 1 (high)
        xe, xo = _x_pair(tl.load(x_base + (x_at + b)), IS_BF16)
        if b == 0:
            ub = u << 15
        elif b == 1:
            ub = u << 7
        elif b == 2:
            ub = u >> 1
        else:
            ub = u >> 9
        a_lo += _near_one(ub, lo_mask, one) * xe[None, :]
        a_hi += _near_one(ub, hi_mask, one) * xo[None, :]
        x_even += xe
        x_odd += xo
    return a_lo, a_hi, x_even, x_odd


@triton.jit
def _int4_nk_rows_kernel(X, Q, S, Z, Y, P, COUNT, w_chunk, n_splits, stride_sn, stride_sg, one,
                         STRIDE_W: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
                         LOADS_ONLY: tl.constexpr):
    """The (N, K/2) weight, a thread per row (or BLOCK_N / threads rows): each step one
    group of each row, read as GROUP / 32 vectors of 16 bytes, every sum over k inside the
    thread, the group's scale and zero applied once per row and step. The loop runs over
    words (w_chunk = k_chunk / 8 a program), so that Triton sees the vectors 16-byte aligned."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # rows at constant offsets (STRIDE_W = K / 8 words a row) from one pointer a thread
    q_rows = (Q.to(tl.pointer_type(tl.int32), bitcast=True) + rn.to(tl.int64)[:, None] * STRIDE_W
              + tl.arange(0, 4)[None, :])
    X32 = X.to(tl.pointer_type(tl.int32), bitcast=True)
    sz_rows = rn.to(tl.int64) * stride_sn
    w_start = pid_k * w_chunk
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for wg in range(w_start, w_start + w_chunk, GROUP // 8):
        a_lo = tl.zeros([BLOCK_N, 4], dtype=tl.float32)
        a_hi = tl.zeros([BLOCK_N, 4], dtype=tl.float32)
        x_even = tl.zeros([4], dtype=tl.float32)
        x_odd = tl.zeros([4], dtype=tl.float32)
        for p in tl.static_range(GROUP // 32):
            w0 = wg + 4 * p
            u = tl.load(q_rows + w0)
            if LOADS_ONLY:
                a_lo += u.to(tl.float32, bitcast=True)
            else:
                a_lo, a_hi, x_even, x_odd = _part_sums(u, X32, w0, a_lo, a_hi, x_even, x_odd, one, True)
        xe = tl.sum(x_even, axis=0)
        xo = tl.sum(x_odd, axis=0)
        g = wg // (GROUP // 8)
        s = tl.load(S + sz_rows + g * stride_sg).to(tl.float32)
        z = tl.load(Z + sz_rows + g * stride_sg).to(tl.float32)
        acc += s * (256.0 * (tl.sum(a_lo, axis=1) - xe) + 16.0 * (tl.sum(a_hi, axis=1) - xo) - z * (xe + xo))
    _store_rows(Y, P, COUNT, acc, rn, pid_n, pid_k, n_splits, BLOCK_N, SPLIT)


def _launch_plan(x, packed, s, y, group, block_n, block_k, waves):
    """(programs along N, K chunks, chunk length, fp32 partials, arrival counters, the scale
    and zero's (row, group) strides). waves 0: no K split; else about `waves` waves of
    programs (no split where the chunks would not divide K)."""
    N, K = packed.shape[0], 2 * packed.shape[1]
    n_tiles = N // block_n
    n_splits, k_chunk = (1, K) if not waves else split_plan(K, block_k, n_tiles, x.device, None, waves, 1)
    if K % k_chunk:
        n_splits, k_chunk = 1, K
    p, count = _split_scratch(n_splits, y, n_tiles)
    n_major = s.shape == (N, K // group)
    return n_tiles, n_splits, k_chunk, p, count, ((s.stride(0), 1) if n_major else (1, s.stride(0)))


def int4_nk_rows(x, packed, s, z, y, group, block_n, warps, waves=0, loads_only=False, stages=3):
    N, half_k = packed.shape
    n_tiles, n_splits, k_chunk, p, count, sz_strides = _launch_plan(x, packed, s, y, group, block_n, group, waves)
    _int4_nk_rows_kernel[(n_tiles, n_splits)](
        x, packed, s, z, y, p, count, k_chunk // 8, n_splits, *sz_strides, 0x3F800000,
        STRIDE_W=half_k // 4, GROUP=group, BLOCK_N=block_n, SPLIT=n_splits > 1, LOADS_ONLY=loads_only,
        num_warps=warps, num_stages=stages)
    return y


def repack(qw, n_major_sz):
    """The suite's int4 weight as (N, K/2) packed bytes; scale and zero as stored
    ((K/group, N)) or transposed to (N, K/group)."""
    q = unpack_int4(qw.qweight).t()  # (N, K)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8).contiguous()
    if n_major_sz:
        return packed, qw.scale.t().contiguous(), qw.zero.t().contiguous()
    return packed, qw.scale, qw.zero


def int4_nk(x, packed, s, z, y, group, block_n, block_w, warps, quad=False, x_vec=False, waves=0, near=False,
            stages=3):
    N, half_k = packed.shape
    n_tiles, n_splits, k_chunk, p, count, sz_strides = _launch_plan(x, packed, s, y, group, block_n, 8 * block_w,
                                                                     waves)
    _int4_nk_kernel[(n_tiles, n_splits)](
        x, packed, s, z, y, p, count, 2 * half_k, k_chunk, n_splits, half_k // 4, *sz_strides, 0x3F800000,
        GROUP=group, BLOCK_N=block_n, BLOCK_W=block_w, QUAD=quad, X_VEC=x_vec, SPLIT=n_splits > 1, NEAR=near,
        num_warps=warps, num_stages=stages)
    return y


def configs_tile(k, n, packs):
    """The tile kernel's sweep with the bit-field trick (NEAR) and per-4-word folds (QUAD):
    name -> (function, its arguments after x and y)."""
    out = {}
    for bn, bw, warps in itertools.product([8, 16, 32, 64], [32, 64, 128, 256], [2, 4, 8]):
        per_thread = bn * bw // (32 * warps)  # words a thread holds
        if not 8 <= per_thread <= 32 or (k // 8) % bw or n % bn or bw // 4 > 32 * warps:
            continue
        for x_vec in (False, True):
            for waves in ((0, 6) if n // bn < 6 * 132 else (0,)):
                for nm in (False, True) if not x_vec else (False,):
                    name = (f"n{bn}w{bw}x{warps}" + ("v" if x_vec else "") + (f"s{waves}" if waves else "")
                            + ("N" if nm else ""))
                    out[name] = (int4_nk, (*packs[nm], 128, bn, bw, warps, True, x_vec, waves, True))
    return out


def configs_tile16(k, n, packs):
    """The tile kernel with the fp16 conversion (the first sweep, int4_nk_lab_tile-fp16.txt)."""
    out = {}
    for bn, bw, warps in itertools.product([4, 8, 16, 32], [64, 128, 256], [4, 8]):
        per_thread = bn * bw // (32 * warps)
        if not 4 <= per_thread <= 16 or (k // 8) % bw or n % bn:
            continue
        for quad, x_vec in ((False, False), (True, False), (True, True)):
            for waves in ((0, 6) if n // bn < 6 * 132 else (0,)):
                for nm in (False, True) if quad and not x_vec else (False,):
                    name = (f"n{bn}w{bw}x{warps}" + ("q" if quad else "") + ("v" if x_vec else "")
                            + (f"s{waves}" if waves else "") + ("N" if nm else ""))
                    out[name] = (int4_nk, (*packs[nm], 128, bn, bw, warps, quad, x_vec, waves, False))
    return out


def configs_rows(k, n, packs):
    """The row-per-thread kernel's sweep (R rows a thread), and its loads alone."""
    out = {}
    for warps, r in itertools.product([1, 2, 4, 8], [1, 2, 4]):
        bn = 32 * warps * r
        if n % bn:
            continue
        for waves in (0, 4, 8):
            for nm in (False, True) if waves == 0 else (False,):
                name = f"rows{bn}x{warps}" + (f"s{waves}" if waves else "") + ("N" if nm else "")
                out[name] = (int4_nk_rows, (*packs[nm], 128, bn, warps, waves))
            out[f"LOADS-rows{bn}x{warps}" + (f"s{waves}" if waves else "")] = (
                int4_nk_rows, (*packs[False], 128, bn, warps, waves, True))
    return out


def main():
    """[--compile-only I/N] [--kernel tile|rows] [K:N ...]. --compile-only: compile and check
    shard I of N of the configs only (run shards in parallel processes to fill Triton's
    cache, then time in one)."""
    from harness.timing import TimingConfig, time_providers
    from tools.read_bound import read_bound_s
    args = sys.argv[1:]
    shard, kernel = None, "rows"
    while args and args[0].startswith("--"):
        if args[0] == "--compile-only":
            shard = tuple(int(v) for v in args[1].split("/"))
        elif args[0] == "--kernel":
            kernel = args[1]
        args = args[2:]
    shapes = [tuple(int(v) for v in a.split(":")) for a in args] or [(4096, 14336), (14336, 4096)]
    for k, n in shapes:
        torch.manual_seed(0)
        qw = quantize_int4_weight(torch.randn(n, k, device="cuda") * k ** -0.5, 128, torch.bfloat16)
        packs = {nm: repack(qw, nm) for nm in (False, True)}
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        ref = wo_matmul(x, qw, _config_override={"path": "mma"}).float().squeeze(0)
        y = torch.empty(n, device="cuda", dtype=torch.bfloat16)
        provs = {"ours (K/2, N)": lambda: wo_matmul(x, qw)}
        sweep = {"rows": configs_rows, "tile": configs_tile, "tile16": configs_tile16}[kernel]
        cfgs = list(sweep(k, n, packs).items())
        if shard:
            cfgs = cfgs[shard[0]::shard[1]]
        for name, (fn, a) in cfgs:
            try:
                out = fn(x, *a[:3], y, *a[3:]).float()
            except Exception as e:  # a config Triton cannot compile (registers, shared memory)
                print(f"  SKIP {name}: {type(e).__name__}: {str(e)[:100]}")
                continue
            err = ((out - ref).norm() / ref.norm()).item()
            if err > 1e-2 and not name.startswith("LOADS"):
                print(f"  WRONG {name}: rel err {err:.3g}")
                continue
            provs[name] = lambda fn=fn, a=a: fn(x, *a[:3], y, *a[3:])
        if shard:
            continue
        ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
        rb, _ = read_bound_s(qw.nbytes)
        best = sorted(ms.items(), key=lambda kv: kv[1].median_s)
        print(f"int4 g128 m1 {k}x{n} ({qw.nbytes / 1e6:.1f} MB), {kernel}: read bound {rb * 1e6:.1f}us; "
              f"ours (K/2, N) {ms['ours (K/2, N)'].median_s * 1e6:.1f}us", flush=True)
        for k_, v in best:
            print(f"  {k_:28s} {v.median_s * 1e6:6.1f}us", flush=True)


if __name__ == "__main__":
    main()
