"""PyTorch references of the quantized linear layers, and the accuracy measure (SQNR).

Each reference multiplies by the dequantized weight (kernels/quant/quantize.py: dequantize)
in float64: the exact answer the stored format defines, against which the kernels are
judged by SQNR (DESIGN.md). The recipe's own error, against the unquantized weight, is a
separate, much lower floor, also written down per recipe in the tests."""
from __future__ import annotations

import torch

from .quantize import QuantizedWeight, check_quantized, dequantize


def wo_matmul_reference(x: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
    """x @ dequant(qw)^T in float64."""
    check_quantized(qw)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}"
                        + (f" of {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if x.dim() == 0 or x.shape[-1] != qw.shape[1]:
        raise ValueError(f"x must be (..., {qw.shape[1]}), got shape {tuple(x.shape)}")
    if x.device != qw.qweight.device:
        raise ValueError(f"x is on {x.device}, qw on {qw.qweight.device}: they must be on one device")
    return x.double() @ dequantize(qw).double().t()


def sqnr_db(signal: torch.Tensor, approx: torch.Tensor) -> float:
    """10 log10(|signal|^2 / |signal - approx|^2), in float64; inf when equal."""
    for name, t in (("signal", signal), ("approx", approx)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if signal.shape != approx.shape:  # broadcasting would compare other pairs
        raise ValueError(f"signal and approx must have one shape, got {tuple(signal.shape)} and {tuple(approx.shape)}")
    s, a = signal.double().cpu(), approx.double().cpu()
    noise = (s - a).pow(2).sum().item()
    power = s.pow(2).sum().item()
    if noise == 0:
        return float("inf")
    return 10 * torch.log10(torch.tensor(power / noise)).item()
