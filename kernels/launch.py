"""Launch planning shared by the kernels that split a reduction over several programs
(split-KV attention, split-K linear layers)."""
from __future__ import annotations

import functools

import torch
import triton

INTERPRETER_SMS = 4  # the CPU lane: small enough that tests reach the split paths


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    return _cuda_sm_count(device.index or 0) if device.type == "cuda" else INTERPRETER_SMS


def split_plan(length: int, block: int, programs: int, device, num_splits=None, waves: int = 2,
               min_blocks: int = 2) -> tuple[int, int]:
    """Split a reduction of `length` into chunks (multiples of `block`) over `programs`
    programs each: by default enough chunks for about `waves` waves on the GPU, each at
    least `min_blocks` blocks long. Returns (number of chunks, chunk length)."""
    length = max(length, 1)
    if num_splits is None:
        num_splits = min(triton.cdiv(waves * sm_count(device), programs), triton.cdiv(length, min_blocks * block))
    num_splits = max(1, min(int(num_splits), triton.cdiv(length, block)))
    chunk = triton.cdiv(triton.cdiv(length, num_splits), block) * block
    return triton.cdiv(length, chunk), chunk
