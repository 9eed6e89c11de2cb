"""The fused linear perf cases' baselines compute the reference's function (CPU, float32):
a baseline that raises is skipped in a perf run as unavailable, so this is where a broken
one fails."""
import torch

from kernels.linear import baselines
from kernels.linear.reference import (gated_mlp_reference, linear_reference, lora_linear_reference,
                                      rmsnorm_linear_reference)

M, K, N, R = 5, 32, 48, 4
TOL = dict(rtol=1e-5, atol=1e-5)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_linear_baselines():
    x, w, res = _randn(M, K, seed=0), _randn(K, N, seed=1), _randn(M, N, seed=2)
    for fn in (baselines.eager_linear, baselines.addmm_linear):
        torch.testing.assert_close(fn(x, w, res), linear_reference(x, w, res), **TOL)


def test_rmsnorm_linear_baselines():
    x, g, w = _randn(M, K, seed=0), _randn(K, seed=1).abs() + 0.5, _randn(K, N, seed=2)
    for fn in (baselines.eager_rmsnorm_linear, baselines.torch_rmsnorm_linear):
        torch.testing.assert_close(fn(x, g, w, 1e-6), rmsnorm_linear_reference(x, g, w, 1e-6), **TOL)


def test_gated_mlp_baselines():
    x, w1, w3 = _randn(M, K, seed=0), _randn(K, N, seed=1), _randn(K, N, seed=2)
    want = gated_mlp_reference(x, w1, w3)
    torch.testing.assert_close(baselines.eager_gated_mlp(x, w1, w3), want, **TOL)
    torch.testing.assert_close(baselines.fused_weight_gated_mlp(x, torch.cat([w1, w3], dim=1)), want, **TOL)


def test_lora_linear_baseline():
    x, w, a, b = _randn(M, K, seed=0), _randn(K, N, seed=1), _randn(K, R, seed=2), _randn(R, N, seed=3)
    torch.testing.assert_close(baselines.eager_lora_linear(x, w, a, b, 0.5), lora_linear_reference(x, w, a, b, 0.5),
                               **TOL)
