"""kernels/norm/ngpt.py == kernels/norm/reference.py (ngpt_update_reference) on any valid input.
Tolerance as in test_rmsnorm.py: at most twice the error of the same computation in the
input dtype, plus one rounding of the output."""
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from kernels.norm import ngpt_update, ngpt_update_reference
from tests.helpers.tolerance import DTYPES, assert_within_rule

pytestmark = pytest.mark.correctness


@given(rows=st.sampled_from([0, 1, 3, 17, 64]), hidden=st.one_of(st.integers(1, 300), st.sampled_from([1536, 4096, 16384])),
       dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**31 - 1), strided=st.booleans())
@example(rows=1, hidden=1, dtype="fp32", seed=0, strided=False)
@example(rows=5, hidden=1536, dtype="bf16", seed=1, strided=True)
def test_ngpt_update_matches_reference(device, rows, hidden, dtype, seed, strided):
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    width = hidden + (5 if strided else 0)
    h = torch.nn.functional.normalize(torch.randn(rows, width, generator=g)[:, :hidden], dim=-1).to(dt).to(device)
    y = (torch.randn(rows, width, generator=g)[:, :hidden] * 3).to(dt).to(device)
    alpha = (0.05 + 0.1 * torch.rand(hidden, generator=g)).to(dt).to(device)
    before = [t.clone() for t in (h, y, alpha)]
    out = ngpt_update(h, y, alpha, out=torch.full((rows, hidden), float("nan"), dtype=dt, device=device))
    assert all(torch.equal(a, b) for a, b in zip((h, y, alpha), before)), "inputs were modified"
    assert not torch.isnan(out).any()
    exact = ngpt_update_reference(h, y, alpha, compute_dtype=torch.float64)
    lowp = ngpt_update_reference(h, y, alpha, compute_dtype=dt)
    assert_within_rule(out, exact, lowp, dt)
    if rows:  # the result lies on the unit sphere
        norms = out.double().norm(dim=-1).cpu()
        assert torch.allclose(norms, torch.ones_like(norms), atol=hidden ** 0.5 * torch.finfo(dt).eps)


def test_rejects_bad_input(device):
    h = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match=r"alpha must have shape \(8,\)"):
        ngpt_update(h, h, torch.ones(7, device=device))
    with pytest.raises(ValueError, match="y must match h"):
        ngpt_update(h, h[:1], torch.ones(8, device=device))
    with pytest.raises(ValueError, match="hidden size 20000 is not supported"):
        ngpt_update(torch.randn(1, 20000, device=device), torch.randn(1, 20000, device=device), torch.ones(20000, device=device))
    for option in ({"BLOCK_N": 4}, {"SINGLE_PASS": False}):  # BLOCK_N 4 left columns 4-7 unwritten
        with pytest.raises(ValueError, match="follow from the row length"):
            ngpt_update(h, h, torch.ones(8, device=device), config=option)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["h", "y", "alpha"])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter, on NaN arithmetic
def test_nan_and_inf_follow_the_math(device, where, value):
    """A NaN or infinite input makes its row's norm NaN (or its alpha column's entries), and
    every entry divided by it NaN, as the float64 reference gives: never Inf or a finite value."""
    g = torch.Generator().manual_seed(0)
    h = torch.nn.functional.normalize(torch.randn(4, 96, generator=g), dim=-1).to(torch.float16).to(device)
    y = torch.randn(4, 96, generator=g).to(torch.float16).to(device)
    alpha = torch.full((96,), 0.05, dtype=torch.float16, device=device)
    {"h": h, "y": y, "alpha": alpha}[where].view(-1)[5] = value
    got = ngpt_update(h, y, alpha).double().cpu()
    exact = ngpt_update_reference(h, y, alpha, compute_dtype=torch.float64).cpu()
    assert torch.equal(torch.isnan(got), torch.isnan(exact)), f"NaN at {torch.isnan(got).sum()} places, float64 at {torch.isnan(exact).sum()}"
    assert torch.equal(got.isinf(), exact.isinf())


def test_out_overlap_and_eps_are_checked(device):
    """out= over h or y exactly is in place (each row is read whole before it is written);
    at an offset, or over alpha, it is refused. eps must be a finite number >= 0."""
    buf = torch.randn(9 * 64, device=device)
    h = torch.nn.functional.normalize(buf[: 8 * 64].view(8, 64), dim=-1)
    buf[: 8 * 64] = h.reshape(-1)
    h = buf[: 8 * 64].view(8, 64)
    y, alpha = torch.randn(8, 64, device=device), torch.full((64,), 0.05, device=device)
    want = ngpt_update(h.clone(), y, alpha)
    with pytest.raises(ValueError, match="out must not overlap h"):
        ngpt_update(h, y, alpha, out=buf[32: 32 + 8 * 64].view(8, 64))
    with pytest.raises(ValueError, match="out must not overlap alpha"):
        ngpt_update(h[:1], y[:1], alpha, out=alpha.view(1, 64))
    assert torch.equal(ngpt_update(h, y, alpha, out=h), want)
    for bad, err in ((-1.0, ValueError), (float("nan"), ValueError), ("1e-12", TypeError)):
        with pytest.raises(err, match="eps must be a"):
            ngpt_update(h, y, alpha, eps=bad)
