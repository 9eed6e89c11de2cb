"""Catch a call that waits on the GPU from the host (a hidden .item(), bool(tensor) or
pageable copy): the perf harness cannot time such a call, and a decode step with one cannot
be captured in a CUDA graph."""
import contextlib

import torch


@contextlib.contextmanager
def no_host_sync():
    """On CUDA, torch's sync debug mode raises at any synchronizing call. On the CPU lane
    nothing synchronizes, so the Python-side read-backs that would are refused instead."""
    if torch.cuda.is_available():
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)
        return

    def refuse(name):
        def read_back(self, *args, **kwargs):
            raise RuntimeError(f"Tensor.{name} reads a value back to the host (a GPU sync)")
        return read_back

    with contextlib.ExitStack() as stack:
        for name in ("__bool__", "item", "tolist", "__int__", "__float__"):
            original = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, refuse(name))
            stack.callback(setattr, torch.Tensor, name, original)
        yield
