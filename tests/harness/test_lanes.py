"""Both lanes treat a launch the same way: a keyword argument the kernel does not take is an
error (the compiled launcher raises KeyError; the interpreter would drop it silently, so the
CPU lane makes it raise too), while compile options such as num_warps pass. And the GPU
memory a process may plan its inputs on when it shares the GPU."""
import pytest
import torch
import triton
import triton.language as tl


@triton.jit
def _copy_kernel(src, dst, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst + offs, tl.load(src + offs, mask=offs < n), mask=offs < n)


def test_an_unknown_launch_option_is_an_error_on_either_lane(device):
    src = torch.arange(40, dtype=torch.float32, device=device)
    dst = torch.zeros_like(src)
    _copy_kernel[(2,)](src, dst, 40, BLOCK=32, num_warps=4)
    assert torch.equal(dst, src)
    with pytest.raises(KeyError, match="Keyword argument STRAY_OPTION was specified but unrecognised"):
        _copy_kernel[(2,)](src, dst, 40, BLOCK=32, STRAY_OPTION=1)


def test_gpu_free_bytes_is_a_share_of_the_gpu_under_the_tuners_parallel_processes(monkeypatch):
    """Alone, a process plans on the free memory; one of N processes the tuner runs at once
    plans on 1/N of the GPU less what it already holds (each of them sees the whole GPU free
    before any allocates: eight shared-prefix cases each chose a 9 GB copy and ran an H100 out
    of memory)."""
    from harness import lanes

    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (70 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 2 * gib)
    monkeypatch.delenv(lanes.GPU_SHARE_ENV, raising=False)
    assert lanes.gpu_free_bytes() == 70 * gib
    monkeypatch.setenv(lanes.GPU_SHARE_ENV, "8")
    assert lanes.gpu_free_bytes() == 8 * gib
    monkeypatch.setenv(lanes.GPU_SHARE_ENV, "64")
    assert lanes.gpu_free_bytes() == 0
    monkeypatch.setenv(lanes.GPU_SHARE_ENV, "0")
    with pytest.raises(ValueError, match="KERNEL_BENCH_GPU_SHARE"):
        lanes.gpu_free_bytes()
