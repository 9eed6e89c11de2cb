"""kernels/launch.py's host helpers (the device ones run inside every kernel's tests)."""
import numpy as np
import pytest
import torch
import triton

from kernels.launch import cdiv, next_power_of_2

pytestmark = pytest.mark.correctness


def test_host_cdiv_and_next_power_of_2_agree_with_triton():
    """The launch paths call these instead of triton.cdiv / triton.next_power_of_2, which
    go through Triton's constexpr-function wrapper from Python (about 2.6 us a call)."""
    for a in list(range(0, 300)) + [4095, 4096, 4097, 1 << 20, (1 << 31) + 5]:
        assert next_power_of_2(a) == triton.next_power_of_2(a), a
        for b in (1, 3, 16, 64, 100):
            assert cdiv(a, b) == triton.cdiv(a, b), (a, b)
    assert next_power_of_2(np.int64(33)) == next_power_of_2(torch.tensor(33)) == 64  # as triton's takes them
