"""PyTorch references of the quantized linear layers, and the accuracy measure (SQNR).

Each reference multiplies by the dequantized weight (kernels/quant/quantize.py: dequantize)
in float64: the exact answer the stored format defines, against which the kernels are
judged by SQNR (DESIGN.md). The recipe's own error, against the unquantized weight, is a
separate, much lower floor, also written down per recipe in the tests."""
from __future__ import annotations

import torch

from .quantize import QuantizedWeight, dequantize


def wo_matmul_reference(x: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
    """x @ dequant(qw)^T in float64."""
    return x.double() @ dequantize(qw).double().t()


def sqnr_db(signal: torch.Tensor, approx: torch.Tensor) -> float:
    """10 log10(|signal|^2 / |signal - approx|^2), in float64; inf when equal."""
    s, a = signal.double().cpu(), approx.double().cpu()
    noise = (s - a).pow(2).sum().item()
    power = s.pow(2).sum().item()
    if noise == 0:
        return float("inf")
    return 10 * torch.log10(torch.tensor(power / noise)).item()
