"""The norm perf cases' baselines compute the reference's function (CPU, float32). A
baseline that raises is skipped in a perf run as unavailable, so a broken one would only
thin the comparison; this is where it fails instead."""
import pytest
import torch

from kernels.norm import baselines
from kernels.norm.reference import fused_add_rms_norm_reference, ngpt_update_reference, rms_norm_reference


def _inputs(rows=5, hidden=64):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(rows, hidden, generator=g), torch.randn(rows, hidden, generator=g),
            torch.rand(hidden, generator=g) + 0.5)


@pytest.mark.parametrize("fn", [baselines.eager_rms_norm, baselines.torch_rms_norm])
def test_rms_norm_baselines_match_the_reference(fn):
    x, _, w = _inputs()
    torch.testing.assert_close(fn(x, w, 1e-6), rms_norm_reference(x, w, 1e-6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", [baselines.eager_fused_add_rms_norm, baselines.torch_fused_add_rms_norm])
def test_add_rms_norm_baselines_match_the_reference(fn):
    x, r, w = _inputs()
    for got, want in zip(fn(x, r, w, 1e-6), fused_add_rms_norm_reference(x, r, w, 1e-6)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_ngpt_update_baseline_matches_the_reference():
    h, y, _ = _inputs()
    alpha = torch.full((h.shape[-1],), 0.25)
    torch.testing.assert_close(baselines.eager_ngpt_update(h, y, alpha), ngpt_update_reference(h, y, alpha),
                               rtol=1e-5, atol=1e-5)
