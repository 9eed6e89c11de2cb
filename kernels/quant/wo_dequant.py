"""The many-rows path of wo_matmul (`path="dequant"`): the weight dequantized once in x's
dtype by _dequant_kernel, then torch.mm (cuBLAS). Also the contiguity and device checks of
a weight the kernels read."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.checks import check_device, check_pow2_option
from kernels.launch import cdiv
from kernels.tuning import LaunchSpace

from .quantize import QuantizedWeight, check_quantized
from .rounding import to_float


@triton.jit
def _dequant_kernel(Q, S, Z, W, K, N, stride_q, stride_sg, BITS: tl.constexpr, GROUP: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """The weight the stored format represents, in W's dtype, computed in fp32 as
    quantize.dequantize does and rounded once. A block is BLOCK_R rows by BLOCK_C columns
    of Q: int8, W (N, K) = q s, rows the output channels; int4, W (K, N) = (q - z) s, rows
    the packed k pairs (2 BLOCK_R rows of W, inside one group)."""
    rr = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    if BITS == 8:
        r_ok = rr < N
        mask = r_ok[:, None] & (rc < K)[None, :]
        q = tl.load(Q + rr[:, None].to(tl.int64) * stride_q + rc[None, :], mask=mask, other=0)
        s = tl.load(S + rr, mask=r_ok, other=0.0).to(tl.float32)
        w = q.to(tl.float32) * s[:, None]
        tl.store(W + rr[:, None].to(tl.int64) * K + rc[None, :], to_float(w, W.dtype.element_ty), mask=mask)
    else:
        c_ok = rc < N
        mask = (rr < K // 2)[:, None] & c_ok[None, :]
        q = tl.load(Q + rr[:, None].to(tl.int64) * stride_q + rc[None, :], mask=mask, other=0)
        g = (tl.program_id(0) * BLOCK_R * 2) // GROUP
        s = tl.load(S + g * stride_sg + rc, mask=c_ok, other=0.0).to(tl.float32)
        z = tl.load(Z + g * stride_sg + rc, mask=c_ok, other=0.0).to(tl.float32)
        lo = ((q & 15).to(tl.float32) - z[None, :]) * s[None, :]  # k = 2j
        hi = ((q >> 4).to(tl.float32) - z[None, :]) * s[None, :]  # k = 2j + 1
        out = W + (2 * rr[:, None]).to(tl.int64) * N + rc[None, :]
        tl.store(out, to_float(lo, W.dtype.element_ty), mask=mask)
        tl.store(out + N, to_float(hi, W.dtype.element_ty), mask=mask)


def _default(bits: int, group: int, n: int, k: int) -> dict:
    return dict(block_r=16, block_n=512, num_warps=4)


def _candidates(bits: int, group: int, n: int, k: int) -> list:
    # an int4 block of rows lies inside one group: block_r divides half the group
    return [dict(block_r=br, block_n=bn, num_warps=w) for br in (8, 16, 32) if bits == 8 or (group // 2) % br == 0
            for bn in (256, 512, 1024) for w in (4, 8)]


def _check(cfg: dict) -> None:
    for name, top in (("block_r", 1024), ("block_n", 4096), ("num_warps", 32)):
        check_pow2_option(cfg, name, 1, top)


SPACE = LaunchSpace("wo_dequant", _default, _candidates, _check)


def launch_key(qw: QuantizedWeight) -> dict:
    N, K = qw.shape
    return dict(bits=qw.bits, group=qw.group or 0, n=N, k=K)


def check_kernel_weight(qw) -> None:
    """qw in the stored format (quantize.check_quantized), contiguous, where the kernels run."""
    check_quantized(qw)
    for name in ("qweight", "scale", "zero") if qw.bits == 4 else ("qweight", "scale"):
        t = getattr(qw, name)
        check_device(f"qw.{name}", t)
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")


def dequantize_weight(qw: QuantizedWeight, dtype: torch.dtype, *, config: dict | None = None) -> torch.Tensor:
    """The (K, N) weight of qw in `dtype`, by _dequant_kernel: the same values as
    quantize.dequantize(qw).to(dtype).t(), bit for bit. For int8 it is the transposed view
    of an (N, K) tensor, as nn.Linear holds its weight (torch.mm reads it so, no copy).
    config (launch options, space "wo_dequant"): block_r, rows of qweight per program (for
    int4 it must divide group / 2, so that a block lies in one group); block_n, columns of
    qweight per program; num_warps."""
    check_kernel_weight(qw)
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"dtype must be torch.float16, bfloat16 or float32, got {dtype!r}")
    N, K = qw.shape
    cfg = SPACE.choose(qw.qweight.device, launch_key(qw), config)
    block_r, block_n = cfg["block_r"], cfg["block_n"]
    if qw.bits == 4 and (qw.group // 2) % block_r:
        raise ValueError(f"block_r {block_r} must divide half the group ({qw.group // 2})")
    w = torch.empty(*((N, K) if qw.bits == 8 else (K, N)), dtype=dtype, device=qw.qweight.device)
    if w.numel():
        rows, cols = qw.qweight.shape
        zero = qw.zero if qw.bits == 4 else qw.scale
        _dequant_kernel[(cdiv(rows, block_r), cdiv(cols, block_n))](
            qw.qweight, qw.scale, zero, w, K, N, qw.qweight.stride(0), qw.scale.stride(0) if qw.bits == 4 else 0,
            BITS=qw.bits, GROUP=qw.group or 1, BLOCK_R=block_r, BLOCK_C=block_n, num_warps=cfg["num_warps"])
    return w.t() if qw.bits == 8 else w
