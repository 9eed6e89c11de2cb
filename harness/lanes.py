"""The two lanes: the GPU lane (native Triton on CUDA) and the CPU lane (the Triton
interpreter on CPU tensors, TRITON_INTERPRET=1), chosen once, before any kernel loads."""
from __future__ import annotations

import functools
import os

NO_GPU_PERF_REASON = "no CUDA GPU: perf cases time device work, so nothing is timed or recorded on this machine"


from kernels.platform import configure_interpreter, interpreting  # noqa: F401  (one definition, in kernels)


@functools.lru_cache(maxsize=None)
def has_gpu() -> bool:
    """A CUDA GPU that runs native Triton (not the interpreter)."""
    import torch

    return torch.cuda.is_available() and not interpreting()


GPU_SHARE_ENV = "KERNEL_BENCH_GPU_SHARE"  # set by the tuner: how many processes share the GPU at once


def gpu_free_bytes() -> int:
    """GPU memory this process may plan on (a case choosing whether a baseline's extra copy
    fits): the free memory, or, in one of N processes the tuner runs at once on one GPU
    (KERNEL_BENCH_GPU_SHARE=N), a 1/N share of the GPU less what this process holds, since
    each of them sees the whole GPU free before any has allocated."""
    import torch

    free, total = torch.cuda.mem_get_info()
    share = int(os.environ.get(GPU_SHARE_ENV, "1"))
    if share < 1:
        raise ValueError(f"{GPU_SHARE_ENV} must be a process count of at least 1, got {share}")
    return free if share == 1 else max(0, min(free, total // share - torch.cuda.memory_reserved()))


def test_device() -> str:
    return "cuda" if has_gpu() else "cpu"


@functools.lru_cache(maxsize=None)
def lane_slug() -> str:
    if not has_gpu():
        return "cpu"
    import torch

    from kernels.platform import gpu_slug

    return gpu_slug(torch.cuda.get_device_name())


def refuse_unknown_launch_options() -> None:
    """The interpreter drops keyword arguments a kernel does not take, where a compiled launch
    raises KeyError on them: on the CPU lane they raise too, so a stray option fails there first."""
    if not interpreting():
        return
    import dataclasses

    from triton.backends.nvidia.compiler import CUDAOptions
    from triton.runtime.interpreter import InterpretedFunction

    if getattr(InterpretedFunction.run, "refuses_unknown", False):
        return
    compile_options = {f.name for f in dataclasses.fields(CUDAOptions)}
    run = InterpretedFunction.run

    def strict_run(self, *args, grid, warmup, **kwargs):
        unknown = sorted(set(kwargs) - set(self.arg_names) - compile_options)
        if unknown:
            raise KeyError(f"Keyword argument {unknown[0]} was specified but unrecognised "
                           f"({self.fn.__name__} takes {', '.join(self.arg_names)})")
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    strict_run.refuses_unknown = True
    InterpretedFunction.run = strict_run


def describe_lane() -> str:
    if has_gpu():
        import torch

        return f"GPU ({torch.cuda.get_device_name()}), native Triton"
    return "CPU, Triton interpreter (TRITON_INTERPRET=1); perf cases skipped"
