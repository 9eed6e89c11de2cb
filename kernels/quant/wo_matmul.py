"""Weight-only quantized linear layers in Triton: W8A16 and W4A16 (grouped).

    y = x @ dequant(W)^T          x (M, K) fp16/bf16, W a QuantizedWeight (kernels/quant/quantize.py)

Three paths, chosen by the number of rows, each with its own launch space (kernels/tuning.py):
- one row, "gemv" (kernels/quant/wo_gemv.py, space "wo_gemv"): the CUDA cores, exact in
  the weights;
- few rows, "mma" (kernels/quant/wo_mma.py, space "wo_mma"): the tensor cores, K split over
  several programs; int8 exact in the weights, int4 rounded once to x's dtype;
- many rows, "dequant" (from DEQUANT_MIN_ROWS; kernels/quant/wo_dequant.py, space
  "wo_dequant"): the weight dequantized once in x's dtype, then torch.mm (cuBLAS).
An inf or NaN in x gives float64's NaN positions and inf signs on every path (x w is +-inf
by the sign of the dequantized weight, NaN where it is 0).
"""
from __future__ import annotations

import math

import torch

from kernels.checks import check_tensor

from .quantize import QuantizedWeight, check_int
from .wo_dequant import check_kernel_weight, dequantize_weight
from .wo_gemv import gemv
from .wo_mma import mma

DTYPES = (torch.float16, torch.bfloat16)
PATHS = ("mma", "gemv", "dequant")
# From this many rows, dequantize-then-cuBLAS is the default: the weight's one dequantization
# costs less there than the fused kernel's shortfall against cuBLAS (measured crossovers).
DEQUANT_MIN_ROWS = {4: 192, 8: 512}

__all__ = ["wo_matmul", "dequantize_weight", "gemv_takes", "DEQUANT_MIN_ROWS", "PATHS"]


def gemv_takes(N: int, K: int, bits: int) -> bool:
    """Whether the one-row path takes the shape: it reads whole 32-bit words, 4 output
    channels of an int4 row (N % 4), or 4 input channels of an int8 row (K % 4)."""
    for name, v in (("N", N), ("K", K), ("bits", bits)):
        check_int(name, v)
    if bits not in (4, 8):
        raise ValueError(f"bits must be 8 or 4, got {bits}")
    return (N if bits == 4 else K) % 4 == 0


def _gemv_refusal(N: int, K: int, qw: QuantizedWeight) -> str | None:
    """Why the one-row path cannot read this weight, or None: its shape (gemv_takes) or a
    qweight not on a 4-byte boundary (a view at an odd offset: the 32-bit loads would fault)."""
    if not gemv_takes(N, K, qw.bits):
        return ("the gemv path reads 32-bit words of four weights: "
                + (f"out_features {N}" if qw.bits == 4 else f"in_features {K}") + " is not a multiple of 4")
    if qw.qweight.data_ptr() % 4:
        return ("the gemv path reads the weight as 32-bit words: qweight does not start on a 4-byte boundary "
                "(a view at an odd offset); pass a contiguous copy")
    return None


def choose_path(M: int, N: int, K: int, qw: QuantizedWeight, path=None) -> str:
    """The path for M rows: `path` if given (checked that it can run), else the default."""
    refusal = _gemv_refusal(N, K, qw)
    if path is None:
        return "gemv" if M == 1 and refusal is None else "dequant" if M >= DEQUANT_MIN_ROWS[qw.bits] else "mma"
    if path not in PATHS:
        raise ValueError(f"path must be 'mma', 'gemv' or 'dequant', got {path!r}")
    if path == "gemv":
        if M != 1:
            raise ValueError(f"the gemv path computes one row; x has {M}")
        if refusal:
            raise ValueError(refusal)
    return path


def wo_matmul(x: torch.Tensor, qw: QuantizedWeight, *, num_splits=None, config: dict | None = None) -> torch.Tensor:
    """x @ dequant(qw)^T for x (..., K) fp16/bf16; returns (..., N) in x's dtype.
    config: launch options of the path taken (its "path" key picks the path: "gemv", "mma"
    or "dequant"); the rest go to that path's launch space, which names any it lacks."""
    check_tensor("x", x, dtypes=DTYPES)
    check_kernel_weight(qw)
    N, K = qw.shape
    if x.shape[-1] != K:
        raise ValueError(f"x has {x.shape[-1]} input channels; the weight has in_features {K}")
    if qw.qweight.device != x.device:
        raise ValueError(f"qweight is on {qw.qweight.device}, x on {x.device}: they must be on one device")
    if qw.scale.dtype != x.dtype or (qw.zero is not None and qw.zero.dtype != x.dtype):
        raise TypeError(f"scales are {qw.scale.dtype} but x is {x.dtype}: quantize with dtype={x.dtype}")
    if num_splits is not None:
        check_int("num_splits", num_splits, 1)
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict of launch options, got {type(config).__name__}")

    x2 = x.reshape(math.prod(x.shape[:-1]), K)  # (-1, K) is ambiguous for K = 0
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    M = x2.shape[0]
    y = torch.empty(*x.shape[:-1], N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    if K == 0:  # an empty sum
        return y.zero_()
    y2 = y.view(-1, N)
    options = dict(config or {})
    path = choose_path(M, N, K, qw, options.pop("path", None))
    if path == "dequant":
        torch.mm(x2, dequantize_weight(qw, x.dtype, config=options), out=y2)
    elif path == "gemv":
        gemv(x2, qw, y2, options, num_splits)
    else:
        mma(x2, qw, y2, options, num_splits)
    return y
