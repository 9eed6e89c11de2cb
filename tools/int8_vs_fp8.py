"""Is the MixQ GEMM's shortfall int8's or the kernel's? One plain Triton GEMM (TMA reads of
both operands, K-major, grouped tile order: the MixQ GEMM's main loop with no scales and no
outliers) timed on int8 (int32 accumulation) and on fp8 e4m3 (fp32 accumulation), beside
torch._int_mm, fp8 torch._scaled_mm and MixQ's own kernels, at LLaMA-2-70B's q projection
(2048 x 8192 -> 10240; cold L2, events); and the int8 GEMM again on MixQ's own operands. Hopper's int8 and fp8 tensor-core peaks are equal,
so a gap between the two Triton rows is the compiler's int8 path, not the hardware.
Usage: PYTHONPATH=. python3 tools/int8_vs_fp8.py [M N K]"""
import itertools
import sys

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from harness.timing import TimingConfig, time_providers
from kernels.launch import grouped_tile
from kernels.quant import MixQLinear, mixq_linear
from kernels.quant.mixq import mixq_quantize
from tools.mixq_configs import planted_case


@triton.jit
def _gemm(AD, BD, C, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
          GROUP_M: tl.constexpr, INT8: tl.constexpr):
    pid_m, pid_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32 if INT8 else tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = AD.load([pid_m * BLOCK_M, k0])
        b = BD.load([pid_n * BLOCK_N, k0]).T
        acc = tl.dot(a, b, acc, out_dtype=tl.int32 if INT8 else tl.float32)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(C + rm[:, None].to(tl.int64) * N + rn[None, :], acc.to(tl.bfloat16),
             mask=(rm < M)[:, None] & (rn < N)[None, :])


def gemm(a, b_nk, bm, bn, bk, warps, stages):
    m, k = a.shape
    n = b_nk.shape[0]
    c = torch.empty(m, n, device=a.device, dtype=torch.bfloat16)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _gemm[grid](TensorDescriptor.from_tensor(a, [bm, bk]), TensorDescriptor.from_tensor(b_nk, [bn, bk]), c, m, n, k,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, INT8=a.dtype == torch.int8, num_warps=warps,
                num_stages=stages)
    return c


def main():
    m, n, k = (int(v) for v in sys.argv[1:4]) if len(sys.argv) > 3 else (2048, 10240, 8192)
    w = (torch.randn(n, k, device="cuda") * k ** -0.5).to(torch.bfloat16)
    x, layer = planted_case(m, w)
    a8 = torch.randint(-127, 128, (m, k), device="cuda", dtype=torch.int8)
    b8 = torch.randint(-127, 128, (n, k), device="cuda", dtype=torch.int8)
    af, bf = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
    one_m, one_n = torch.ones(m, 1, device="cuda"), torch.ones(1, n, device="cuda")
    provs = {"mixq_w8a8": lambda: mixq_linear(x, layer), "int_mm": lambda: torch._int_mm(a8, b8.t()),
             "scaled_mm_fp8": lambda: torch._scaled_mm(af, bf.t(), one_m, one_n, out_dtype=torch.bfloat16),
             "linear_bf16": lambda: torch.nn.functional.linear(x, w)}
    # the same GEMM on MixQ's own operands: x quantized per token around its outliers, the
    # layer's int8 weight (a GEMM's power, and so its clock, can depend on the values)
    xq, _ = mixq_quantize(x, layer.cache.is_out)
    provs["mixq_quantize_alone"] = lambda: mixq_quantize(x, layer.cache.is_out)
    empty = MixQLinear(w, dtype=torch.bfloat16)  # no outlier channels: the GEMM's epilogue without its outlier dot
    empty.track = False
    provs["mixq_w8a8_no_outliers"] = lambda: mixq_linear(x, empty)
    provs["mixq_quantize_alone_no_outliers"] = lambda: mixq_quantize(x, empty.cache.is_out)
    for (bm, bn, bk, warps, stages), kind in itertools.product(
            [(128, 256, 128, 8, 3), (128, 256, 128, 8, 4), (128, 128, 128, 4, 4), (256, 128, 128, 8, 3)],
            ["int8", "fp8", "int8-mixq-data"]):
        a, b = {"int8": (a8, b8), "fp8": (af, bf), "int8-mixq-data": (xq, layer.wq.t())}[kind]
        name = f"triton_{kind}_m{bm}n{bn}k{bk}w{warps}s{stages}"
        try:
            gemm(a, b, bm, bn, bk, warps, stages)
        except Exception as e:  # noqa: BLE001 - out of shared memory and friends
            print(f"  skip {name}: {type(e).__name__}", flush=True)
            continue
        provs[name] = lambda a=a, b=b, cfg=(bm, bn, bk, warps, stages): gemm(a, b, *cfg)
    ms = time_providers(provs, lambda: (), TimingConfig(rep_ms=20, warmup_ms=5, mode="events"))
    flops = 2 * m * n * k
    for name, t in sorted(ms.items(), key=lambda kv: kv[1].median_s):
        print(f"{name:40s} {t.median_s * 1e6:8.1f} us  {flops / t.median_s / 1e12:6.0f} TFLOP/s", flush=True)


if __name__ == "__main__":
    main()
