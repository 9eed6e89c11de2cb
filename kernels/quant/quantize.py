"""Weight and activation quantizers, in PyTorch: the one definition of each format that
the kernels (kernels/quant/*.py), their references and the benchmark runner use.

Weights come as nn.Linear stores them, w (N, K) = (out_features, in_features):

  int8 weight-only      q (N, K) int8 in [-127, 127], as nn.Linear (and torchao) store it,
                        each output channel's weights contiguous; scale (N,) per channel:
                        w[n, k] ~ q[n, k] * scale[n]   (symmetric, scale = max|w[n]| / 127)
                        One row (decode) reads each channel's weights as one contiguous run,
                        which a pure read of the weight runs as fast as the bytes allow (the
                        transposed (K, N) layout the int8 kernels once used was slower).
  int4 weight-only      stored transposed, K-major with N contiguous, so that the one-row
                        kernel's thread holds whole packed words of 4 channels and its scale
                        and zero rows are contiguous in N. (Packed (N, K/2), as int8 is,
                        the one-row product measured hardly faster: not worth the change.)
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

import math
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


FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _check_tensor(name: str, t, dtypes=FLOATS) -> None:
    """A tensor of one of dtypes, with values to read: on the CPU or a GPU (not 'meta')."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {t.dtype}; supported: "
                        + ", ".join(str(d).replace("torch.", "") for d in dtypes))
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on {t.device}: its values are read, on cpu or cuda")


def check_int(name: str, v, minimum: int = 0) -> None:
    """An int (not a bool, not a float) of at least `minimum`: TypeError, else ValueError."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {v}")


def check_number(name: str, v) -> None:
    """A real number (int or float, not a bool)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):  # one sync: quantizing is done once, offline
        raise ValueError(f"{name} holds inf or NaN: it has no scale on the quantized grid")


def _check_weight(w, group=None):
    _check_tensor("w", w)
    if w.dim() != 2:
        raise ValueError(f"w must be a 2-D floating-point (out_features, in_features) tensor, got shape "
                         f"{tuple(w.shape)}")
    if w.shape[1] == 0:
        raise ValueError(f"w has in_features 0 (shape {tuple(w.shape)}): there is nothing to quantize per channel")
    if group is not None:
        check_int("group", group)
        if group not in GROUP_SIZES:
            raise ValueError(f"group size {group} is not supported (supported: {GROUP_SIZES})")
        if w.shape[1] % group:
            raise ValueError(f"in_features {w.shape[1]} is not a multiple of the group size {group}")
    _check_finite("w", w)


def _scale_dtype(dtype, w: torch.Tensor) -> torch.dtype:
    """The dtype scales (and zeros) are stored in: the activation dtype, by default w's if
    16-bit, else bfloat16."""
    if dtype is None:
        return w.dtype if w.dtype != torch.float32 else torch.bfloat16
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__} {dtype!r}")
    if dtype not in FLOATS:
        raise TypeError(f"dtype {dtype} is not supported for scales: float16, bfloat16 or float32")
    return dtype


def stored_scale(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A per-channel scale rounded to the dtype it is stored in, and at least that dtype's
    smallest positive value: a tiny row's scale (an all-zero row's, in fp16 any under 3e-8)
    would otherwise round to 0 and its weights q = w / 0 be inf or NaN."""
    return _in_range(scale, dtype).to(dtype).clamp_min(torch.finfo(dtype).tiny * torch.finfo(dtype).eps)


def _in_range(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """scale, refused where it exceeds what dtype holds (it would be stored as inf, and every
    product through it be NaN)."""
    big = torch.finfo(dtype).max
    if bool((scale.float() > big).any()):
        where = tuple(int(i) for i in (scale.float() > big).nonzero()[0])
        raise ValueError(f"the weight's scale[{', '.join(map(str, where))}] ({scale.float()[where].item():.4g}) "
                         f"exceeds the largest "
                         f"{dtype} ({big:.4g}): store the scales in torch.bfloat16 (dtype=torch.bfloat16)")
    return scale


def quantize_int8_weight(w: torch.Tensor, dtype=None) -> QuantizedWeight:
    """Symmetric per-output-channel int8. dtype: the activation dtype scales are stored in
    (default w's dtype if 16-bit, else bfloat16)."""
    _check_weight(w)
    dtype = _scale_dtype(dtype, w)
    wf = w.float()
    scale = stored_scale(wf.abs().amax(dim=1) / 127, dtype)
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
    _check_tensor("packed", packed, (torch.uint8,))
    if packed.dim() != 2:
        raise ValueError(f"packed must be 2-D (K // 2, N), got shape {tuple(packed.shape)}")
    lo, hi = (packed & 15).long(), (packed >> 4).long()
    return torch.stack([lo, hi], dim=1).reshape(2 * packed.shape[0], packed.shape[1])


def _int4_weight(w, group, dtype, scale, zero):
    N, K = w.shape
    # Rounded as stored (an all-zero group's scale must stay a normal number of dtype);
    # q is computed from the stored values.
    scale, zero = _in_range(scale, dtype).clamp_min(torch.finfo(dtype).tiny).to(dtype), zero.to(dtype)
    wg = w.float().reshape(N, K // group, group)
    q = torch.round(wg / scale.float()[..., None] + zero.float()[..., None]).clamp(0, 15).reshape(N, K)
    return QuantizedWeight(4, _pack_int4(q), scale.t().contiguous(), zero.t().contiguous(), group, (N, K))


def quantize_int4_weight(w: torch.Tensor, group: int = 128, dtype=None) -> QuantizedWeight:
    """Asymmetric int4 per group of `group` input channels, scale and zero from min/max."""
    _check_weight(w, group)
    dtype = _scale_dtype(dtype, w)
    N, K = w.shape
    scale, zero = _int4_minmax(w.float().reshape(N, K // group, group))
    return _int4_weight(w, group, dtype, scale, zero)


def _shrink_lp(x, beta, p):
    """Proximal step of |x|^p / beta (p < 1): soft-shrink by |x|^(p-1) / beta."""
    shrunk = torch.sign(x) * torch.relu(x.abs() - x.abs().pow(p - 1) / beta)
    return torch.where(x == 0, 0.0, shrunk)  # 0^(p-1) / beta is inf / inf once beta has grown to inf


def hqq_zero(w: torch.Tensor, group: int, p: float = 0.7, beta: float = 10.0, kappa: float = 1.01,
             iters: int = 20, tol: float = 1e-3):
    """HQQ's zero-point search at fixed (min/max) scale, per group. Returns (scale, zero,
    iterations run). Alternates: round with the current zero; shrink the reconstruction
    error towards zero with the lp proximal step (large errors, from heavy tails, are kept as
    'outliers' rather than pulled on); set the zero to the mean that fits the rest; stop
    when the mean absolute error improves by less than a fraction `tol` (it creeps down
    for hundreds of steps otherwise), keeping the best zero seen."""
    _check_weight(w, group)
    for name, v in (("p", p), ("beta", beta), ("kappa", kappa), ("tol", tol)):
        check_number(name, v)
    if not (0 < p < 1 and 0 < beta < math.inf and 0 < kappa < math.inf):
        raise ValueError(f"HQQ needs 0 < p < 1 and finite beta > 0 and kappa > 0; got p={p}, beta={beta}, "
                         f"kappa={kappa}")
    check_int("iters", iters)
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
    dtype = _scale_dtype(dtype, w)
    scale, zero, _ = hqq_zero(w, group, **hqq_args)
    return _int4_weight(w, group, dtype, scale, zero)


def check_quantized(qw) -> None:
    """The stored format's shapes and dtypes (the module doc), for a QuantizedWeight built or
    changed by hand: an error that names what is off, not a wrong answer or a crash in a
    kernel. Device and dtype agreement with an input is the caller's to check."""
    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"qw must be a QuantizedWeight (kernels.quant.quantize), got {type(qw).__name__}")
    if not (isinstance(qw.shape, tuple) and len(qw.shape) == 2
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in qw.shape)):
        raise ValueError(f"qw.shape must be (out_features, in_features), two ints, got {qw.shape!r}")
    N, K = qw.shape
    check_int("qw.bits", qw.bits)
    if qw.bits == 4:
        check_int("qw.group", qw.group, 1)
    tensors = {"qweight": qw.qweight, "scale": qw.scale} | ({"zero": qw.zero} if qw.bits == 4 else {})
    for name, t in tensors.items():
        _check_tensor(f"qw.{name}", t, (torch.int8, torch.uint8) if name == "qweight" else FLOATS)
        if t.device != qw.qweight.device:
            raise ValueError(f"qw.{name} is on {t.device}, qw.qweight on {qw.qweight.device}: one device")
    if qw.bits == 8:
        if qw.qweight.dtype != torch.int8 or qw.qweight.shape != (N, K) or qw.scale.shape != (N,):
            raise ValueError(f"int8 weight must be qweight int8 (N, K) = ({N}, {K}) and scale (N,), got "
                             f"{qw.qweight.dtype} {tuple(qw.qweight.shape)} and {tuple(qw.scale.shape)}")
    elif qw.bits == 4:
        G = qw.group
        if G not in GROUP_SIZES:
            raise ValueError(f"group size {G} is not supported (supported: {GROUP_SIZES})")
        if qw.qweight.dtype != torch.uint8 or qw.qweight.shape != (K // 2, N) or K % G:
            raise ValueError(f"int4 weight must be packed uint8 (K/2, N) with K a multiple of the group {G}")
        if qw.scale.shape != (K // G, N) or qw.zero.shape != (K // G, N):
            raise ValueError(f"int4 scale and zero must be (K/group, N) = ({K // G}, {N})")
    else:
        raise ValueError(f"bits must be 8 or 4, got {qw.bits}")


def dequantize(qw: QuantizedWeight) -> torch.Tensor:
    """The (N, K) float32 weight the stored format represents."""
    check_quantized(qw)
    if qw.bits == 8:
        return qw.qweight.float() * qw.scale.float()[:, None]
    q = unpack_int4(qw.qweight).float()                                   # (K, N)
    g = torch.arange(q.shape[0], device=q.device) // qw.group
    return ((q - qw.zero.float()[g]) * qw.scale.float()[g]).t()


def quantize_int8_activations(x: torch.Tensor):
    """Dynamic per-token symmetric int8: (xq int8 (..., K), sx float32 (...,))."""
    _check_tensor("x", x)
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have at least one channel in its last dimension, got shape {tuple(x.shape)}")
    _check_finite("x", x)
    xf = x.float()
    sx = (xf.abs().amax(dim=-1) / 127).clamp_min(1e-12)
    return torch.round(xf / sx[..., None]).clamp(-127, 127).to(torch.int8), sx
