"""kernels/linear/fused.py == kernels/linear/reference.py on any valid input.

Tolerance, the same for every GEMM here: the kernel's largest error against float64 at
most twice that of the reference computed in the input dtype, plus one rounding of the
output. Where kernel and reference each round an intermediate input in its own place, the
doubled error has a floor of four standard deviations of that rounding's effect on the
output (assert_within_rule). Both lanes run fp16 and bf16 (on the CPU lane the kernels
upcast bf16 operands first: kernels/interpreter.py).
"""
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from kernels.norm.reference import rms_norm_reference
from kernels.linear import (gated_mlp, linear, gated_mlp_reference, lora_linear, lora_linear_reference, rmsnorm_linear,
                            rmsnorm_linear_reference)
from tests.helpers import tolerance
from tests.helpers.tolerance import HALF_DTYPES as DTYPES

pytestmark = pytest.mark.correctness


def randn(shape, dtype, device, g, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).to(dtype).to(device)


def assert_within_rule(got, exact, lowp, dtype, input_rounding_sd=0.0):
    """input_rounding_sd: where kernel and reference both round an intermediate input of
    the product once, each in its own place (RMSNorm+Linear: the kernel rounds x * g, the
    reference x * rstd * g), the standard deviation of the output error that rounding
    causes. Their errors are then independent draws of that size, and on a small output
    (one row, N = 1) the reference's can be lucky: seen on an H100, K = 36, N = 1, error
    3.2e-4 against a reference error of 4.3e-5, where the deviation is 1.7e-4. The floor
    is 4 deviations; with many outputs the max over them sets the rule as before."""
    assert got.dtype == dtype and got.shape == exact.shape
    assert not torch.isnan(got).any(), "NaN in the output"
    tolerance.assert_within_rule(got, exact, lowp, dtype, floor=4 * input_rounding_sd)


def rounding_sds(a, w, dtype):
    """Standard deviation, per output of a @ w, of the error from rounding each element of a
    once to dtype (relative error uniform in +-u, u = eps / 2): u / sqrt(3) *
    sqrt(sum_k (a_k w_k)^2)."""
    a64, w64 = a.double().cpu(), w.double().cpu()
    u = torch.finfo(dtype).eps / 2
    return (u / 3 ** 0.5) * ((a64 * a64) @ (w64 * w64)).sqrt()


def rounding_sd(a, w, dtype):
    """The largest of rounding_sds over the outputs."""
    if a.numel() == 0 or w.numel() == 0:
        return 0.0
    return rounding_sds(a, w, dtype).max().item()


dims = dict(m=st.integers(0, 20), k=st.integers(1, 400), n=st.integers(1, 150),
            splits=st.sampled_from([None, 1, 3]), dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**31 - 1))


@given(**dims)
@example(m=1, k=4096, n=64, splits=None, dtype="fp16", seed=0)   # decode row, K split
@example(m=17, k=129, n=65, splits=2, dtype="fp16", seed=1)      # every size off the block
@example(m=3, k=200, n=40, splits=2, dtype="bf16", seed=3)       # bf16: the interpreter's arithmetic on bits
@example(m=0, k=16, n=16, splits=None, dtype="fp16", seed=2)     # empty batch
@example(m=1, k=36, n=1, splits=None, dtype="fp16", seed=36)     # one output: the reference's error was lucky
def test_rmsnorm_linear_matches_reference(device, m, k, n, splits, dtype, seed):
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    x = randn((m, k), dt, device, g)
    gw = randn((k,), dt, device, g, 0.2) + 1
    w = randn((k, n), dt, device, g, k ** -0.5)
    before = [t.clone() for t in (x, gw, w)]
    y = rmsnorm_linear(x, gw, w, 1e-6, num_splits=splits)
    assert all(torch.equal(a, b) for a, b in zip((x, gw, w), before)), "inputs were modified"
    normed = rms_norm_reference(x, gw, 1e-6, torch.float64)
    assert_within_rule(y, rmsnorm_linear_reference(x, gw, w, 1e-6, torch.float64),
                       rmsnorm_linear_reference(x, gw, w, 1e-6, dt), dt, rounding_sd(normed, w, dt))


@pytest.mark.parametrize("x_scale,g_scale", [(400.0, 200.0), (1e-3, 1e-3)])
@pytest.mark.parametrize("splits", [None, 3])
def test_rmsnorm_linear_in_fp16_beyond_the_range_of_x_times_g(device, x_scale, g_scale, splits):
    """Decode rows multiply x by g before the product and apply rstd after it: in fp16 a
    row whose x g exceeds 65504 gave inf, then NaN (x 400, g 200: RMSNorm(x) g is ~200), and
    one whose x g falls below fp16's normal range lost its digits (x, g ~1e-3), where the
    normalized values are ordinary. Each row is now scaled by a power of two first."""
    dt = torch.float16
    g = torch.Generator().manual_seed(31)
    k, n = 256, 48
    x = (randn((2, k), torch.float32, "cpu", g) * x_scale).to(dt).to(device)
    gw = ((randn((k,), torch.float32, "cpu", g, 0.2) + 1) * g_scale).to(dt).to(device)
    w = randn((k, n), dt, device, g, k ** -0.5)
    y = rmsnorm_linear(x, gw, w, 1e-6, num_splits=splits)
    normed = rms_norm_reference(x, gw, 1e-6, torch.float64)
    assert_within_rule(y, rmsnorm_linear_reference(x, gw, w, 1e-6, torch.float64),
                       rmsnorm_linear_reference(x, gw, w, 1e-6, dt), dt, rounding_sd(normed, w, dt))


@pytest.mark.parametrize("first,last", [(1e-3, 400.0), (400.0, 1e-3)])
def test_rmsnorm_linear_in_fp16_over_a_row_of_small_and_large_values(device, first, last):
    """Half a row ~first, half ~last, in K blocks of 32: the row's scale changes between blocks."""
    dt, k, n = torch.float16, 256, 32
    g = torch.Generator().manual_seed(33)
    x = randn((2, k), torch.float32, "cpu", g)
    x[:, :k // 2] *= first
    x[:, k // 2:] *= last
    x = x.to(dt).to(device)
    gw = (randn((k,), torch.float32, "cpu", g, 0.2) + 1).mul(100.0).to(dt).to(device)
    w = randn((k, n), dt, device, g, k ** -0.5)
    y = rmsnorm_linear(x, gw, w, 1e-6, config={"block_k": 32})
    normed = rms_norm_reference(x, gw, 1e-6, torch.float64)
    assert_within_rule(y, rmsnorm_linear_reference(x, gw, w, 1e-6, torch.float64),
                       rmsnorm_linear_reference(x, gw, w, 1e-6, dt), dt, rounding_sd(normed, w, dt))


def test_rmsnorm_linear_nan_and_inf_in_a_row_stay_in_it(device):
    dt = torch.float16
    g = torch.Generator().manual_seed(32)
    x, w = randn((3, 64), dt, device, g), randn((64, 16), dt, device, g, 0.125)
    gw = randn((64,), dt, device, g, 0.2) + 1
    x[0, 5], x[2, 7] = float("nan"), float("inf")
    y = rmsnorm_linear(x, gw, w)
    exact = rmsnorm_linear_reference(x, gw, w, 1e-6, torch.float64)
    assert torch.isnan(y[0]).all() and torch.isnan(exact[0]).all()
    assert torch.isnan(y[2]).all() and torch.isnan(exact[2]).all()  # inf / rms(inf): NaN
    assert torch.isfinite(y[1]).all()


@given(**dims)
@example(m=1, k=4096, n=64, splits=None, dtype="fp16", seed=0)
@example(m=17, k=129, n=65, splits=2, dtype="fp16", seed=1)
@example(m=0, k=16, n=16, splits=None, dtype="fp16", seed=2)
@example(m=3, k=200, n=40, splits=2, dtype="bf16", seed=3)
def test_gated_mlp_matches_reference(device, m, k, n, splits, dtype, seed):
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    x = randn((m, k), dt, device, g)
    w1 = randn((k, n), dt, device, g, k ** -0.5)
    w3 = randn((k, n), dt, device, g, k ** -0.5)
    before = [t.clone() for t in (x, w1, w3)]
    y = gated_mlp(x, w1, w3, num_splits=splits)
    assert all(torch.equal(a, b) for a, b in zip((x, w1, w3), before)), "inputs were modified"
    assert_within_rule(y, gated_mlp_reference(x, w1, w3, torch.float64), gated_mlp_reference(x, w1, w3, dt), dt)


@given(m=st.integers(0, 20), k=st.integers(1, 300), n=st.integers(1, 130), rank=st.integers(1, 64),
       scale=st.sampled_from([0.5, 2.0]), splits=st.sampled_from([None, 1, 3]), dtype=st.sampled_from(list(DTYPES)),
       seed=st.integers(0, 2**31 - 1))
@example(m=1, k=4096, n=64, rank=16, scale=2.0, splits=None, dtype="fp16", seed=0)
@example(m=17, k=129, n=65, rank=64, scale=0.5, splits=2, dtype="fp16", seed=1)
@example(m=3, k=40, n=20, rank=1, scale=2.0, splits=None, dtype="fp16", seed=2)
@example(m=3, k=200, n=40, rank=8, scale=2.0, splits=2, dtype="bf16", seed=3)
def test_lora_linear_matches_reference(device, m, k, n, rank, scale, splits, dtype, seed):
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    x = randn((m, k), dt, device, g)
    w = randn((k, n), dt, device, g, k ** -0.5)
    a = randn((k, rank), dt, device, g, k ** -0.5)
    b = randn((rank, n), dt, device, g, rank ** -0.5)
    before = [t.clone() for t in (x, w, a, b)]
    y = lora_linear(x, w, a, b, scale, num_splits=splits)
    assert all(torch.equal(p, q) for p, q in zip((x, w, a, b), before)), "inputs were modified"
    assert_within_rule(y, lora_linear_reference(x, w, a, b, scale, torch.float64),
                       lora_linear_reference(x, w, a, b, scale, dt), dt)


def test_lora_rejects_bad_rank_and_shapes(device):
    x = torch.randn(2, 64, device=device, dtype=torch.float16)
    w = torch.randn(64, 32, device=device, dtype=torch.float16)
    with pytest.raises(ValueError, match="LoRA rank 65 is not supported"):
        lora_linear(x, w, torch.randn(64, 65, device=device, dtype=torch.float16), torch.randn(65, 32, device=device, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"b must have shape \(rank=8, N=32\)"):
        lora_linear(x, w, torch.randn(64, 8, device=device, dtype=torch.float16), torch.randn(8, 31, device=device, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"a must have shape \(K=64, rank\)"):
        lora_linear(x, w, torch.randn(63, 8, device=device, dtype=torch.float16), torch.randn(8, 32, device=device, dtype=torch.float16))


@given(**dims)
@example(m=1, k=4096, n=64, splits=None, dtype="fp16", seed=0)
@example(m=3, k=200, n=40, splits=2, dtype="bf16", seed=3)
def test_linear_matches_matmul(device, m, k, n, splits, dtype, seed):
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    x, w = randn((m, k), dt, device, g), randn((k, n), dt, device, g, k ** -0.5)
    exact = x.double().cpu() @ w.double().cpu()
    lowp = (x.cpu().float() @ w.cpu().float()).to(dt)  # one rounding of an fp32-accumulated product
    assert_within_rule(linear(x, w, num_splits=splits), exact, lowp, dt)


@given(m=st.integers(0, 20), k=st.integers(1, 300), n=st.integers(1, 130), splits=st.sampled_from([None, 1, 3]),
       fixup=st.sampled_from(["auto", "kernel", "merge"]), lora=st.booleans(), dtype=st.sampled_from(list(DTYPES)),
       seed=st.integers(0, 2**31 - 1))
@example(m=1, k=4096, n=64, splits=None, fixup="auto", lora=False, dtype="fp16", seed=0)
@example(m=17, k=129, n=65, splits=3, fixup="merge", lora=True, dtype="fp16", seed=1)
@example(m=3, k=200, n=40, splits=2, fixup="kernel", lora=True, dtype="bf16", seed=3)
def test_residual_is_added_before_the_one_rounding(device, m, k, n, splits, fixup, lora, dtype, seed):
    """linear(x, w, residual=r) = r + x @ w (and lora_linear likewise) on every path of the
    split (whole K, in-kernel fix-up, merge kernel); the unfused model rounds x @ w first."""
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    x, w, r = randn((m, k), dt, device, g), randn((k, n), dt, device, g, k ** -0.5), randn((m, n), dt, device, g, 4.0)
    a, b = randn((k, 8), dt, device, g, k ** -0.5), randn((8, n), dt, device, g, 0.3)
    cfg = dict(fixup=fixup)
    if lora:
        y = lora_linear(x, w, a, b, 0.5, residual=r, num_splits=splits, config=cfg)
        exact = lora_linear_reference(x, w, a, b, 0.5, torch.float64).cpu() + r.double().cpu()
        lowp = (lora_linear_reference(x, w, a, b, 0.5, dt) + r).cpu()
    else:
        y = linear(x, w, residual=r, num_splits=splits, config=cfg)
        exact = x.double().cpu() @ w.double().cpu() + r.double().cpu()
        lowp = ((x.cpu().float() @ w.cpu().float()).to(dt) + r.cpu()).to(dt)
    assert_within_rule(y, exact, lowp, dt)


def test_residual_must_match_the_output(device):
    x = torch.randn(2, 64, device=device, dtype=torch.float16)
    w = torch.randn(64, 32, device=device, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"residual must have the output's shape \(2, 32\)"):
        linear(x, w, residual=torch.zeros(2, 64, device=device, dtype=torch.float16))
    with pytest.raises(TypeError, match="residual has dtype bfloat16; it must match x's float16"):
        linear(x, w, residual=torch.zeros(2, 32, device=device, dtype=torch.bfloat16))
    r = torch.randn(32, 2, device=device, dtype=torch.float16).t()  # strided along N: read as given
    assert torch.allclose(linear(x, w, residual=r).float(), (r.float() + (x.float() @ w.float())), rtol=1e-2, atol=1e-1)


@pytest.mark.parametrize("option,message", [
    ({"waves": float("nan")}, "waves must be a positive finite number, got nan"),  # math's errors, unnamed, before
    ({"waves": float("inf")}, "waves must be a positive finite number, got inf"),
    ({"waves": "2"}, "waves must be a positive finite number, got '2'"),
    ({"fixup_rows": None}, "fixup_rows must be an int"),
    ({"num_warps": 3}, "num_warps must be a power of two"),
    ({"num_stages": 0}, "num_stages must be an int from 1 to 8"),
])
def test_launch_options_are_checked_and_named(device, option, message):
    x, w = torch.randn(2, 64, device=device, dtype=torch.float16), torch.randn(64, 24, device=device, dtype=torch.float16)
    with pytest.raises(ValueError, match=message):
        linear(x, w, config=option)


@given(m=st.integers(1, 70), k8=st.integers(1, 50), n8=st.integers(1, 20), splits=st.sampled_from([None, 1, 3]),
       op=st.sampled_from(["rmsnorm_linear", "gated_mlp", "lora_linear"]), seed=st.integers(0, 2**31 - 1))
@example(m=17, k8=25, n8=9, splits=2, op="rmsnorm_linear", seed=0)  # K and N off the blocks, zero-filled by TMA
def test_tma_reads_match_reference(device, m, k8, n8, splits, op, seed):
    """The path that reads x and the weights through TMA descriptors (Hopper's default when
    the strides allow it) obeys the same rule; forced here so the CPU lane runs it too.
    TMA needs row strides in multiples of 16 bytes: K and N multiples of 8 (fp16)."""
    dt, k, n = torch.float16, 8 * k8, 8 * n8
    g = torch.Generator().manual_seed(seed)
    x, w1, w3 = randn((m, k), dt, device, g), randn((k, n), dt, device, g, k ** -0.5), randn((k, n), dt, device, g, k ** -0.5)
    gw = randn((k,), dt, device, g, 0.2) + 1
    a, b = randn((k, 16), dt, device, g, k ** -0.5), randn((16, n), dt, device, g, 0.3)
    cfg = dict(tma=True, block_n=32, block_k=32)
    sd = 0.0
    if op == "rmsnorm_linear":
        sd = rounding_sd(rms_norm_reference(x, gw, 1e-6, torch.float64), w1, dt)
        y, ref = rmsnorm_linear(x, gw, w1, 1e-6, num_splits=splits, config=cfg), lambda d: rmsnorm_linear_reference(x, gw, w1, 1e-6, d)
    elif op == "gated_mlp":
        y, ref = gated_mlp(x, w1, w3, num_splits=splits, config=cfg), lambda d: gated_mlp_reference(x, w1, w3, d)
    else:
        y, ref = lora_linear(x, w1, a, b, 0.5, num_splits=splits, config=cfg), lambda d: lora_linear_reference(x, w1, a, b, 0.5, d)
    assert_within_rule(y, ref(torch.float64), ref(dt), dt, sd)


def test_tma_refuses_misaligned_rows_and_auto_falls_back(device):
    g = torch.Generator().manual_seed(5)
    x = randn((3, 70), torch.float16, device, g)[:, :64]  # rows 140 bytes apart: not TMA-readable
    w = randn((64, 32), torch.float16, device, g, 0.125)
    with pytest.raises(ValueError, match="tma=True needs .* multiples of 16 bytes"):
        linear(x, w, config={"tma": True})
    exact = x.double().cpu() @ w.double().cpu()
    assert_within_rule(linear(x, w), exact, (x.cpu().float() @ w.cpu().float()).to(torch.float16), torch.float16)
    with pytest.raises(ValueError, match="tma must be 'auto', True or False"):
        linear(x, w, config={"tma": "yes"})


def test_leading_dims_and_strided_rows(device):
    g = torch.Generator().manual_seed(3)
    x = randn((2, 3, 70), torch.float16, device, g)[..., :64]  # rows strided by 70
    w1, w3 = randn((64, 32), torch.float16, device, g, 0.125), randn((64, 32), torch.float16, device, g, 0.125)
    y = gated_mlp(x, w1, w3)
    assert y.shape == (2, 3, 32)
    assert torch.allclose(y.double().cpu(), gated_mlp_reference(x, w1, w3, torch.float64).cpu(), atol=2e-3, rtol=1e-2)


def test_rejects_bad_input(device):
    x = torch.randn(2, 64, device=device, dtype=torch.float16)
    w = torch.randn(64, 32, device=device, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"w must have shape \(K=64, N\)"):
        rmsnorm_linear(x, torch.ones(64, device=device, dtype=torch.float16), w[:32])
    with pytest.raises(ValueError, match=r"norm_weight must have shape \(64,\)"):
        rmsnorm_linear(x, torch.ones(63, device=device, dtype=torch.float16), w)
    with pytest.raises(TypeError, match="x has dtype float32"):
        gated_mlp(x.float(), w, w)
    with pytest.raises(TypeError, match="w3 dtype"):
        gated_mlp(x, w, w.to(torch.bfloat16))
    with pytest.raises(ValueError, match="weights disagree on N"):
        gated_mlp(x, w, w[:, :16])
    with pytest.raises(ValueError, match="unit stride along N"):
        gated_mlp(x, w.t().contiguous().t(), w)
    with pytest.raises(TypeError, match="norm_weight has dtype float32"):
        rmsnorm_linear(x, torch.ones(64, device=device, dtype=torch.float32), w)
    with pytest.raises(TypeError, match="norm_weight has dtype bfloat16; it must match x's float16"):
        rmsnorm_linear(x, torch.ones(64, device=device, dtype=torch.bfloat16), w)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        rmsnorm_linear(x, torch.ones(64, device=device, dtype=torch.float16), w, eps=-1.0)


@pytest.mark.parametrize("op", ["rmsnorm_linear", "gated_mlp", "lora_linear"])
def test_split_fixup_in_kernel_equals_merge_kernel_and_repeats(device, op):
    """The in-kernel fix-up (last program of a tile sums the partials) and the separate merge
    kernel add the same fp32 partials; the arrival counters are left at zero, so calling
    again (with a different number of splits) is right too."""
    g = torch.Generator().manual_seed(4)
    m, k, n = 3, 512, 200  # several N tiles, every split count below reaches them
    x = randn((m, k), torch.float16, device, g)
    w1, w3 = randn((k, n), torch.float16, device, g, k ** -0.5), randn((k, n), torch.float16, device, g, k ** -0.5)
    gw = randn((k,), torch.float16, device, g, 0.2) + 1
    a, b = randn((k, 8), torch.float16, device, g, k ** -0.5), randn((8, n), torch.float16, device, g, 0.3)
    call = {"rmsnorm_linear": lambda **kw: rmsnorm_linear(x, gw, w1, **kw),
            "gated_mlp": lambda **kw: gated_mlp(x, w1, w3, **kw),
            "lora_linear": lambda **kw: lora_linear(x, w1, a, b, 0.5, **kw)}[op]
    cfg = dict(block_n=64, block_k=32)
    for splits in (4, 3, 4, 2):
        in_kernel = call(num_splits=splits, config=dict(cfg, fixup="kernel"))
        merged = call(num_splits=splits, config=dict(cfg, fixup="merge"))
        single = call(num_splits=1, config=cfg)
        assert torch.allclose(in_kernel.float(), merged.float(), rtol=1e-3, atol=1e-3), f"splits={splits}"
        assert torch.allclose(in_kernel.float(), single.float(), rtol=2e-2, atol=2e-2), f"splits={splits}"
    with pytest.raises(ValueError, match="fixup must be 'auto', 'kernel' or 'merge'"):
        call(num_splits=2, config=dict(cfg, fixup="atomic"))


@pytest.mark.gpu
def test_split_k_in_a_cuda_graph_matches_eager_on_every_replay(device):
    """Captured split-K launches (in-kernel merge: arrival counters) give the eager answer
    on every replay, for inputs changed between replays, and eager calls after still do."""
    if device != "cuda":
        pytest.skip("needs a CUDA GPU")
    g = torch.Generator().manual_seed(5)
    x = randn((1, 4096), torch.bfloat16, device, g)
    w1, w3 = randn((4096, 1024), torch.bfloat16, device, g, 4096 ** -0.5), randn((4096, 1024), torch.bfloat16, device, g, 4096 ** -0.5)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        gated_mlp(x, w1, w3), linear(x, w1)  # warm up off the capture stream, as torch advises
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y_mlp, y_lin = gated_mlp(x, w1, w3), linear(x, w1)
    for _ in range(3):
        x.copy_(randn((1, 4096), torch.bfloat16, device, g))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y_mlp, gated_mlp(x, w1, w3)) and torch.equal(y_lin, linear(x, w1))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter, on NaN arithmetic
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["x", "w", "a", "b"])
def test_lora_nan_and_inf_follow_the_math(device, where, value):
    """An infinite x times A's zero padding past the rank must not add NaN to every output:
    NaN and infinities where the float64 reference has them."""
    g = torch.Generator().manual_seed(6)
    x, w = randn((3, 64), torch.float16, device, g), randn((64, 48), torch.float16, device, g, 0.125)
    # rank 1: an infinite x gives +-inf outputs where x W and (x A) B agree in sign
    a, b = randn((64, 1), torch.float16, device, g, 0.125), randn((1, 48), torch.float16, device, g, 0.3)
    {"x": x, "w": w, "a": a, "b": b}[where].view(-1)[5] = value
    got = lora_linear(x, w, a, b, 0.5).double().cpu()
    exact = lora_linear_reference(x, w, a, b, 0.5, torch.float64).cpu()
    assert torch.equal(got.isnan(), exact.isnan()), f"NaN at {got.isnan().sum()} places, float64 at {exact.isnan().sum()}"
    assert torch.equal(got == float("inf"), exact == float("inf")) and torch.equal(got == -float("inf"), exact == -float("inf"))


@pytest.mark.parametrize("op", ["linear", "rmsnorm_linear", "gated_mlp", "lora_linear"])
def test_num_splits_is_checked(device, op):
    """num_splits=0 or a negative count used to become 1 silently; a bool or float is refused."""
    x = torch.randn(2, 64, device=device, dtype=torch.float16)
    w = torch.randn(64, 32, device=device, dtype=torch.float16)
    gw = torch.ones(64, device=device, dtype=torch.float16)
    a, b = torch.randn(64, 4, device=device, dtype=torch.float16), torch.randn(4, 32, device=device, dtype=torch.float16)
    call = {"linear": lambda s: linear(x, w, num_splits=s), "rmsnorm_linear": lambda s: rmsnorm_linear(x, gw, w, num_splits=s),
            "gated_mlp": lambda s: gated_mlp(x, w, w, num_splits=s), "lora_linear": lambda s: lora_linear(x, w, a, b, num_splits=s)}[op]
    for bad in (0, -2):
        with pytest.raises(ValueError, match="num_splits must be an int >= 1"):
            call(bad)
    for bad in (True, 2.0, "2"):
        with pytest.raises(TypeError, match="num_splits must be an int"):
            call(bad)


@given(m=st.integers(129, 300), k8=st.integers(1, 24), n8=st.integers(1, 24), group_m=st.sampled_from([1, 2, 3, 8]),
       tma=st.booleans(), persistent=st.booleans(),
       op=st.sampled_from(["rmsnorm_linear", "gated_mlp", "lora_linear", "linear"]), seed=st.integers(0, 2**31 - 1))
@example(m=150, k8=9, n8=9, group_m=3, tma=False, persistent=False, op="gated_mlp", seed=0)  # 5 row tiles: groups of 3 and 2
@example(m=300, k8=8, n8=17, group_m=8, tma=True, persistent=False, op="rmsnorm_linear", seed=1)  # one partial group, N off the block
@example(m=300, k8=8, n8=17, group_m=3, tma=True, persistent=True, op="gated_mlp", seed=2)  # 30 tiles walked by a few programs
@example(m=257, k8=3, n8=5, group_m=2, tma=True, persistent=True, op="linear", seed=3)  # K and N off the block, a 1-row tile
def test_prompt_rows_grouped_tiles_match_reference(device, m, k8, n8, group_m, tma, persistent, op, seed):
    """A prompt's rows (LARGE_ROWS and more): one program per output tile, or (persistent,
    through TMA) one per SM walking the tiles; row tiles in groups over the same weight
    columns (group_m), no K split; every tile is computed once whatever the group and tile
    counts. Small tiles here keep the interpreter quick; the shipped 128 x 128 tiles are the
    next test."""
    dt, k, n = torch.float16, 8 * k8, 8 * n8
    g = torch.Generator().manual_seed(seed)
    x, w1, w3 = randn((m, k), dt, device, g), randn((k, n), dt, device, g, k ** -0.5), randn((k, n), dt, device, g, k ** -0.5)
    gw = randn((k,), dt, device, g, 0.2) + 1
    a, b = randn((k, 16), dt, device, g, k ** -0.5), randn((16, n), dt, device, g, 0.3)
    res = randn((m, n), dt, device, g)
    cfg = dict(tma=tma, block_m=32, block_n=32, block_k=32, group_m=group_m, persistent=persistent)
    sd = 0.0
    if op == "rmsnorm_linear":
        sd = rounding_sd(rms_norm_reference(x, gw, 1e-6, torch.float64), w1, dt)
        y, ref = rmsnorm_linear(x, gw, w1, 1e-6, config=cfg), lambda d: rmsnorm_linear_reference(x, gw, w1, 1e-6, d)
    elif op == "gated_mlp":
        y, ref = gated_mlp(x, w1, w3, config=cfg), lambda d: gated_mlp_reference(x, w1, w3, d)
    elif op == "lora_linear":
        y = lora_linear(x, w1, a, b, 0.5, residual=res, config=cfg)
        ref = lambda d: (res.to(d) + lora_linear_reference(x, w1, a, b, 0.5, d).to(d)).to(dt)
    else:
        y, ref = linear(x, w1, residual=res, config=cfg), lambda d: (res.to(d) + x.to(d) @ w1.to(d)).to(dt)
    assert_within_rule(y, ref(torch.float64), ref(dt), dt, sd)


@pytest.mark.parametrize("op", ["rmsnorm_linear", "gated_mlp"])
def test_prompt_rows_shipped_tiles_match_reference(device, op):
    """The default launch for a prompt (128 x 128 tiles, 8 warps, groups of 8), at 300 rows:
    three row tiles, the last partial."""
    dt, m, k, n = torch.float16, 300, 64, 136
    g = torch.Generator().manual_seed(5)
    x, w1, w3 = randn((m, k), dt, device, g), randn((k, n), dt, device, g, k ** -0.5), randn((k, n), dt, device, g, k ** -0.5)
    gw = randn((k,), dt, device, g, 0.2) + 1
    if op == "rmsnorm_linear":
        sd = rounding_sd(rms_norm_reference(x, gw, 1e-6, torch.float64), w1, dt)
        y, ref = rmsnorm_linear(x, gw, w1, 1e-6), lambda d: rmsnorm_linear_reference(x, gw, w1, 1e-6, d)
    else:
        sd, y, ref = 0.0, gated_mlp(x, w1, w3), lambda d: gated_mlp_reference(x, w1, w3, d)
    assert_within_rule(y, ref(torch.float64), ref(dt), dt, sd)


def test_prompt_rows_are_normalized_before_the_product(device):
    """For prompt rows the tensor cores take x's tile as TMA stored it, so rmsnorm_linear
    normalizes first: bit for bit rms_norm, then linear. Decode rows scale inside the loop."""
    from kernels.norm.rmsnorm import rms_norm

    dt, k, n = torch.bfloat16, 64, 48
    g = torch.Generator().manual_seed(8)
    x, w = randn((300, k), dt, device, g), randn((k, n), dt, device, g, k ** -0.5)
    gw = randn((k,), dt, device, g, 0.2) + 1
    assert torch.equal(rmsnorm_linear(x, gw, w, 1e-5), linear(rms_norm(x, gw, 1e-5), w))
    assert not torch.equal(rmsnorm_linear(x[:8], gw, w, 1e-5), linear(rms_norm(x[:8], gw, 1e-5), w))


@pytest.mark.parametrize("persistent", [False, True])
def test_a_strided_residual_is_read_as_rows(device, persistent):
    """A residual of any strides (here a transposed view: unit stride along the rows) adds
    the right element to each output, on both prompt-row launches (the persistent one read
    it as if contiguous)."""
    dt, m, k, n = torch.float16, 300, 64, 48
    g = torch.Generator().manual_seed(9)
    x, w = randn((m, k), dt, device, g), randn((k, n), dt, device, g, k ** -0.5)
    res = randn((n, m), dt, device, g).t()
    cfg = dict(tma=True, persistent=persistent, block_m=32, block_n=32, block_k=32, group_m=2)
    y = linear(x, w, residual=res, config=cfg)
    ref = lambda d: (res.to(d) + x.to(d) @ w.to(d)).to(dt)
    assert_within_rule(y, ref(torch.float64), ref(dt), dt, 0.0)


def test_persistent_must_be_a_bool(device):
    x, w = torch.randn(300, 64, device=device, dtype=torch.float16), torch.randn(64, 32, device=device, dtype=torch.float16)
    for bad in (1, "yes", None):
        with pytest.raises(ValueError, match="persistent must be True or False"):
            linear(x, w, config=dict(persistent=bad))


def test_prompt_rows_from_4096_share_one_launch_key(device):
    """Rows are bucketed to powers of two up to 4096 and no further: from there any tile fills
    the GPU several times over, so an 8K-token prompt takes the launch tuned at 4096 rows."""
    from kernels import tuning

    g = torch.Generator().manual_seed(6)
    w = randn((16, 16), torch.float16, device, g)
    keys = {}
    for m in (300, 4096, 5000, 8192):
        with tuning.recording() as seen:
            linear(randn((m, 16), torch.float16, device, g), w)
        keys[m] = [k["rows"] for space, k in seen if space.kernel == "fused_linear"]
    assert keys == {300: [512], 4096: [4096], 5000: [4096], 8192: [4096]}
