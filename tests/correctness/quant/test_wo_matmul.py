"""kernels/quant/wo_matmul.py against x @ dequant(W)^T in float64 (kernels/quant/reference.py).

Accuracy by SQNR (DESIGN.md). Two floors per case:
- against the exact product of the stored format: the kernel's noise may be at most twice
  (3 dB) that of rounding the exact answer once to the output dtype. The kernel
  accumulates in fp32, so output rounding dominates.
- against the unquantized weight (the recipe's own error, Gaussian weights and inputs):
  RECIPE_FLOOR_DB, set ~1.5 dB under what round-to-nearest gives with 512+ outputs (measured on
  the CPU lane: int8 42 dB; int4 g32 22, g64 21, g128 20, g256 19).
The CPU lane uses fp16 only (the interpreter's bf16 dot is wrong, triton-lang/triton#11584).
"""
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from harness.lanes import interpreting
from kernels.quant import (quantize_int4_weight, quantize_int4_weight_hqq, quantize_int8_weight, sqnr_db, wo_matmul,
                           wo_matmul_reference)

pytestmark = pytest.mark.correctness

DTYPES = {"fp16": torch.float16} if interpreting() else {"fp16": torch.float16, "bf16": torch.bfloat16}
RECIPES = ["int8wo", "int4wo-32", "int4wo-64", "int4wo-128", "int4wo-256", "int4wo-128-hqq"]
RECIPE_FLOOR_DB = {"int8wo": 40.0, "int4wo-32": 20.0, "int4wo-64": 19.0, "int4wo-128": 18.0, "int4wo-256": 17.0,
                   "int4wo-128-hqq": 18.0}


def quantize(recipe, w, dtype):
    if recipe == "int8wo":
        return quantize_int8_weight(w, dtype)
    group = int(recipe.split("-")[1])
    return (quantize_int4_weight_hqq if recipe.endswith("hqq") else quantize_int4_weight)(w, group, dtype)


@given(recipe=st.sampled_from(RECIPES), m=st.integers(1, 80), groups=st.integers(1, 4), n=st.integers(1, 300),
       splits=st.sampled_from([None, 1, 3]), dtype=st.sampled_from(list(DTYPES)), seed=st.integers(0, 2**31 - 1))
@example(recipe="int4wo-128", m=1, groups=16, n=256, splits=None, dtype="fp16", seed=0)  # decode, K split
@example(recipe="int8wo", m=17, groups=3, n=129, splits=2, dtype="fp16", seed=1)
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
    with pytest.raises(TypeError, match="must be a QuantizedWeight"):
        wo_matmul(torch.randn(2, 64, dtype=torch.float16, device=device), torch.zeros(64, 32))


MMA_OPTIONS = [{"path": "mma"} | o for o in ({"swap_ab": False, "fast_cvt": False}, {"swap_ab": True, "fast_cvt": False},
                                            {"swap_ab": False}, {"swap_ab": True}, {"interleave": True, "swap_ab": False},
                                            {"interleave": True, "swap_ab": True})]


@pytest.mark.parametrize("m,options", [(m, o) for m in (1, 5, 16) for o in MMA_OPTIONS]
                         + [(1, {"path": "gemv", "block_n": 64}), (1, {"path": "gemv", "block_n": 128, "num_warps": 8})])  # the gemv path is for one row
@pytest.mark.parametrize("recipe", ["int8wo", "int4wo-64"])
def test_launch_options_compute_the_same_product(device, recipe, m, options):
    """Every launch option is the same function, split or not: the transposed tile (weights
    as the MMA's left operand), int4 converted from bits (fast_cvt, on by default) or by
    the instruction, nibbles interleaved into K order, the one-row CUDA-core path."""
    g = torch.Generator().manual_seed(m)
    k, n = 512 - (37 if recipe == "int8wo" else 0), 200
    w, x = torch.randn(n, k, generator=g), torch.randn(m, k, generator=g).to(torch.float16)
    qw = quantize(recipe, w, torch.float16)
    on = lambda t: t.to(device) if t is not None else None
    qw_dev = type(qw)(qw.bits, on(qw.qweight), on(qw.scale), on(qw.zero), qw.group, qw.shape)
    exact = wo_matmul_reference(x, qw)
    floor = sqnr_db(exact, exact.to(torch.float16)) - 3.0
    for splits in (1, 3):
        y = wo_matmul(x.to(device), qw_dev, num_splits=splits, _config_override=options)
        assert sqnr_db(exact, y.cpu()) >= floor, f"splits={splits}: {sqnr_db(exact, y.cpu()):.1f} dB < {floor:.1f} dB"


def test_wo_matmul_rejects_bad_launch_options(device):
    qw = quantize_int8_weight(torch.randn(32, 64), torch.float16)
    qw.qweight, qw.scale = qw.qweight.to(device), qw.scale.to(device)
    x = torch.randn(2, 64, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match="the gemv path computes one row; x has 2"):
        wo_matmul(x, qw, _config_override={"path": "gemv"})
    with pytest.raises(ValueError, match="path must be 'mma' or 'gemv'"):
        wo_matmul(x, qw, _config_override={"path": "simt"})
    with pytest.raises(ValueError, match="the gemv path takes block_n in multiples of 16"):
        wo_matmul(x[:1], qw, _config_override={"path": "gemv", "block_n": 40})
    odd = quantize_int8_weight(torch.randn(30, 64), torch.float16)  # 30 outputs: not whole 32-bit words
    odd.qweight, odd.scale = odd.qweight.to(device), odd.scale.to(device)
    with pytest.raises(ValueError, match="out_features 30 is not a multiple of 4"):
        wo_matmul(x[:1], odd, _config_override={"path": "gemv"})
    assert wo_matmul(x[:1], odd).shape == (1, 30)  # by default such a layer takes the tensor-core path
