"""Baselines of the quantized linear layers, at the same shapes and dtype, each computing
the same function where it can (the dense GEMMs use the dequantized weight, so every
output is checked against one reference).

- linear: F.linear in bf16/fp16 (cuBLAS) on the dequantized weight.
- dequant_linear: dequantize in PyTorch, then F.linear (torch.compile'd in the perf cases:
  Inductor may fuse the dequantization into its GEMM).
- torchao: torchao's own config on an nn.Linear (int8 weight-only; int4 needs MSLK).
- gemlite: gemlite's W4A16 Triton GEMM on the same int4 values, scales and zeros (partials
  summed in fp32).
- int_mm: torch._int_mm on int8 inputs quantized beforehand (the int8 GEMM alone).
- smoothquant: per-token int8 activations in PyTorch, torch._int_mm, dequantized (W8A8).
- scaled_mm_fp8: torch._scaled_mm on fp8 e4m3 inputs with row-wise scales (the GEMM alone).
- bnb_int8: bitsandbytes' LLM.int8() (int8 with 16-bit outlier channels over 6), where it imports.
Each raises ProviderUnavailable with the reason where its library is missing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.providers import ProviderUnavailable

from .quantize import QuantizedWeight, dequantize, unpack_int4


def dequant_linear(x, qweight, scale, zero, group, bits):
    """x @ dequant(W)^T with the dequantization written in PyTorch ops."""
    if bits == 8:  # qweight (N, K)
        return F.linear(x, qweight.to(x.dtype)) * scale
    lo, hi = (qweight & 15), (qweight >> 4)
    q = torch.stack([lo, hi], dim=1).reshape(-1, qweight.shape[1]).to(x.dtype)      # (K, N)
    w = (q.view(-1, group, q.shape[1]) - zero[:, None, :]) * scale[:, None, :]
    return x @ w.reshape(-1, q.shape[1])


def torchao_linear(w: torch.Tensor, recipe: str):
    """An nn.Linear with weight w (N, K), quantized by torchao's config for the recipe."""
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except Exception as e:  # noqa: BLE001 - any import failure means "not here"
        raise ProviderUnavailable(f"torchao does not import: {type(e).__name__}: {e}") from None
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
    lin.weight.data.copy_(w)
    cfg = Int8WeightOnlyConfig() if recipe == "int8wo" else Int4WeightOnlyConfig(group_size=int(recipe.split("-")[1]))
    try:
        quantize_(lin, cfg)
    except Exception as e:  # noqa: BLE001
        raise ProviderUnavailable(f"torchao {type(cfg).__name__} failed here: {type(e).__name__}: {str(e)[:200]}") from None
    return lin


def gemlite_w4(qw: QuantizedWeight, dtype):
    """gemlite's W4A16 layer over our int4 values, scales and zeros (its format is the same
    asymmetric (q - zero) * scale per group)."""
    try:
        from gemlite.core import set_native_atomic_bfp16
        from gemlite.helper import A16Wn
    except Exception as e:  # noqa: BLE001
        raise ProviderUnavailable(f"gemlite does not import: {type(e).__name__}: {e}") from None
    # By default on Hopper gemlite's one-row kernel (GEMV_REVSPLITK) adds each K split's
    # partial into the bf16 output with bf16 atomics, a rounding per split: its outputs then
    # missed the 1% check (0024). Its fp32 option keeps the function the same as the others'.
    # The option is gemlite's global: every gemlite split-K kernel in this process then sums
    # in fp32 and casts (its persistent GEMM read it at import and keeps its default).
    set_native_atomic_bfp16(False)
    q = unpack_int4(qw.qweight).t().contiguous().to(torch.uint8)  # (N, K)
    return A16Wn(device=str(qw.qweight.device), dtype=dtype).from_weights(
        q, qw.scale.t().contiguous(), qw.zero.t().contiguous(), W_nbits=4, group_size=qw.group)


def bnb_int8_linear(w: torch.Tensor, threshold: float = 6.0):
    """bitsandbytes' LLM.int8() layer for weight w (N, K): int8 weights and activations,
    with the input channels over `threshold` taken out in 16-bit (MixQ's direct peer)."""
    try:
        import bitsandbytes as bnb
    except Exception as e:  # noqa: BLE001
        raise ProviderUnavailable(f"bitsandbytes does not import: {type(e).__name__}: {e}") from None
    try:
        lin = bnb.nn.Linear8bitLt(w.shape[1], w.shape[0], bias=False, has_fp16_weights=False, threshold=threshold)
        lin.weight = bnb.nn.Int8Params(w.detach().cpu().to(torch.float16), requires_grad=False, has_fp16_weights=False)
        return lin.to(w.device)
    except Exception as e:  # noqa: BLE001
        raise ProviderUnavailable(f"bitsandbytes Linear8bitLt failed here: {type(e).__name__}: {str(e)[:200]}") from None


def smoothquant_w8a8(x, wq, sw):
    """Per-token int8 activations, torch._int_mm, dequantized: x (M, K), wq (K, N) int8."""
    xf = x.float()
    sx = xf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127
    xq = torch.round(xf / sx).clamp(-127, 127).to(torch.int8)
    return (torch._int_mm(xq, wq).float() * sx * sw.float()).to(x.dtype)


def fp8_rowwise(x, w):
    """x (M, K), w (N, K) -> e4m3 operands with per-row scales, for torch._scaled_mm."""
    fmax = torch.finfo(torch.float8_e4m3fn).max
    sx = x.float().abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / fmax
    sw = w.float().abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / fmax
    x8 = (x.float() / sx).to(torch.float8_e4m3fn)
    w8 = (w.float() / sw).to(torch.float8_e4m3fn)
    return x8, w8.t(), sx, sw.t()  # w8.t() is column-major, as _scaled_mm wants


def scaled_mm_fp8(x8, w8t, sx, sw, dtype):
    return torch._scaled_mm(x8, w8t, scale_a=sx, scale_b=sw, out_dtype=dtype)


__all__ = ["dequant_linear", "torchao_linear", "gemlite_w4", "bnb_int8_linear", "smoothquant_w8a8", "fp8_rowwise",
           "scaled_mm_fp8",
           "dequantize", "F"]
