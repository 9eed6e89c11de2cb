"""Input checks shared by the kernels' Python wrappers: bad input gets an error that
names the argument and the problem, never a crash deep inside Triton."""
from __future__ import annotations

import math
import numbers

import torch

from kernels.platform import interpreting

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_tensor(name: str, t, dtypes=FLOAT_DTYPES, ndim_min: int = 1, kernel_input: bool = True) -> None:
    """kernel_input=False: the tensor feeds PyTorch code only, so the CPU or a GPU will do
    (not 'meta': its values are read)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = ", ".join(_dtype_name(d) for d in dtypes)
        raise TypeError(f"{name} has dtype {_dtype_name(t.dtype)}; supported: {allowed}")
    if t.dim() < ndim_min:
        raise ValueError(f"{name} must have at least {ndim_min} dimension(s), got shape {tuple(t.shape)}")
    if kernel_input:
        check_device(name, t)
    elif t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on {t.device}: its values are read, on cpu or cuda")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_same_dtype(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {_dtype_name(t.dtype)}; it must match {ref_name}'s {_dtype_name(ref.dtype)}")


def check_device(name: str, t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and interpreting():
        return
    raise ValueError(
        f"{name} is on {t.device}; the Triton kernels need CUDA tensors "
        "(or TRITON_INTERPRET=1 set before import to run the interpreter on CPU tensors)"
    )


def check_same_device(**tensors: torch.Tensor) -> None:
    for n, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{n} must be a torch.Tensor, got {type(t).__name__}")
    devices = {n: t.device for n, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on one device: {listed}")


def check_out(name: str, out, shape, dtype, device) -> None:
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {_dtype_name(out.dtype)}; it must be {_dtype_name(dtype)}")
    if tuple(out.shape) != tuple(shape) or out.device != device:
        raise ValueError(f"{name} must have shape {tuple(shape)} on {device}; got {tuple(out.shape)} on {out.device}")
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def check_qk_norm_weights(q, q_norm_weight, k_norm_weight, dtypes, contiguous: bool = False) -> bool:
    """QK-norm's two weights, (head_dim,) in q's dtype on q's device (contiguous if asked);
    both or neither. Returns whether QK-norm is on."""
    if q_norm_weight is None and k_norm_weight is None:
        return False
    head_dim = q.shape[-1]
    for name, w in (("q_norm_weight", q_norm_weight), ("k_norm_weight", k_norm_weight)):
        if w is None:
            raise ValueError("QK-norm needs both q_norm_weight and k_norm_weight")
        check_tensor(name, w, dtypes=dtypes)
        check_same_device(q=q, **{name: w})
        check_same_dtype(name, w, "q", q)
        if w.shape != (head_dim,) or (contiguous and not w.is_contiguous()):
            raise ValueError(f"{name} must have shape ({head_dim},)" + (", contiguous" if contiguous else "")
                             + f"; got {tuple(w.shape)}, strides {w.stride()}")
    return True


def check_int(name: str, value, minimum: int | None = None) -> int:
    """An integer option: TypeError for anything else, a bool included (Python counts True
    as 1), ValueError below `minimum`. Returns it as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_number(name: str, value, minimum: float | None = None) -> float:
    """A real, finite number (int or float, not a bool): TypeError for other types,
    ValueError for NaN, infinities or a value below `minimum`. Returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise ValueError(f"{name} must be a finite number" + (f" >= {minimum}" if minimum is not None else "")
                         + f", got {value}")
    return float(value)


def _byte_span(t: torch.Tensor):
    """[first, last + 1) bytes of memory that t's elements occupy; None when it has none."""
    if t.numel() == 0:
        return None
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype)


def check_no_overlap(out_name: str, out, inputs: dict, in_place_ok: tuple = ()) -> None:
    """Refuse an output (out=, or an argument written in place) whose memory overlaps that of
    any tensor in `inputs` (name -> tensor or None): the kernel's programs would read
    elements that others have already overwritten. The byte ranges the tensors span are
    compared, so a view that starts elsewhere in the same storage counts, and so do
    interleaved views (conservative). An output exactly equal to an input named in
    `in_place_ok` (same start, shape, strides, dtype) is allowed: the kernel supports that
    input being overwritten in place."""
    if out is None:
        return
    span = _byte_span(out)
    if span is None:
        return
    for name, t in inputs.items():
        if not isinstance(t, torch.Tensor) or t.device != out.device:
            continue
        other = _byte_span(t)
        if other is None or other[1] <= span[0] or span[1] <= other[0]:
            continue
        if name in in_place_ok and _same_view(out, t):
            continue
        also = f" (it may be {name} itself, exactly, to work in place)" if name in in_place_ok else ""
        raise ValueError(f"{out_name} must not overlap {name} in memory{also}: "
                         f"the kernel would read values it has already overwritten")


def check_pow2_option(cfg: dict, name: str, low: int, high: int) -> None:
    """A launch option that must be a power of two in [low, high] (ValueError naming it)."""
    v = cfg[name]
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high or v & (v - 1):
        raise ValueError(f"{name} must be a power of two from {low} to {high}, got {v!r}")


def check_int_option(cfg: dict, name: str, low: int, high: int) -> None:
    """A launch option that must be an int in [low, high] (ValueError naming it)."""
    v = cfg[name]
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
        raise ValueError(f"{name} must be an int from {low} to {high}, got {v!r}")


def check_positive_option(cfg: dict, name: str) -> None:
    """A launch option that must be a positive finite number (ValueError naming it)."""
    v = cfg[name]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
