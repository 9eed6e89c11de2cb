"""PyTorch references of the quantized linear layers, and the accuracy measure (SQNR).

Each reference computes in float64 from the stored format (kernels/quant/quantize.py): the
exact answer it defines, against which the kernels are judged by SQNR. The recipe's own
error, against the unquantized weight, is a separate, much lower floor, also written down
per recipe in the tests."""
from __future__ import annotations

import torch

from .mixq import QMAX, MixQLinear
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


def mixq_reference(x: torch.Tensor, layer: MixQLinear, outlier_idx: torch.Tensor) -> torch.Tensor:
    """What the kernels compute, in float64 from the stored int8 weight: the per-token int8
    product of the non-outlier channels plus the outlier channels at full precision. A row
    whose non-outlier channels hold an inf or a NaN has no per-token scale: there x times
    the weight the layer holds (int8 times its scale), whose infinities and NaNs the
    kernels match."""
    if not isinstance(layer, MixQLinear):
        raise TypeError(f"layer must be a MixQLinear, got {type(layer).__name__}")
    for name, t in (("x", x), ("outlier_idx", outlier_idx)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() == 0 or x.shape[-1] != layer.shape[1] or outlier_idx.dim() != 1:
        raise ValueError(f"x must be (..., {layer.shape[1]}) and outlier_idx 1-D; got {tuple(x.shape)} and "
                         f"{tuple(outlier_idx.shape)}")
    xd = x.reshape(-1, x.shape[-1]).double().cpu()
    idx = outlier_idx.long().cpu()
    inlier = xd.float()  # fp16/bf16 values are exact in fp32, where the kernel divides
    inlier[:, idx] = 0
    qmax = QMAX[layer.bits]
    finite = torch.isfinite(inlier).all(dim=-1)
    sx = (torch.where(finite[:, None], inlier, 0.0).abs().amax(dim=-1) / qmax).clamp_min(1e-12)
    q = inlier / sx[:, None]
    xq = torch.where(q >= 0, torch.floor(q + 0.5), torch.ceil(q - 0.5)).clamp(-qmax, qmax)  # half away, as the kernel
    wq, sw = layer.wq.double().cpu(), layer.sw.double().cpu()
    y = (torch.where(finite[:, None], xq, 0.0).double() @ wq) * sx.double()[:, None] * sw[None, :]
    if not finite.all():
        y[~finite] = inlier[~finite].double() @ (wq * sw[None, :])
    y += xd[:, idx] @ layer.w_hp.double().cpu()[idx]
    return y.reshape(*x.shape[:-1], -1)
