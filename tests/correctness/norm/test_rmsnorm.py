"""kernels/norm/rmsnorm.py == kernels/norm/reference.py, on any valid input.

Tolerance: the kernel's largest error against the float64 reference may be at
most twice that of the same computation done in the input dtype with PyTorch, plus one
rounding step of the output dtype at the output's largest magnitude (the final cast).
"""
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from harness.lanes import interpreting
from kernels.norm import fused_add_rms_norm, fused_add_rms_norm_reference, rms_norm, rms_norm_reference
from tests.helpers.tolerance import DTYPES, assert_within_rule

pytestmark = pytest.mark.correctness


def make(shape, dtype, device, seed, scale=1.0, layout="contiguous"):
    """Random tensor of `shape` from `seed`; 'strided' gives rows with a padded row stride,
    'transposed-batch' a 3-D tensor whose leading dims cannot be merged into a view."""
    g = torch.Generator().manual_seed(seed)
    if layout == "strided":
        full = torch.randn(*shape[:-1], shape[-1] + 7, generator=g) * scale
        return full.to(dtype).to(device)[..., : shape[-1]]
    if layout == "transposed-batch" and len(shape) == 3:
        t = torch.randn(shape[1], shape[0], shape[2], generator=g) * scale
        return t.to(dtype).to(device).transpose(0, 1)
    return (torch.randn(*shape, generator=g) * scale).to(dtype).to(device)


def assert_close_to_reference(got, exact, lowp, dtype):
    """got (kernel) and lowp (PyTorch in the input dtype) against exact (float64)."""
    assert got.dtype == dtype
    assert not torch.isnan(got).any(), "output has NaN: an element was not written"
    assert_within_rule(got, exact, lowp, dtype)


def expected_sum(x, r, exact_h, dtype):
    """x + r rounded to dtype. Triton's interpreter (CPU lane) converts float32 to bfloat16
    by truncation, where the GPU rounds to nearest even: on that lane only, expect the
    truncated sum, exactly."""
    if not (interpreting() and dtype == torch.bfloat16):
        return exact_h
    bits = (x.float() + r.float()).view(torch.int32) & -65536  # keep the top 16 bits
    return bits.view(torch.float32).to(torch.bfloat16)


shapes = st.tuples(
    st.sampled_from([(), (0,), (1,), (3,), (17,), (2, 5)]),  # leading dims; (0,) = empty batch
    st.one_of(st.integers(1, 300), st.sampled_from([1024, 4096, 5120, 8192, 16384]), st.integers(16385, 20000)),
).map(lambda t: t[0] + (t[1],))


@given(shape=shapes, dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([1e-3, 1.0, 50.0]), eps=st.sampled_from([1e-6, 1e-5]),
       layout=st.sampled_from(["contiguous", "strided", "transposed-batch"]))
@example(shape=(1, 1), dtype="fp32", seed=0, scale=1.0, eps=1e-6, layout="contiguous")
@example(shape=(3, 4097), dtype="bf16", seed=1, scale=1.0, eps=1e-6, layout="strided")
@example(shape=(0, 4096), dtype="fp16", seed=2, scale=1.0, eps=1e-6, layout="contiguous")
@example(shape=(2, 3, 40000), dtype="bf16", seed=3, scale=1.0, eps=1e-6, layout="transposed-batch")
def test_rms_norm_matches_reference(device, shape, dtype, seed, scale, eps, layout):
    dt = DTYPES[dtype]
    x = make(shape, dt, device, seed, scale, layout)
    w = make(shape[-1:], dt, device, seed + 1)
    x_before, w_before = x.clone(), w.clone()
    out = torch.full(shape, float("nan"), dtype=dt, device=device)  # poison

    y = rms_norm(x, w, eps, out=out)

    assert y is out
    assert torch.equal(x, x_before) and torch.equal(w, w_before), "inputs were modified"
    exact = rms_norm_reference(x, w, eps, compute_dtype=torch.float64)
    lowp = rms_norm_reference(x, w, eps, compute_dtype=dt)
    assert_close_to_reference(y, exact, lowp, dt)
    # The default path (no out=) returns the same values.
    assert torch.equal(rms_norm(x, w, eps), y)


@given(shape=shapes, dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**31 - 1),
       layout=st.sampled_from(["contiguous", "strided"]))
@example(shape=(1, 1), dtype="bf16", seed=0, layout="contiguous")
@example(shape=(5, 20000), dtype="fp16", seed=4, layout="strided")
@example(shape=(0, 64), dtype="fp32", seed=5, layout="contiguous")
def test_fused_add_rms_norm_matches_reference(device, shape, dtype, seed, layout):
    dt = DTYPES[dtype]
    x = make(shape, dt, device, seed, layout=layout)
    r = make(shape, dt, device, seed + 1, scale=4.0, layout=layout)
    w = make(shape[-1:], dt, device, seed + 2)
    before = [t.clone() for t in (x, r, w)]
    out = torch.full(shape, float("nan"), dtype=dt, device=device)
    h_out = torch.full(shape, float("nan"), dtype=dt, device=device)

    y, h = fused_add_rms_norm(x, r, w, 1e-6, out=out, residual_out=h_out)

    assert y is out and h is h_out
    assert all(torch.equal(a, b) for a, b in zip((x, r, w), before)), "inputs were modified"
    exact_y, exact_h = fused_add_rms_norm_reference(x, r, w, 1e-6, compute_dtype=torch.float64)
    lowp_y, _ = fused_add_rms_norm_reference(x, r, w, 1e-6, compute_dtype=dt)
    # h is x + r rounded once to the dtype: exactly what the unfused model stores.
    assert torch.equal(h.cpu(), expected_sum(x, r, exact_h, dt).cpu())
    assert_close_to_reference(y, exact_y, lowp_y, dt)


def test_rows_are_independent(device):
    """A row's output depends on that row alone (no mixing across rows or programs)."""
    x = make((64, 1000), torch.float32, device, 7)
    w = make((1000,), torch.float32, device, 8)
    full = rms_norm(x, w)
    for i in (0, 31, 63):
        assert torch.allclose(rms_norm(x[i : i + 1], w), full[i : i + 1], rtol=0, atol=1e-6)


def test_scale_invariance(device):
    """RMSNorm(c x) == RMSNorm(x) for c > 0 when eps is negligible: catches a wrong mean."""
    x = make((8, 777), torch.float32, device, 9)
    w = make((777,), torch.float32, device, 10)
    assert torch.allclose(rms_norm(x * 8.0, w, eps=0.0), rms_norm(x, w, eps=0.0), rtol=1e-5, atol=1e-6)


# ---- bad input: a clear error naming the problem -------------------------------------

def test_rejects_integer_dtype(device):
    x = torch.ones(2, 8, dtype=torch.int32, device=device)
    with pytest.raises(TypeError, match="x has dtype int32"):
        rms_norm(x, torch.ones(8, device=device))


def test_rejects_mismatched_weight(device):
    x = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        rms_norm(x, torch.ones(9, device=device))
    with pytest.raises(TypeError, match="weight dtype .* must match x dtype"):
        rms_norm(x, torch.ones(8, device=device, dtype=torch.float16))


def test_rejects_mismatched_residual(device):
    x = torch.randn(2, 8, device=device)
    w = torch.ones(8, device=device)
    with pytest.raises(ValueError, match="residual shape"):
        fused_add_rms_norm(x, torch.randn(3, 8, device=device), w)
    with pytest.raises(TypeError, match="residual dtype"):
        fused_add_rms_norm(x, torch.randn(2, 8, device=device, dtype=torch.bfloat16), w)
    r = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="must not overlap"):
        fused_add_rms_norm(x, r, w, residual_out=r)


def test_rejects_empty_hidden_and_bad_out(device):
    with pytest.raises(ValueError, match="hidden size 0"):
        rms_norm(torch.randn(2, 0, device=device), torch.ones(0, device=device))
    x = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="out must have shape"):
        rms_norm(x, torch.ones(8, device=device), out=torch.empty(2, 9, device=device))


@pytest.mark.parametrize("option", [{"BLOCK_N": 32}, {"SINGLE_PASS": False}, {"BLOCK_N": 100}])
def test_the_row_length_options_are_refused(device, option):
    """BLOCK_N 32 on rows of 100 left columns unwritten (an error of 5.6, 7.6e35 in the
    residual add's h); BLOCK_N 100 failed inside the kernel (not a power of two)."""
    x = torch.randn(3, 100, device=device, dtype=torch.float16)
    w = torch.ones(100, device=device, dtype=torch.float16)
    with pytest.raises(ValueError, match="follow from the row length"):
        rms_norm(x, w, config=option)
    with pytest.raises(ValueError, match="follow from the row length"):
        fused_add_rms_norm(x, x.clone(), w, config=option)


@pytest.mark.gpu
def test_rejects_cpu_tensor_on_gpu_lane():
    with pytest.raises(ValueError, match="x is on cpu; the Triton kernels need CUDA tensors"):
        rms_norm(torch.randn(2, 8), torch.ones(8))
    with pytest.raises(ValueError, match="one device"):
        rms_norm(torch.randn(2, 8, device="cuda"), torch.ones(8))



def test_out_overlapping_an_input_is_refused(device):
    """out= sharing memory with an input at an offset gave wrong answers (rows read after
    another program had written over them): refused. rms_norm's out=x exactly works in place."""
    buf = torch.randn(65 * 64, device=device)
    x, w = buf[: 64 * 64].view(64, 64), torch.randn(64, device=device)
    shifted = buf[32: 32 + 64 * 64].view(64, 64)  # half a row past x
    want = rms_norm(x.clone(), w)
    with pytest.raises(ValueError, match="out must not overlap x"):
        rms_norm(x, w, out=shifted)
    with pytest.raises(ValueError, match="out must not overlap weight"):
        rms_norm(x[:1], w, out=w.view(1, 64))
    y = rms_norm(x, w, out=x)
    assert y is x and torch.equal(y, want)

    x = torch.randn(64, 64, device=device)
    r = torch.randn(64, 64, device=device)
    with pytest.raises(ValueError, match="out must not overlap x"):
        fused_add_rms_norm(x, r, w, out=x)  # out of place only: wide rows are read twice
    with pytest.raises(ValueError, match="residual_out must not overlap residual"):
        fused_add_rms_norm(x, r, w, residual_out=r)
    buf = torch.randn(65 * 64, device=device)
    with pytest.raises(ValueError, match="out must not overlap residual"):
        fused_add_rms_norm(x, buf[: 64 * 64].view(64, 64), w, out=buf[32: 32 + 64 * 64].view(64, 64))
    outs = torch.empty(2 * 64 * 64 - 1, device=device)
    with pytest.raises(ValueError, match="residual_out must not overlap out"):
        fused_add_rms_norm(x, r, w, out=outs[: 64 * 64].view(64, 64), residual_out=outs[64 * 64 - 1:].view(64, 64))
