"""Weight and activation quantizers, in PyTorch: the one definition of each format that
the kernels (kernels/quant/*.py), their references and the benchmark runner use.

Weights come as nn.Linear stores them, w (N, K) = (out_features, in_features):

  int8 weight-only      q (N, K) int8 in [-127, 127], as nn.Linear (and torchao) store it,
                        each output channel's weights contiguous; scale (N,) per channel:
                        w[n, k] ~ q[n, k] * scale[n]   (symmetric, scale = max|w[n]| / 127)
                        One row (decode) reads each channel's weights as one contiguous run,
                        which a pure read of the weight runs as fast as the bytes allow; the
                        transposed (K, N) layout the int8 kernels once used kept that one-row
                        product 10% slower (results/<gpu>/gemv_nk_lab*.txt).
  int4 weight-only      stored transposed, K-major with N contiguous, so that the one-row
                        kernel's thread holds whole packed words of 4 channels and its scale
                        and zero rows are contiguous in N. (Packed (N, K/2), as int8 is,
                        the one-row product measured 0-6% faster at best: not worth the
                        change, tools/int4_nk_lab.py and results/<gpu>/int4_nk_lab_*.txt.)
                        q in [0, 15] per group of `group` input channels, asymmetric:
                        w[n, k] ~ (q[k, n] - zero[g, n]) * scale[g, n],  g = k // group
                        packed two per byte along K: packed[j, n] = q[2j, n] | q[2j+1, n] << 4
                        (K/2, N) uint8. scale, zero (K/group, N) in the activation dtype; the
                        zero is a float (HQQ moves it off the integers).
  HQQ int4              the same format; the zero-point is optimized at fixed scale by
                        half-quadratic proximal steps with an lp (p < 1) shrinkage of the
                        error, so that a few large weights do not set everyone's rounding.
  int8 activations      per token (row), symmetric, dynamic: x ~ xq * sx[m], sx = max|x[m]| / 127.

Scales and zeros are rounded to the activation dtype when stored, and every reference
dequantizes from the stored values, so the kernels are judged on the format as stored.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

GROUP_SIZES = (32, 64, 128, 256)


@dataclass
class QuantizedWeight:
    """A quantized (N, K) weight in the kernels' layout (see the module doc)."""
    bits: int                  # 8 or 4
    qweight: torch.Tensor      # int8 (N, K), or uint8 (K // 2, N) packed
    scale: torch.Tensor        # (N,) for int8; (K // group, N) for int4
    zero: torch.Tensor | None  # (K // group, N) for int4
    group: int | None          # input channels per scale (int4)
    shape: tuple               # (N, K) of the original weight

    @property
    def nbytes(self) -> int:
        """Bytes a kernel reads for the weight: packed values, scales and zeros."""
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.scale, self.zero) if t is not None)


def _check_weight(w, group=None):
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"w must be a 2-D floating-point (out_features, in_features) tensor, got "
                         f"{type(w).__name__ if not isinstance(w, torch.Tensor) else (tuple(w.shape), w.dtype)}")
    if w.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"w has dtype {w.dtype}; supported: float16, bfloat16, float32")
    if group is not None:
        if group not in GROUP_SIZES:
            raise ValueError(f"group size {group} is not supported (supported: {GROUP_SIZES})")
        if w.shape[1] % group:
            raise ValueError(f"in_features {w.shape[1]} is not a multiple of the group size {group}")


def quantize_int8_weight(w: torch.Tensor, dtype=None) -> QuantizedWeight:
    """Symmetric per-output-channel int8. dtype: the activation dtype scales are stored in
    (default w's dtype if 16-bit, else bfloat16)."""
    _check_weight(w)
    dtype = dtype or (w.dtype if w.dtype != torch.float32 else torch.bfloat16)
    wf = w.float()
    scale = (wf.abs().amax(dim=1) / 127).clamp_min(1e-12).to(dtype)  # rounded as stored
    q = torch.round(wf / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return QuantizedWeight(8, q.contiguous(), scale, None, None, tuple(w.shape))  # w may be a transposed view


def _int4_minmax(wg):
    """Per-group scale and float zero from min/max: w ~ (q - zero) * scale, q in [0, 15].
    The range always includes 0, so the zero lies in [0, 15] (a group far from zero would
    otherwise need a zero of thousands, which bf16 cannot hold to the step)."""
    lo, hi = wg.amin(dim=-1).clamp(max=0.0), wg.amax(dim=-1).clamp(min=0.0)
    scale = ((hi - lo) / 15).clamp_min(1e-8)
    return scale, -lo / scale


def _pack_int4(q_nk: torch.Tensor) -> torch.Tensor:
    """(N, K) values in [0, 15] -> (K // 2, N) uint8, even k in the low nibble."""
    qt = q_nk.t().to(torch.uint8)
    return (qt[0::2] | (qt[1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(K // 2, N) uint8 -> (K, N) int64 values in [0, 15]."""
    lo, hi = (packed & 15).long(), (packed >> 4).long()
    return torch.stack([lo, hi], dim=1).reshape(-1, packed.shape[1])


def _int4_weight(w, group, dtype, scale, zero):
    N, K = w.shape
    # Rounded as stored (an all-zero group's scale must stay a normal number of dtype);
    # q is computed from the stored values.
    scale, zero = scale.clamp_min(torch.finfo(dtype).tiny).to(dtype), zero.to(dtype)
    wg = w.float().reshape(N, K // group, group)
    q = torch.round(wg / scale.float()[..., None] + zero.float()[..., None]).clamp(0, 15).reshape(N, K)
    return QuantizedWeight(4, _pack_int4(q), scale.t().contiguous(), zero.t().contiguous(), group, (N, K))


def quantize_int4_weight(w: torch.Tensor, group: int = 128, dtype=None) -> QuantizedWeight:
    """Asymmetric int4 per group of `group` input channels, scale and zero from min/max."""
    _check_weight(w, group)
    dtype = dtype or (w.dtype if w.dtype != torch.float32 else torch.bfloat16)
    N, K = w.shape
    scale, zero = _int4_minmax(w.float().reshape(N, K // group, group))
    return _int4_weight(w, group, dtype, scale, zero)


def _shrink_lp(x, beta, p):
    """Proximal step of |x|^p / beta (p < 1): soft-shrink by |x|^(p-1) / beta."""
    return torch.sign(x) * torch.relu(x.abs() - x.abs().pow(p - 1) / beta)


def hqq_zero(w: torch.Tensor, group: int, p: float = 0.7, beta: float = 10.0, kappa: float = 1.01,
             iters: int = 20, tol: float = 1e-3):
    """HQQ's zero-point search at fixed (min/max) scale, per group. Returns (scale, zero,
    iterations run). Alternates: round with the current zero; shrink the reconstruction
    error towards zero with the lp proximal step (large errors, from heavy tails, are kept as
    'outliers' rather than pulled on); set the zero to the mean that fits the rest; stop
    when the mean absolute error improves by less than a fraction `tol` (it creeps down
    for hundreds of steps otherwise), keeping the best zero seen."""
    N, K = w.shape
    wg = w.float().reshape(N, K // group, group)
    scale, zero = _int4_minmax(wg)
    s, z = scale[..., None], zero[..., None]
    best_z, best_err = z.clone(), float("inf")
    run = 0
    for run in range(1, iters + 1):
        q = torch.round(wg / s + z).clamp(0, 15)
        err_now = (wg - (q - z) * s).abs().mean().item()
        if err_now > best_err * (1 - tol):
            if err_now < best_err:
                best_z, best_err = z.clone(), err_now
            break
        best_z, best_err = z.clone(), err_now
        w_e = _shrink_lp(wg - (q - z) * s, beta, p)
        z = (q - (wg - w_e) / s).mean(dim=-1, keepdim=True)
        beta *= kappa
    return scale, best_z[..., 0], run


def quantize_int4_weight_hqq(w: torch.Tensor, group: int = 128, dtype=None, **hqq_args) -> QuantizedWeight:
    """int4 as quantize_int4_weight, the zero-point optimized by HQQ (hqq_zero)."""
    _check_weight(w, group)
    dtype = dtype or (w.dtype if w.dtype != torch.float32 else torch.bfloat16)
    scale, zero, _ = hqq_zero(w, group, **hqq_args)
    return _int4_weight(w, group, dtype, scale, zero)


def dequantize(qw: QuantizedWeight) -> torch.Tensor:
    """The (N, K) float32 weight the stored format represents."""
    if qw.bits == 8:
        return qw.qweight.float() * qw.scale.float()[:, None]
    q = unpack_int4(qw.qweight).float()                                   # (K, N)
    g = torch.arange(q.shape[0], device=q.device) // qw.group
    return ((q - qw.zero.float()[g]) * qw.scale.float()[g]).t()


def quantize_int8_activations(x: torch.Tensor):
    """Dynamic per-token symmetric int8: (xq int8 (..., K), sx float32 (...,))."""
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError("x must be a float16, bfloat16 or float32 tensor")
    xf = x.float()
    sx = (xf.abs().amax(dim=-1) / 127).clamp_min(1e-12)
    return torch.round(xf / sx[..., None]).clamp(-127, 127).to(torch.int8), sx
