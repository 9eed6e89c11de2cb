"""Both lanes treat a launch the same way: a keyword argument the kernel does not take is an
error (the compiled launcher raises KeyError; the interpreter would drop it silently, so the
CPU lane makes it raise too), while compile options such as num_warps pass."""
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
