"""Where the kernels run: the GPU lane (native Triton on CUDA) or the CPU lane (Triton's
interpreter on CPU tensors, TRITON_INTERPRET=1), chosen once, before any kernel is defined;
the name of a GPU model as the suite files it (results, tuned launch tables); and the
switch of programmatic dependent launch."""
from __future__ import annotations

import os
import re


# KERNELS_PDL=0 turns programmatic dependent launch off (kernels/launch.py reads it at every
# launch; the perf harness sets it per case).
PDL_ENV = "KERNELS_PDL"


def configure_interpreter() -> None:
    """Without a CUDA GPU, run Triton kernels in the interpreter (must precede @triton.jit)."""
    if "TRITON_INTERPRET" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': one name per GPU model."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def device_ints(values, device, dtype=None):
    """A small list of Python ints as a tensor on `device` without waiting for the GPU:
    torch.tensor(values, device="cuda") copies from pageable memory, which blocks the host
    until the stream drains; a pinned staging copy does not."""
    import torch

    t = torch.tensor(list(values), dtype=dtype or torch.long)
    if torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
