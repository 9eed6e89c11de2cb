"""kernels/quant/wo_matmul.py (and its paths, wo_gemv.py, wo_mma.py, wo_dequant.py) against
x @ dequant(W)^T in float64 (kernels/quant/reference.py).

Accuracy by SQNR. Two floors per case:
- against the exact product of the stored format: the kernel's noise may be at most twice
  (3 dB) that of rounding the exact answer once to the output dtype. The kernel
  accumulates in fp32, so output rounding dominates.
- against the unquantized weight (the recipe's own error, Gaussian weights and inputs):
  RECIPE_FLOOR_DB, set ~1.5 dB under what round-to-nearest gives with 512+ outputs (measured on
  the CPU lane: int8 42 dB; int4 g32 22, g64 21, g128 20, g256 19).
Both lanes draw fp16 and bf16: under the interpreter the kernels compute bf16 operands as
fp32 (kernels.interpreter.exact_operand) and round to bf16 to nearest (kernels.quant.rounding).
"""
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from kernels.quant import (dequantize, quantize_int4_weight, quantize_int4_weight_hqq, quantize_int8_weight, sqnr_db,
                           wo_matmul, wo_matmul_reference)
from kernels.platform import interpreting
from kernels.quant.wo_matmul import DEQUANT_MIN_ROWS, dequantize_weight, gemv_takes
from tests.helpers.tolerance import HALF_DTYPES as DTYPES

pytestmark = pytest.mark.correctness

RECIPES = ["int8wo", "int4wo-32", "int4wo-64", "int4wo-128", "int4wo-256", "int4wo-128-hqq"]
RECIPE_FLOOR_DB = {"int8wo": 40.0, "int4wo-32": 20.0, "int4wo-64": 19.0, "int4wo-128": 18.0, "int4wo-256": 17.0,
                   "int4wo-128-hqq": 18.0}


def quantize(recipe, w, dtype):
    if recipe == "int8wo":
        return quantize_int8_weight(w, dtype)
    group = int(recipe.split("-")[1])
    return (quantize_int4_weight_hqq if recipe.endswith("hqq") else quantize_int4_weight)(w, group, dtype)


def rounds_weights(qw, m, n):
    """Whether wo_matmul's default for m rows rounds each weight to x's dtype before the
    GEMM: the dequant path (from DEQUANT_MIN_ROWS rows), and int4's tensor-core kernel
    (2 rows and more, or one row of a width the gemv path does not take). The one-row gemv
    and int8's tensor-core kernel stay exact in the weights."""
    return m >= DEQUANT_MIN_ROWS[qw.bits] or (qw.bits == 4 and not (m == 1 and gemv_takes(n, 0, 4)))


@given(recipe=st.sampled_from(RECIPES), m=st.integers(1, 80), groups=st.integers(1, 4), n=st.integers(1, 300),
       splits=st.sampled_from([None, 1, 3]), dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**31 - 1))
@example(recipe="int4wo-128", m=1, groups=16, n=256, splits=None, dtype="fp16", seed=0)  # decode, K split
@example(recipe="int8wo", m=17, groups=3, n=129, splits=2, dtype="fp16", seed=1)
@example(recipe="int4wo-64", m=5, groups=1, n=96, splits=None, dtype="bf16", seed=2)  # bf16 on the tensor cores
def test_wo_matmul_matches_the_dequantized_product(device, recipe, m, groups, n, splits, dtype, seed):
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    # int4 needs whole groups; int8 takes any K (tails of the K block included)
    k = groups * 256 if recipe != "int8wo" else groups * 256 - int(torch.randint(0, 200, (1,), generator=g))
    w = torch.randn(n, k, generator=g)
    x = torch.randn(m, k, generator=g).to(dt)
    qw = quantize(recipe, w, dt)
    on = lambda t: t.to(device) if t is not None else None
    qw_dev = type(qw)(qw.bits, on(qw.qweight), on(qw.scale), on(qw.zero), qw.group, qw.shape)
    x_dev = x.to(device)
    y = wo_matmul(x_dev, qw_dev, num_splits=splits)
    assert y.shape == (m, n) and y.dtype == dt and not torch.isnan(y).any()
    exact = wo_matmul_reference(x, qw)
    if rounds_weights(qw, m, n):  # judged as test_dequant_path_is_the_gemm_on_the_rounded_weight explains
        floor = sqnr_db(exact, (x.double() @ dequantize(qw).to(dt).double().t()).to(dt)) - 3.0
    else:
        floor = sqnr_db(exact, exact.to(dt)) - 3.0
    assert sqnr_db(exact, y.cpu()) >= floor, f"{sqnr_db(exact, y.cpu()):.1f} dB < {floor:.1f} dB"
    if m * n >= 512:  # enough outputs for a stable estimate (64 outputs: 2.5 dB spread over seeds)
        got = sqnr_db(x.double() @ w.double().t(), y.cpu())
        assert got >= RECIPE_FLOOR_DB[recipe], f"{recipe}: {got:.1f} dB against the float weight"


def test_wo_matmul_leading_dims_and_empty(device):
    w = torch.randn(64, 256)
    qw = quantize_int4_weight(w, 64, torch.float16)
    on = lambda t: t.to(device)
    qw = type(qw)(4, on(qw.qweight), on(qw.scale), on(qw.zero), 64, qw.shape)
    x = torch.randn(2, 3, 256, dtype=torch.float16, device=device)
    assert wo_matmul(x, qw).shape == (2, 3, 64)
    assert wo_matmul(x[:0], qw).shape == (0, 3, 64)


def test_wo_matmul_rejects_bad_input(device):
    qw = quantize_int8_weight(torch.randn(32, 64), torch.float16)
    qw.qweight, qw.scale = qw.qweight.to(device), qw.scale.to(device)
    with pytest.raises(ValueError, match="x has 63 input channels; the weight has in_features 64"):
        wo_matmul(torch.randn(2, 63, dtype=torch.float16, device=device), qw)
    with pytest.raises(TypeError, match="x has dtype float32"):
        wo_matmul(torch.randn(2, 64, device=device), qw)
    with pytest.raises(TypeError, match="quantize with dtype=torch.bfloat16"):
        wo_matmul(torch.randn(2, 64, dtype=torch.bfloat16, device=device), qw)
    kn = type(qw)(8, qw.qweight.t().contiguous(), qw.scale, None, None, qw.shape)  # the old (K, N) layout
    with pytest.raises(ValueError, match=r"int8 weight must be qweight int8 \(N, K\) = \(32, 64\) .* got torch.int8 \(64, 32\)"):
        wo_matmul(torch.randn(2, 64, dtype=torch.float16, device=device), kn)
    with pytest.raises(TypeError, match="must be a QuantizedWeight"):
        wo_matmul(torch.randn(2, 64, dtype=torch.float16, device=device), torch.zeros(64, 32))


MMA_OPTIONS = [{"path": "mma", "swap_ab": False}, {"path": "mma", "swap_ab": True},
               {"path": "mma", "swap_ab": False, "block_n": 128, "block_k": 64, "waves": 2}]


GEMV_OPTIONS = {  # the gemv path is for one row; its options differ by format
    "int4wo-64": [{"path": "gemv", "rows": 8}, {"path": "gemv", "rows": 32, "num_warps": 2},
                  {"path": "gemv", "rows": 16, "num_warps": 4, "waves": 2}],
    "int4wo-128": [{"path": "gemv", "rows": 64, "num_warps": 1}, {"path": "gemv", "rows": 64, "num_warps": 4}],
    "int8wo": [{"path": "gemv", "block_n": 16, "block_k": 512, "num_warps": 4},
               {"path": "gemv", "block_n": 4, "block_k": 64, "num_warps": 1, "num_stages": 1},
               {"path": "gemv", "block_n": 2, "block_k": 128, "num_warps": 2},
               {"path": "gemv", "block_n": 1, "block_k": 1024, "num_warps": 2}],  # one row, all of K a step
}


@pytest.mark.parametrize("recipe,m,options",
                         [(r, m, o) for r in ("int8wo", "int4wo-64") for m in (1, 5, 16) for o in MMA_OPTIONS]
                         + [(r, 1, o) for r, opts in GEMV_OPTIONS.items() for o in opts])
def test_launch_options_compute_the_same_product(device, recipe, m, options):
    """Every launch option computes the same function, split or not: the transposed tile
    (weights as the MMA's left operand) or not, other tiles, the one-row CUDA-core path
    (int8: rows past N and a K tail past the last whole block masked). int4 on the tensor
    cores rounds each weight to x's dtype first and is judged on the rounded weight."""
    g = torch.Generator().manual_seed(m)
    # int8 takes a K tail: any K on the tensor cores, whole 32-bit words on the gemv path
    k, n = 512 - (0 if recipe != "int8wo" else 36 if options["path"] == "gemv" else 37), 200
    w, x = torch.randn(n, k, generator=g), torch.randn(m, k, generator=g).to(torch.float16)
    qw = quantize(recipe, w, torch.float16)
    on = lambda t: t.to(device) if t is not None else None
    qw_dev = type(qw)(qw.bits, on(qw.qweight), on(qw.scale), on(qw.zero), qw.group, qw.shape)
    exact = wo_matmul_reference(x, qw)
    if qw.bits == 4 and options["path"] == "mma":
        floor = sqnr_db(exact, (x.double() @ dequantize(qw).half().double().t()).half()) - 3.0
    else:
        floor = sqnr_db(exact, exact.to(torch.float16)) - 3.0
    for splits in (1, 3):
        y = wo_matmul(x.to(device), qw_dev, num_splits=splits, config=options)
        assert sqnr_db(exact, y.cpu()) >= floor, f"splits={splits}: {sqnr_db(exact, y.cpu()):.1f} dB < {floor:.1f} dB"


@pytest.mark.parametrize("recipe", ["int8wo", "int4wo-128"])
def test_gemv_keeps_precision_over_a_long_unsplit_k(device, recipe):
    """The one-row path's floats 1 + q 2^-e carry sum x along: with all-positive x over one
    long K chunk that offset must be taken out per batch, not once at the end (the int8
    path lost 15 dB that way: 58.7 dB against a 73.7 dB floor at K = 14336)."""
    g = torch.Generator().manual_seed(7)
    k = 8192
    w, x = torch.randn(64, k, generator=g), (torch.rand(1, k, generator=g) + 0.5).to(torch.float16)
    q_cpu = quantize(recipe, w, torch.float16)
    exact = wo_matmul_reference(x, q_cpu)
    floor = sqnr_db(exact, exact.to(torch.float16)) - 3.0
    y = wo_matmul(x.to(device), on_device(q_cpu, device), num_splits=1, config={"path": "gemv"}).cpu()
    assert sqnr_db(exact, y) >= floor, f"{sqnr_db(exact, y):.1f} dB < {floor:.1f} dB"


def test_int8_gemv_unmasked_and_split(device):
    """The int8 one-row kernel without masks (N a multiple of block_n, K of block_k), whole
    and split over K (the last program to arrive sums the partials and scales)."""
    g = torch.Generator().manual_seed(5)
    k, n = 1024, 256
    q_cpu = quantize_int8_weight(torch.randn(n, k, generator=g), torch.float16)
    x = torch.randn(1, k, generator=g).to(torch.float16)
    exact = wo_matmul_reference(x, q_cpu)
    floor = sqnr_db(exact, exact.to(torch.float16)) - 3.0
    for splits in (1, 4):
        y = wo_matmul(x.to(device), on_device(q_cpu, device), num_splits=splits,
                      config={"path": "gemv", "block_n": 16, "block_k": 256, "num_warps": 4}).cpu()
        assert sqnr_db(exact, y) >= floor, f"splits={splits}: {sqnr_db(exact, y):.1f} dB < {floor:.1f} dB"


@pytest.mark.parametrize("recipe,options", [("int4wo-128", {"path": "gemv", "rows": 8}),
                                             ("int8wo", {"path": "gemv", "block_n": 16, "block_k": 64, "num_warps": 1})])
def test_gemv_merges_many_splits(device, recipe, options):
    """The last program of a tile reads the partials 8 splits a load: 11 and 19 splits (a
    part-full last load) and 32 (whole loads) give the unsplit product, K chunks of less
    than an int4 group included (2048 / 19 rounds to chunks of 112)."""
    g = torch.Generator().manual_seed(8)
    k, n = 2048, 96
    q_cpu = quantize(recipe, torch.randn(n, k, generator=g), torch.float16)
    x = torch.randn(1, k, generator=g).to(torch.float16)
    exact = wo_matmul_reference(x, q_cpu)
    floor = sqnr_db(exact, exact.to(torch.float16)) - 3.0
    for splits in (11, 19, 32):
        y = wo_matmul(x.to(device), on_device(q_cpu, device), num_splits=splits, config=options).cpu()
        assert sqnr_db(exact, y) >= floor, f"splits={splits}: {sqnr_db(exact, y):.1f} dB < {floor:.1f} dB"


def test_gemv_refuses_a_weight_off_a_4_byte_boundary(device):
    """The gemv kernels read the weight as 32-bit words: a qweight view at an odd offset
    takes the tensor-core path by default, and the gemv path, asked for, says why not."""
    g = torch.Generator().manual_seed(6)
    q_cpu = quantize_int8_weight(torch.randn(64, 256, generator=g), torch.float16)
    buf = torch.empty(64 * 256 + 1, dtype=torch.int8, device=device)
    odd = on_device(q_cpu, device)
    odd.qweight = buf[1:].view(64, 256)
    odd.qweight.copy_(q_cpu.qweight)
    assert odd.qweight.data_ptr() % 4 == 1 and odd.qweight.is_contiguous()
    x = torch.randn(1, 256, generator=g).to(torch.float16)
    exact = wo_matmul_reference(x, q_cpu)
    y = wo_matmul(x.to(device), odd).cpu()
    assert sqnr_db(exact, y) >= sqnr_db(exact, exact.to(torch.float16)) - 3.0
    with pytest.raises(ValueError, match="qweight does not start on a 4-byte boundary"):
        wo_matmul(x.to(device), odd, config={"path": "gemv"})


@pytest.mark.parametrize("recipe", ["int8wo", "int4wo-64"])
def test_gemv_reads_x_at_any_2_byte_offset(device, recipe):
    """The gemv kernels read x as 32-bit pairs: an x view 2 bytes off a 4-byte boundary is
    copied first (on the GPU such a load faults: misaligned address)."""
    g = torch.Generator().manual_seed(3)
    k = 256
    q_cpu = quantize(recipe, torch.randn(64, k, generator=g), torch.float16)
    buf = torch.randn(1, k + 1, generator=g).to(torch.float16).to(device)
    x = buf[:, 1:]
    assert x.data_ptr() % 4 == 2
    exact = wo_matmul_reference(x.cpu(), q_cpu)
    y = wo_matmul(x, on_device(q_cpu, device)).cpu()
    assert sqnr_db(exact, y) >= sqnr_db(exact, exact.to(torch.float16)) - 3.0


def test_wo_matmul_rejects_bad_launch_options(device):
    qw = quantize_int8_weight(torch.randn(32, 64), torch.float16)
    qw.qweight, qw.scale = qw.qweight.to(device), qw.scale.to(device)
    x = torch.randn(2, 64, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match="the gemv path computes one row; x has 2"):
        wo_matmul(x, qw, config={"path": "gemv"})
    with pytest.raises(ValueError, match="path must be 'mma', 'gemv' or 'dequant'"):
        wo_matmul(x, qw, config={"path": "simt"})
    with pytest.raises(TypeError, match="config must be a dict of launch options, got list"):
        wo_matmul(x, qw, config=[("path", "mma")])
    q4 = on_device(quantize_int4_weight(torch.randn(32, 64), 32, torch.float16), device)
    for weight, options, error in [  # each format's gemv options, checked and named
        (qw, {"rows": 32}, r"wo_gemv: unknown launch option\(s\) \['rows'\]; known: \['block_k', 'block_n', "
                           r"'num_stages', 'num_warps', 'waves'\]"),
        (qw, {"block_n": 12}, "block_n must be a power of two from 1 to 1024, got 12"),
        (qw, {"block_k": 2}, "block_k must be a power of two from 4 to 16384, got 2"),
        (q4, {"words_per_thread": 2}, r"wo_gemv: unknown launch option\(s\) \['words_per_thread'\]"),
        (q4, {"maxnreg": 128}, r"wo_gemv: unknown launch option\(s\) \['maxnreg'\]"),
        (q4, {"block_n": 64}, r"wo_gemv: unknown launch option\(s\) \['block_n'\]"),
        (q4, {"rows": 40}, "rows must be a power of two from 4 to 64, got 40"),
        (q4, {"rows": 32}, "rows must divide 16 .half the group 32., got 32"),
    ]:
        with pytest.raises(ValueError, match=error):
            wo_matmul(x[:1], weight, config={"path": "gemv"} | options)
    for options, error in [  # the tensor-core path's options; the rejected ones are gone
        ({"fast_cvt": True}, r"wo_mma: unknown launch option\(s\) \['fast_cvt'\]"),
        ({"interleave": True, "deq_dot": False}, r"wo_mma: unknown launch option\(s\) \['deq_dot', 'interleave'\]"),
        ({"x_split": False}, r"wo_mma: unknown launch option\(s\) \['x_split'\]"),
        ({"rows": 8}, r"wo_mma: unknown launch option\(s\) \['rows'\]"),  # a gemv option on the mma path
        ({"block_m": 24}, "block_m must be a power of two from 16 to 256, got 24"),
        ({"swap_ab": 1}, "swap_ab must be True or False, got 1"),
        ({"waves": 0}, "waves must be a positive finite number, got 0"),
        ({"waves": float("inf")}, "waves must be a positive finite number, got inf"),  # an OverflowError before
    ]:
        with pytest.raises(ValueError, match=error):
            wo_matmul(x, q4, config={"path": "mma"} | options)
    with pytest.raises(ValueError, match="block_k 64 must be a power of two dividing the group 32"):
        wo_matmul(x, q4, config={"path": "mma", "block_k": 64})
    with pytest.raises(ValueError, match=r"wo_dequant: unknown launch option\(s\) \['block_k'\]"):
        wo_matmul(x, q4, config={"path": "dequant", "block_k": 64})
    # the gemv kernels read whole 32-bit words: of 4 output channels (int4), of 4 input channels (int8)
    odd4 = on_device(quantize_int4_weight(torch.randn(30, 64), 32, torch.float16), device)
    with pytest.raises(ValueError, match="out_features 30 is not a multiple of 4"):
        wo_matmul(x[:1], odd4, config={"path": "gemv"})
    assert wo_matmul(x[:1], odd4).shape == (1, 30)  # by default such a layer takes the tensor-core path
    odd8 = on_device(quantize_int8_weight(torch.randn(32, 62), torch.float16), device)
    x62 = torch.randn(1, 62, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match="in_features 62 is not a multiple of 4"):
        wo_matmul(x62, odd8, config={"path": "gemv"})
    assert wo_matmul(x62, odd8).shape == (1, 32)


def on_device(qw, device):
    on = lambda t: t.to(device) if t is not None else None
    return type(qw)(qw.bits, on(qw.qweight), on(qw.scale), on(qw.zero), qw.group, qw.shape)


@given(recipe=st.sampled_from(RECIPES), groups=st.integers(1, 3), n=st.integers(1, 700),
       block=st.sampled_from([(16, 512, 4), (8, 128, 2), (16, 64, 1)]), dtype=st.sampled_from(list(DTYPES)),
       seed=st.integers(0, 2**31 - 1))
@example(recipe="int8wo", groups=1, n=513, block=(16, 512, 4), dtype="fp16", seed=0)  # N past one block, K tail
def test_dequantize_weight_is_the_stored_format_rounded_once(device, recipe, groups, n, block, dtype, seed):
    """The Triton dequantization (the first half of the "dequant" path) writes exactly
    quantize.dequantize(qw) rounded to the activation dtype, transposed to (K, N)."""
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    k = groups * 256 - (int(torch.randint(0, 100, (1,), generator=g)) if recipe == "int8wo" else 0)
    qw = quantize(recipe, torch.randn(n, k, generator=g), dt)
    block_r, block_n, warps = block
    got = dequantize_weight(on_device(qw, device), dt, config=dict(block_r=block_r, block_n=block_n, num_warps=warps)).cpu()
    assert got.shape == (k, n) and got.dtype == dt
    assert torch.equal(got, dequantize(qw).to(dt).t())


@given(recipe=st.sampled_from(RECIPES), m=st.integers(1, 300), groups=st.integers(1, 3), n=st.integers(1, 300),
       dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**31 - 1))
def test_dequant_path_is_the_gemm_on_the_rounded_weight(device, recipe, m, groups, n, dtype, seed):
    """Path "dequant" (the default from DEQUANT_MIN_ROWS rows) rounds each weight once to
    x's dtype, as every dequantize-then-GEMM does, and then runs torch.mm (cuBLAS). That
    rounding is about as much noise as the output's own, so this path is judged against
    the exact product on the rounded weight, rounded once: at most twice (3 dB) its noise.
    The fused paths stay exact in the weights (the test above)."""
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    k = groups * 256 - (int(torch.randint(0, 100, (1,), generator=g)) if recipe == "int8wo" else 0)
    w, x = torch.randn(n, k, generator=g), torch.randn(m, k, generator=g).to(dt)
    qw = quantize(recipe, w, dt)
    y = wo_matmul(x.to(device), on_device(qw, device), config={"path": "dequant"}).cpu()
    exact = wo_matmul_reference(x, qw)
    rounded = (x.double() @ dequantize(qw).to(dt).double().t()).to(dt)
    floor = sqnr_db(exact, rounded) - 3.0
    assert sqnr_db(exact, y) >= floor, f"{sqnr_db(exact, y):.1f} dB < {floor:.1f} dB"
    if m >= DEQUANT_MIN_ROWS[qw.bits]:  # the default takes this path here
        assert torch.equal(wo_matmul(x.to(device), on_device(qw, device)).cpu(), y)


@pytest.mark.parametrize("swap_ab", [False, True])
def test_int4_mma_is_the_gemm_on_the_rounded_weight(device, swap_ab):
    """The tensor-core kernel dequantizes int4 to x's dtype before the dot (the default from
    2 rows): it has the dequant path's rounding, and is judged as it is, with the weights as
    either operand of the MMA."""
    g = torch.Generator().manual_seed(3)
    w, x = torch.randn(200, 512, generator=g), torch.randn(40, 512, generator=g).to(torch.float16)
    qw = quantize("int4wo-64", w, torch.float16)
    exact = wo_matmul_reference(x, qw)
    floor = sqnr_db(exact, (x.double() @ dequantize(qw).half().double().t()).half()) - 3.0
    for splits in (1, 3):
        y = wo_matmul(x.to(device), on_device(qw, device), num_splits=splits,
                      config={"path": "mma", "swap_ab": swap_ab}).cpu()
        assert sqnr_db(exact, y) >= floor, f"splits={splits}: {sqnr_db(exact, y):.1f} dB < {floor:.1f} dB"


def special_pattern(y):
    """Per output: 0 finite, +-1 the sign of an inf, 2 NaN."""
    y = y.double().cpu()
    return torch.where(torch.isnan(y), 2, torch.where(torch.isinf(y), torch.sign(y), 0)).long()


NONFINITE_PATHS = [{"path": "gemv"}, {"path": "mma"}, {"path": "dequant"}] + MMA_OPTIONS[:2]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("recipe", ["int8wo", "int4wo-64"])
@pytest.mark.parametrize("options", NONFINITE_PATHS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_nan_and_inf_in_x_give_float64s_nan_and_inf(device, dtype, recipe, options):
    """x holding +inf, -inf, two infs in one row, a NaN: the outputs' NaN positions and inf
    signs are float64's x @ dequant(W)^T (inf w: +-inf by w's sign, NaN where w = 0 or
    where infinities of both signs meet), whole and split over K. The one-row kernels'
    folded sums (f x - 1152 x, s (sum x q - z sum x)) once gave inf - inf = NaN everywhere."""
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(12)
    w = torch.randn(96, 256, generator=g)
    w[:16, 3] = 0  # dequantized to 0 on those outputs: inf * 0
    w[16:32, 5] = 0
    x = torch.randn(6, 256, generator=g)
    x[0, 3], x[1, 5], x[2, 7] = float("inf"), float("-inf"), float("nan")
    x[3, 3], x[3, 5] = float("inf"), float("inf")
    x[4, 200] = float("-inf")
    x = x.to(dt)
    qw = quantize(recipe, w, dt)
    expected = special_pattern(wo_matmul_reference(x, qw))
    assert (expected[5] == 0).all() and (expected[:5] != 0).all()
    if options["path"] == "gemv" and recipe == "int8wo" and interpreting():
        # the interpreter runs the programs one by one, and the non-finite rows' per-weight loop
        # costs it about a millisecond a nested call: 3 programs of 32 rows, not 24 of 4 (100 s)
        options = dict(options, block_n=32)
    for splits in (1, 3):
        if options["path"] == "gemv":
            y = torch.cat([wo_matmul(x[i:i + 1].to(device), on_device(qw, device), num_splits=splits,
                                     config=options) for i in range(x.shape[0])])
        else:
            y = wo_matmul(x.to(device), on_device(qw, device), num_splits=splits, config=options)
        got = special_pattern(y)
        assert torch.equal(got, expected), f"splits={splits}: {(got != expected).sum(dim=1).tolist()} outputs off per row"
