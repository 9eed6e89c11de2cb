"""Lab (not yet run on a GPU): the one-row int4 product on a K-contiguous packing, the
step int8 took (its gemv went from 88% to 99% of a pure read, gemv_nk_lab*.txt). The int4
weight is repacked here as (N, K/2) bytes, byte j of row n holding k = 2j (low nibble) and
2j + 1 (high nibble), scale and zero as (N, K/group); the suite's own kernel reads the
(K/2, N) format. Each thread reads 16 bytes of a row a load (32 weights); a 32-bit word's
nibbles become the fp16 floats 1024 + q (low) and 1024 + 16 q (high) by masks under fp16's
exponent, bytes 1 and 3 after one shift: five integer instructions for eight weights, then
one HADD2.F32 (widen; _x_pair's fp16 halves, which ptxas compiles to it with no inline
PTX) and one FFMA a weight. A word's 8 weights lie in one group: its sum
is folded per word, s (sum x q - z sum x), the offsets taken out with it.
Checked on the CPU lane only (the interpreter, bf16 x): with an fp32 output it agrees with
the exact product to 119-145 dB. Compiled for sm_90 (8 rows x 64 words, 4 warps): one
128-bit load and 32 HADD2.F32 per 32 weights, no I2F; but each thread holds one row, so
x's conversion is not shared across rows, and scale and zero are loaded per word. The
launch grid and rows per thread are the first things to sweep on the GPU.
Usage: PYTHONPATH=. python3 tools/int4_nk_lab.py [K:N ...]   (cold L2, events, bf16)."""
import itertools
import sys

import torch
import triton
import triton.language as tl

from kernels.quant import quantize_int4_weight, unpack_int4, wo_matmul
from kernels.quant.wo_matmul import _x_pair


@triton.jit
def _int4_nk_kernel(X, Q, S, Z, Y, K, stride_w, stride_g, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_W: tl.constexpr):
    """y[n] = sum_k x[k] (q[n, k] - z[n, g]) s[n, g]; Q (N, K/2) read as 32-bit words (8 k),
    stride_w = K / 8 words a row; no masks (N % BLOCK_N == 0, K % (8 BLOCK_W) == 0)."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rw = tl.arange(0, BLOCK_W)
    q_rows = Q.to(tl.pointer_type(tl.int32), bitcast=True) + rn.to(tl.int64)[:, None] * stride_w
    X32 = X.to(tl.pointer_type(tl.int32), bitcast=True)
    sz_rows = rn.to(tl.int64)[:, None] * stride_g
    acc = tl.zeros([BLOCK_N, BLOCK_W], dtype=tl.float32)
    for k0 in range(0, K, 8 * BLOCK_W):
        w = k0 // 8 + rw
        u = tl.load(q_rows + w[None, :])
        x0, x1 = _x_pair(tl.load(X32 + 4 * w), True)  # k = 8w + 0, 1: byte 0's low, high nibble
        x2, x3 = _x_pair(tl.load(X32 + 4 * w + 1), True)  # byte 1
        x4, x5 = _x_pair(tl.load(X32 + 4 * w + 2), True)  # byte 2
        x6, x7 = _x_pair(tl.load(X32 + 4 * w + 3), True)  # byte 3
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
        g = (k0 + 8 * rw) // GROUP
        s = tl.load(S + sz_rows + g[None, :]).to(tl.float32)
        z = tl.load(Z + sz_rows + g[None, :]).to(tl.float32)
        acc += s * (xq - z * (x_lo + x_hi)[None, :])
    tl.store(Y + rn, tl.sum(acc, axis=1).to(Y.dtype.element_ty))


def repack(qw):
    """The suite's int4 weight as (N, K/2) packed bytes and (N, K/group) scale and zero."""
    q = unpack_int4(qw.qweight).t()  # (N, K)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8).contiguous()
    return packed, qw.scale.t().contiguous(), qw.zero.t().contiguous()


def int4_nk(x, packed, s, z, y, group, block_n, block_w, warps, stages=3):
    N, half_k = packed.shape
    _int4_nk_kernel[(N // block_n,)](x, packed, s, z, y, 2 * half_k, half_k // 4, s.stride(0), GROUP=group,
                                     BLOCK_N=block_n, BLOCK_W=block_w, num_warps=warps,
                                     num_stages=stages)
    return y


def main():
    from harness.timing import TimingConfig, time_providers
    from tools.read_bound import read_bound_s
    shapes = [tuple(int(v) for v in a.split(":")) for a in sys.argv[1:]] or [(4096, 14336), (14336, 4096)]
    for k, n in shapes:
        torch.manual_seed(0)
        qw = quantize_int4_weight(torch.randn(n, k, device="cuda") * k ** -0.5, 128, torch.bfloat16)
        packed, s, z = repack(qw)
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        ref = wo_matmul(x, qw, _config_override={"path": "mma"}).float().squeeze(0)
        y = torch.empty(n, device="cuda", dtype=torch.bfloat16)
        provs = {"ours (K/2, N)": lambda: wo_matmul(x, qw)}
        for bn, bw, warps in itertools.product([2, 4, 8, 16], [32, 64, 128, 256], [1, 2, 4, 8]):
            if not 32 * 4 * warps <= bn * bw * 4 <= 16384 or (k // 8) % bw:
                continue
            name = f"nk-n{bn}w{bw}x{warps}"
            out = int4_nk(x, packed, s, z, y, 128, bn, bw, warps).float()
            err = ((out - ref).norm() / ref.norm()).item()
            if err > 1e-2:
                print(f"  WRONG {name}: rel err {err:.3g}")
                continue
            provs[name] = lambda a=(bn, bw, warps): int4_nk(x, packed, s, z, y, 128, *a)
        ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=10, warmup_ms=2, mode="events"))
        rb, _ = read_bound_s(qw.nbytes)
        best = sorted(ms.items(), key=lambda kv: kv[1].median_s)
        print(f"int4 g128 m1 {k}x{n} ({qw.nbytes / 1e6:.1f} MB): read bound {rb * 1e6:.1f}us; "
              + ", ".join(f"{k_} {v.median_s * 1e6:.1f}us" for k_, v in best[:10]), flush=True)


if __name__ == "__main__":
    main()
