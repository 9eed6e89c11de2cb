"""Lab: the one-row int8 weight-only product on a K-contiguous (N, K) weight, as nn.Linear
and torchao store it, against the suite's gemv on its (K, N) layout and torchao's compiled
int8 weight-only. Question: is the (K, N) layout what keeps our gemv at 87-89% of a pure read?
Each thread reads 16 contiguous bytes of one weight row a load; the sums over K are
per-thread accumulators, reduced across threads once at the end.
Two conversions: "cvt", int8 -> fp32 by conversion instructions (what Inductor emits);
"fold", the word trick of kernels/quant/wo_matmul.py (1 + (q + 128) / 256 from bits, the
offset subtracted each step).
Usage: PYTHONPATH=. python3 tools/gemv_nk_lab.py [K:N ...]   (cold L2, events, bf16)."""
import itertools
import sys

import torch
import triton
import triton.language as tl

from harness.ceilings import get_ceilings
from harness.timing import TimingConfig, time_providers
from kernels.launch import last_to_arrive, split_plan, tile_counters
from kernels.quant import quantize_int8_weight, wo_matmul
from kernels.quant.wo_matmul import _bytes_as_floats
from tools.read_bound import read_bound_s


@triton.jit
def _gemv_nk_cvt(X, Q, S, Y, K, BN: tl.constexpr, BK: tl.constexpr):
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BN, BK], dtype=tl.float32)
    q_ptr = Q + rn.to(tl.int64)[:, None] * K + rk[None, :]
    for k0 in range(0, K, BK):
        q = tl.load(q_ptr + k0)
        x = tl.load(X + k0 + rk).to(tl.float32)
        acc += q.to(tl.float32) * x[None, :]
    y = tl.sum(acc, axis=1) * tl.load(S + rn).to(tl.float32)
    tl.store(Y + rn, y.to(Y.dtype.element_ty))


@triton.jit
def _x4(X, k0, rw):
    """x[k0 + 4 w + c] for c = 0..3 as four fp32 vectors over w, bf16 x read as 32-bit
    pairs in the word tile's own layout (no layout conversion through shared memory)."""
    X32 = X.to(tl.pointer_type(tl.int32), bitcast=True)
    p01 = tl.load(X32 + k0 // 2 + 2 * rw)
    p23 = tl.load(X32 + k0 // 2 + 2 * rw + 1)
    return ((p01 << 16).to(tl.float32, bitcast=True), (p01 & -65536).to(tl.float32, bitcast=True),
            (p23 << 16).to(tl.float32, bitcast=True), (p23 & -65536).to(tl.float32, bitcast=True))


@triton.jit
def _gemv_nk_fold(X, Q, S, Y, K, one, flip, BN: tl.constexpr, BW: tl.constexpr):
    """Q read as int32 words, 4 k a word; x split into the 4 byte positions' vectors."""
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rw = tl.arange(0, BW)
    acc = tl.zeros([BN, BW], dtype=tl.float32)
    Q32 = Q.to(tl.pointer_type(tl.int32), bitcast=True)
    q_ptr = Q32 + rn.to(tl.int64)[:, None] * (K // 4) + rw[None, :]
    mask: tl.constexpr = 0x7F8000
    for k0 in range(0, K, 4 * BW):
        u = tl.load(q_ptr + k0 // 4) ^ flip
        x0, x1, x2, x3 = _x4(X, k0, rw)
        x_off = 1.5 * (x0 + x1 + x2 + x3)  # the 1 + 128/256 of each field, taken out per step
        t = ((u << 15) & mask | one).to(tl.float32, bitcast=True) * x0[None, :]
        t += ((u << 7) & mask | one).to(tl.float32, bitcast=True) * x1[None, :]
        t += ((u >> 1) & mask | one).to(tl.float32, bitcast=True) * x2[None, :]
        t += ((u >> 9) & mask | one).to(tl.float32, bitcast=True) * x3[None, :]
        acc += t - x_off[None, :]
    y = 256.0 * tl.sum(acc, axis=1) * tl.load(S + rn).to(tl.float32)
    tl.store(Y + rn, y.to(Y.dtype.element_ty))


@triton.jit
def _gemv_nk_half(X, Q, S, Y, K, flip, BN: tl.constexpr, BW: tl.constexpr, ASM: tl.constexpr):
    """The fold kernel with the bytes made floats 1024 + (q + 128) by _bytes_f32."""
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rw = tl.arange(0, BW)
    acc = tl.zeros([BN, BW], dtype=tl.float32)
    Q32 = Q.to(tl.pointer_type(tl.int32), bitcast=True)
    q_ptr = Q32 + rn.to(tl.int64)[:, None] * (K // 4) + rw[None, :]
    for k0 in range(0, K, 4 * BW):
        u = tl.load(q_ptr + k0 // 4) ^ flip
        x0, x1, x2, x3 = _x4(X, k0, rw)
        f0, f1, f2, f3 = _bytes_as_floats(u, ASM)
        acc += f0 * x0[None, :]
        acc += f1 * x1[None, :]
        acc += f2 * x2[None, :]
        acc += f3 * x3[None, :]
        acc -= 1152.0 * (x0 + x1 + x2 + x3)[None, :]  # each float is q + 1152
    y = tl.sum(acc, axis=1) * tl.load(S + rn).to(tl.float32)
    tl.store(Y + rn, y.to(Y.dtype.element_ty))


@triton.jit
def _bf16_pair(p):
    return (p << 16).to(tl.float32, bitcast=True), (p & -65536).to(tl.float32, bitcast=True)


@triton.jit
def _gemv_nk1(X, Q, S, Y, P, COUNT, N, K, k_chunk, n_splits, flip, BN: tl.constexpr, SPLIT: tl.constexpr,
              RAW: tl.constexpr, ASM: tl.constexpr):
    """One warp a program; each thread one 64-bit word column (8 k a step) of BN rows, all
    rows in-thread; neighbouring words swapped so that Triton keeps one word a thread (its
    x then needs no layout conversion). K split over programs, the last to arrive sums."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rn = pid_n * BN + tl.arange(0, BN)
    d = tl.arange(0, 32) ^ 1
    Q64 = Q.to(tl.pointer_type(tl.int64), bitcast=True)
    X64 = X.to(tl.pointer_type(tl.int64), bitcast=True)
    q_ptr = Q64 + d[:, None] + rn.to(tl.int64)[None, :] * (K // 8)  # (words, rows): words-first
    k_start = pid_k * k_chunk
    k_end = tl.minimum(k_start + k_chunk, K)
    acc = tl.zeros([32, BN], dtype=tl.float32)
    racc = tl.zeros([32, BN], dtype=tl.int64)
    for k0 in range(k_start, k_end, 256):
        u = tl.load(q_ptr + k0 // 8)
        if RAW:
            racc += u
        else:
            xa = tl.load(X64 + k0 // 4 + 2 * d)
            xb = tl.load(X64 + k0 // 4 + 2 * d + 1)
            x0, x1 = _bf16_pair(xa.to(tl.int32))
            x2, x3 = _bf16_pair((xa >> 32).to(tl.int32))
            x4, x5 = _bf16_pair(xb.to(tl.int32))
            x6, x7 = _bf16_pair((xb >> 32).to(tl.int32))
            f0, f1, f2, f3 = _bytes_as_floats(u.to(tl.int32) ^ flip, ASM)
            f4, f5, f6, f7 = _bytes_as_floats((u >> 32).to(tl.int32) ^ flip, ASM)
            acc += f0 * x0[:, None]
            acc += f1 * x1[:, None]
            acc += f2 * x2[:, None]
            acc += f3 * x3[:, None]
            acc += f4 * x4[:, None]
            acc += f5 * x5[:, None]
            acc += f6 * x6[:, None]
            acc += f7 * x7[:, None]
            acc -= 1152.0 * (x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7)[:, None]  # each float is q + 1152
    if RAW:
        part = tl.sum(racc, axis=0).to(tl.float32)
    else:
        part = tl.sum(acc, axis=0)
    if SPLIT:
        tl.store(P + pid_k.to(tl.int64) * N + rn, part)
        if last_to_arrive(COUNT, pid_n, n_splits):
            total = tl.zeros([BN], dtype=tl.float32)
            for s_ in range(0, n_splits):
                total += tl.load(P + s_ * N + rn, cache_modifier=".cg")
            tl.store(Y + rn, (total * tl.load(S + rn).to(tl.float32)).to(Y.dtype.element_ty))
    else:
        tl.store(Y + rn, (part * tl.load(S + rn).to(tl.float32)).to(Y.dtype.element_ty))


def nk1(x, q_nk, s, y, bn, waves, raw=False):
    N, K = q_nk.shape
    n_tiles = N // bn
    n_splits, k_chunk = split_plan(K, 256, n_tiles, x.device, None, waves, min_blocks=1)
    split = n_splits > 1
    p = torch.empty(n_splits, N, dtype=torch.float32, device=x.device) if split else y
    count = tile_counters(x.device, n_tiles) if split else y
    _gemv_nk1[(n_tiles, n_splits)](x, q_nk, s, y, p, count, N, K, k_chunk, n_splits, -0x7F7F7F80, BN=bn,
                                   SPLIT=split, RAW=raw, ASM=x.is_cuda, num_warps=1, num_stages=1)
    return y


def half(x, q_nk, s, y, bn, bk, warps, stages):
    N, K = q_nk.shape
    _gemv_nk_half[(N // bn,)](x, q_nk, s, y, K, -0x7F7F7F80, BN=bn, BW=bk // 4, ASM=x.is_cuda, num_warps=warps,
                              num_stages=stages)
    return y


@triton.jit
def _gemv_nk_raw(X, Q, S, Y, K, BN: tl.constexpr, BW: tl.constexpr):
    """The fold kernel's loads with no arithmetic (the words summed as integers): what its
    access pattern costs alone. Its output is not the product."""
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rw = tl.arange(0, BW)
    acc = tl.zeros([BN, BW], dtype=tl.int32)
    Q32 = Q.to(tl.pointer_type(tl.int32), bitcast=True)
    q_ptr = Q32 + rn.to(tl.int64)[:, None] * (K // 4) + rw[None, :]
    for k0 in range(0, K, 4 * BW):
        acc += tl.load(q_ptr + k0 // 4)
    tl.store(Y + rn, tl.sum(acc, axis=1).to(tl.float32).to(Y.dtype.element_ty))


def raw(x, q_nk, s, y, bn, bk, warps, stages):
    N, K = q_nk.shape
    _gemv_nk_raw[(N // bn,)](x, q_nk, s, y, K, BN=bn, BW=bk // 4, num_warps=warps, num_stages=stages)
    return y


def cvt(x, q_nk, s, y, bn, bk, warps, stages):
    N, K = q_nk.shape
    _gemv_nk_cvt[(N // bn,)](x, q_nk, s, y, K, BN=bn, BK=bk, num_warps=warps, num_stages=stages)
    return y


def fold(x, q_nk, s, y, bn, bk, warps, stages):
    N, K = q_nk.shape
    _gemv_nk_fold[(N // bn,)](x, q_nk, s, y, K, 0x3F800000, -0x7F7F7F80, BN=bn, BW=bk // 4, num_warps=warps,
                              num_stages=stages)
    return y


def main():
    bw = get_ceilings()["copy_gbps"]
    shapes = [tuple(int(v) for v in a.split(":")) for a in sys.argv[1:]] or [(4096, 14336), (14336, 4096)]
    for k, n in shapes:
        torch.manual_seed(0)
        w = torch.randn(n, k, device="cuda") * k ** -0.5
        qw = quantize_int8_weight(w, torch.bfloat16)
        q_nk = qw.qweight.t().contiguous()
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        ref = (x.float() @ (qw.qweight.float() * qw.scale.float())).squeeze(0)
        y = torch.empty(n, device="cuda", dtype=torch.bfloat16)
        provs = {"ours (K,N)": lambda: wo_matmul(x, qw),
                 "ours (K,N) half": lambda: wo_matmul(x, qw, _config_override={"int8_half": True}),
                 "F.linear": lambda wd=(qw.qweight.t() * qw.scale[:, None]).to(torch.bfloat16).contiguous():
                 torch.nn.functional.linear(x, wd)}
        try:
            from kernels.norm.baselines import compiled
            from kernels.quant.baselines import torchao_linear
            lin = compiled(torchao_linear(w.to(torch.bfloat16), "int8wo"))
            lin(x)
            provs["torchao compiled"] = lambda: lin(x)
        except Exception as e:  # noqa: BLE001
            print(f"torchao: {type(e).__name__}: {str(e)[:120]}")
        for kind, fn in (("half", half), ("fold", fold), ("raw", raw)):
            for bn, bk, warps, stages in itertools.product([2, 4, 8, 16, 32], [512, 1024, 2048], [1, 2, 4, 8], [2, 3, 4]):
                if bk * bn > 16384 or bk * bn < 32 * 16 * warps or k % bk or (kind != "half" and stages != 3):
                    continue
                name = f"{kind}-n{bn}k{bk}w{warps}s{stages}"
                try:
                    out = fn(x, q_nk, qw.scale, y, bn, bk, warps, stages).float()
                except Exception as e:  # noqa: BLE001
                    print(f"  skip {name}: {type(e).__name__}")
                    continue
                err = ((out - ref).norm() / ref.norm()).item()
                if err > 1e-2 and kind != "raw":
                    print(f"  WRONG {name}: rel err {err:.3g}")
                    continue
                provs[name] = lambda fn=fn, a=(bn, bk, warps, stages): fn(x, q_nk, qw.scale, y, *a)
        for bn, waves, raw_ in itertools.product([8, 16], [4, 16], [False, True]):
            name = f"{'raw1' if raw_ else 'nk1'}-n{bn}x{waves}"
            try:
                out = nk1(x, q_nk, qw.scale, y, bn, waves, raw_).float()
            except Exception as e:  # noqa: BLE001
                print(f"  skip {name}: {type(e).__name__}")
                continue
            err = ((out - ref).norm() / ref.norm()).item()
            if err > 1e-2 and not raw_:
                print(f"  WRONG {name}: rel err {err:.3g}")
                continue
            provs[name] = lambda a=(bn, waves, raw_): nk1(x, q_nk, qw.scale, y, *a)
        ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
        rb, _ = read_bound_s(qw.nbytes)
        pct = lambda t: f"{t * 1e6:.1f}us {qw.nbytes / t / 1e9 / bw:.0%}"
        fixed = [p for p in ("ours (K,N)", "ours (K,N) half", "F.linear", "torchao compiled") if p in ms]
        best = sorted([kv for kv in ms.items() if kv[0] not in fixed], key=lambda kv: kv[1].median_s)
        per_kind = {}
        for k_, v in best:
            per_kind.setdefault(k_.split("-")[0], f"{k_} {pct(v.median_s)}")
        print(f"int8wo m1 {k}x{n} ({qw.nbytes / 1e6:.1f} MB): read bound {pct(rb)}; "
              + ", ".join(f"{p} {pct(ms[p].median_s)}" for p in fixed)
              + "; best: " + ", ".join(f"{k_} {pct(v.median_s)}" for k_, v in best[:8])
              + "; best per kind: " + ", ".join(per_kind.values()), flush=True)
        for kind in per_kind:
            print(f"  {kind}: " + ", ".join(f"{k_} {v.median_s * 1e6:.1f}" for k_, v in best if k_.split("-")[0] == kind))


if __name__ == "__main__":
    main()
