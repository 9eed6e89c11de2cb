"""Launch planning shared by the kernels that split a reduction over several programs
(split-KV attention, split-K linear layers)."""
from __future__ import annotations

import functools
import math
import operator
import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from kernels.platform import PDL_ENV

INTERPRETER_SMS = 4  # the CPU lane: small enough that tests reach the split paths


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    return _cuda_sm_count(device.index or 0) if device.type == "cuda" else INTERPRETER_SMS


@functools.lru_cache(maxsize=None)
def _cuda_major(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) on the host. triton.cdiv called from Python goes through Triton's
    constexpr-function wrapper: about 2.6 us a call on the CPU lane's machine, several a launch."""
    return (a + b - 1) // b


def next_power_of_2(n: int) -> int:
    """The least power of two >= n (0 for 0), as triton.next_power_of_2, on the host."""
    n = operator.index(n)  # numpy and tensor ints too
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def pdl_options(device: torch.device, launch_early: bool = True) -> dict:
    """Launch options for programmatic dependent launch (PDL, Hopper and newer), to pass
    to a kernel that calls `pdl_wait` before it reads what an earlier kernel wrote.

    With PDL a kernel is launched while the one before it on the stream is still running,
    as soon as every program of that one has called `pdl_launch_dependents` (or ended);
    its programs set up and wait in `pdl_wait` for the earlier kernel's writes, so the
    launch gap between the short kernels of a decode step is hidden. CUDA graphs keep the
    overlap (captured as programmatic edges). Both calls are no-ops when a kernel is
    launched without PDL. (Asking L2 for the first weight or KV blocks before the wait
    gained nothing in the layers.)
    KERNELS_PDL=0 in the environment turns it off, for timing without it.
    launch_early=False: the kernel itself starts only when the one before it has ended (its
    wait is then a no-op), but still lets the kernel after it launch early."""
    on = device.type == "cuda" and os.environ.get(PDL_ENV, "1") != "0" and _cuda_major(device.index or 0) >= 9
    if not on:
        return {"PDL": False}
    return {"PDL": True, "launch_pdl": True} if launch_early else {"PDL": True}


@triton.jit
def pdl_launch_dependents(PDL: tl.constexpr):
    """Let the next kernel on the stream launch once every program of this one got here."""
    if PDL:
        gdc_launch_dependents()


@triton.jit
def pdl_wait(PDL: tl.constexpr):
    """Wait until the earlier kernel has finished and its writes are visible. Every program
    must pass here before it reads that kernel's outputs or writes anything, and before it
    ends: the kernel after it relies on this one having waited (so an output two kernels
    back is complete too)."""
    if PDL:
        gdc_wait()


def split_plan(length: int, block: int, programs: int, device, num_splits=None, waves: float = 2,
               min_blocks: int = 2, nearest: bool = False) -> tuple[int, int]:
    """Split a reduction of `length` into chunks (multiples of `block`) over `programs`
    programs each: by default enough chunks for about `waves` waves on the GPU (at least
    that many, or the nearest count with `nearest`), each at least `min_blocks` blocks long.
    Returns (number of chunks, chunk length)."""
    length = max(length, 1)
    if num_splits is None:
        want = waves * sm_count(device) / programs
        num_splits = min(max(1, round(want)) if nearest else math.ceil(want), cdiv(length, min_blocks * block))
    num_splits = max(1, min(int(num_splits), cdiv(length, block)))
    chunk = cdiv(cdiv(length, num_splits), block) * block
    return cdiv(length, chunk), chunk


MAX_TILES = 8192
SPARE_BUFFERS = 8
_counters: dict = {}   # (device index, stream) -> zeroed counters, reset by the kernels
_spares: dict = {}     # device index -> zeroed buffers made eagerly, for CUDA-graph captures


def tile_counters(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 arrival counters for split reductions that finish inside the kernel:
    each split program of an output tile counts itself in, and the last one combines the
    partials and resets the counter to zero for the next launch.

    One buffer per (device, stream), so eager launches on different streams never share
    one. A CUDA graph keeps the buffer of the stream it was captured on: graphs captured on
    one stream share it, so replay them one after another, not concurrently.
    A buffer must be zeroed before its first use, which a CUDA-graph capture cannot do
    eagerly: the first eager call on a device also zeroes a few spare buffers, and a stream
    first seen while capturing takes one of them. Without a spare, the capture gets a fresh
    zeroed buffer whose zeroing (a memset node) is replayed with the graph."""
    if n > MAX_TILES:  # splitting only happens when there are too few tiles to fill the GPU
        raise ValueError(f"{n} output tiles exceed the split counter buffer ({MAX_TILES})")
    if device.type != "cuda":
        return torch.zeros(n, dtype=torch.int32, device=device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (index, torch.cuda.current_stream(device).cuda_stream)
    buf = _counters.get(key)
    if buf is not None:
        return buf
    capturing = torch.cuda.is_current_stream_capturing()
    if not capturing:
        if index not in _spares:
            _spares[index] = [torch.zeros(MAX_TILES, dtype=torch.int32, device=device) for _ in range(SPARE_BUFFERS)]
        buf = torch.zeros(MAX_TILES, dtype=torch.int32, device=device)
    elif _spares.get(index):
        buf = _spares[index].pop()
    else:
        return torch.zeros(MAX_TILES, dtype=torch.int32, device=device)
    _counters[key] = buf
    return buf


def tma_ok(*tensors, need_hopper=True):
    """Whether the 2-D tensors can be read by TMA: Hopper or newer, base addresses and row
    strides in multiples of 16 bytes (unit stride along a row is checked elsewhere)."""
    device = tensors[0].device
    if need_hopper and (device.type != "cuda" or _cuda_major(device.index or 0) < 9):
        return False
    return all(t.data_ptr() % 16 == 0 and (t.stride(0) * t.element_size()) % 16 == 0 for t in tensors)


def use_tma(option, tensors, needs: str, auto: bool = True) -> bool:
    """A kernel's `tma` launch option resolved for the tensors it would read through TMA:
    "auto" reads through TMA where it can (tma_ok, Hopper) and `auto` allows; True insists,
    and raises, naming what it `needs`, where the tensors do not allow it; False never."""
    if option not in ("auto", True, False):
        raise ValueError(f"tma must be 'auto', True or False, got {option!r}")
    if option is True and not tma_ok(*tensors, need_hopper=False):
        raise ValueError(f"tma=True needs {needs}")
    return option is True or (option == "auto" and auto and tma_ok(*tensors))


@triton.jit
def last_to_arrive(COUNT, tile, n_splits):
    """Count this split program in on its output tile (COUNT from tile_counters); True for
    the last of the tile's n_splits programs, which then merges the partials. The barrier
    puts every thread's partial stores before the one acq_rel atomic, so the last program
    sees them all (read them with cache_modifier=".cg": L1 is not coherent). The last one
    resets the counter to zero for the next launch."""
    tl.debug_barrier()
    arrived = tl.atomic_add(COUNT + tile, 1, sem="acq_rel")
    last = arrived == n_splits - 1
    if last:
        tl.atomic_xchg(COUNT + tile, 0)
    return last


@triton.jit
def sum_partials(P, offs, mask, n_splits, stride, SPLITS_AT_ONCE: tl.constexpr):
    """sum over s < n_splits of the fp32 partials P[s * stride + offs] (offs 1-D), read
    from L2 (.cg) SPLITS_AT_ONCE splits a load: a loop of one split a load waits out the L2
    latency once per split, at the kernel's end, where no other work hides it."""
    s = tl.arange(0, SPLITS_AT_ONCE)
    total = tl.zeros_like(offs).to(tl.float32)
    for s0 in range(0, n_splits, SPLITS_AT_ONCE):
        ok = ((s0 + s) < n_splits)[:, None] & mask[None, :]
        total += tl.sum(tl.load(P + (s0 + s)[:, None] * stride + offs[None, :], mask=ok, other=0.0,
                                cache_modifier=".cg"), axis=0)
    return total


@triton.jit
def grouped_tile(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of output tile number `tile` (a program's id, or a persistent
    program's current tile), tiles taken in groups of GROUP_M rows of tiles, column by
    column, so that the programs running at once share their A and B tiles in L2."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    per_group = GROUP_M * tl.cdiv(N, BLOCK_N)
    first_m = (tile // per_group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    return first_m + (tile % per_group) % group_rows, (tile % per_group) // group_rows


@triton.jit
def tile_ranges(pid_m, pid_n, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The rows and columns of output tile (pid_m, pid_n) of an (M, N) output, and their
    in-bounds masks: (rm, rn, m_ok, n_ok)."""
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return rm, rn, rm < M, rn < N
