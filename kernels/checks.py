"""Input checks shared by the kernels' Python wrappers: bad input gets an error that
names the argument and the problem, never a crash deep inside Triton."""
from __future__ import annotations

import torch

from harness.lanes import interpreting

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_tensor(name: str, t, dtypes=FLOAT_DTYPES, ndim_min: int = 1) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} has dtype {str(t.dtype).replace('torch.', '')}; supported: {allowed}")
    if t.dim() < ndim_min:
        raise ValueError(f"{name} must have at least {ndim_min} dimension(s), got shape {tuple(t.shape)}")
    check_device(name, t)


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
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(
            f"{name} must have shape {tuple(shape)}, dtype {dtype} on {device}; "
            f"got {tuple(out.shape)}, {out.dtype} on {out.device}"
        )
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
        if w.shape != (head_dim,) or w.dtype != q.dtype or (contiguous and not w.is_contiguous()):
            raise ValueError(f"{name} must have shape ({head_dim},) and dtype {q.dtype}"
                             + (", contiguous" if contiguous else "") + f"; got {tuple(w.shape)}, {w.dtype}")
    return True
