"""The two lanes: the GPU lane (native Triton on CUDA) and the CPU lane (the Triton
interpreter on CPU tensors, TRITON_INTERPRET=1), chosen once, before any kernel loads."""
from __future__ import annotations

import functools

NO_GPU_PERF_REASON = "no CUDA GPU: perf cases time device work, so nothing is timed or recorded on this machine"


from kernels.platform import configure_interpreter, interpreting  # noqa: F401  (one definition, in kernels)


@functools.lru_cache(maxsize=None)
def has_gpu() -> bool:
    """A CUDA GPU that runs native Triton (not the interpreter)."""
    import torch

    return torch.cuda.is_available() and not interpreting()


def test_device() -> str:
    return "cuda" if has_gpu() else "cpu"


@functools.lru_cache(maxsize=None)
def lane_slug() -> str:
    if not has_gpu():
        return "cpu"
    import torch

    from kernels.platform import gpu_slug

    return gpu_slug(torch.cuda.get_device_name())


def describe_lane() -> str:
    if has_gpu():
        import torch

        return f"GPU ({torch.cuda.get_device_name()}), native Triton"
    return "CPU, Triton interpreter (TRITON_INTERPRET=1); perf cases skipped"
