"""Every public entry point of kernels/quant against bad input, as one table.

Each row: the entry point, the kind of bad input, the call, and what must come of it:
an error of the named type whose message matches (raised in Python, before any Triton
launch), or the right answer, computed apart (float64 products: same shape, NaN at the same
places, infinities of the same signs, finite values within twice the output's rounding
noise; quantizer outputs: equal to those of the well-formed input).
Kinds: wrong dtype, wrong device ('meta'), wrong shape, odd strides, NaN/Inf, empty
(0 rows, K = 0), wrong Python types. Small shapes, so that the CPU lane runs it quickly.
"""
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from kernels.quant import (MixQLinear, OutlierCache, QuantizedWeight, dequantize, hqq_zero, mixq_linear, mixq_reference,
                           quantize_int4_weight, quantize_int4_weight_hqq, quantize_int8_activations, quantize_int8_weight,
                           sqnr_db, unpack_int4, wo_matmul, wo_matmul_reference)
from kernels.quant.mixq import mixq_quantize
from kernels.quant.wo_matmul import dequantize_weight, gemv_takes

pytestmark = pytest.mark.correctness

N, K, G = 32, 64, 32
F16 = torch.float16
INF, NAN = float("inf"), float("nan")


@dataclass
class Raises:
    error: type
    match: str


@dataclass
class Same:
    """The right answer: expected(device), compared with the call's result."""
    expected: Callable


def w_(n=N, k=K, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def x_(m, d, k=K, dtype=F16, seed=1):
    return torch.randn(m, k, generator=torch.Generator().manual_seed(seed)).to(dtype).to(d)


def with_specials(x):
    """Row 0 +inf, row 1 a NaN, row 2 -inf and +inf, the rest finite."""
    x = x.clone()
    x[0, 3], x[1, 5] = INF, NAN
    x[2, 7], x[2, 9] = -INF, INF
    return x


def on_rounded_weight(x, qw):
    """x @ W^T in float64 with the weight the paths that dequantize first use: rounded to x's dtype."""
    return x.double() @ dequantize(qw).to(x.dtype).double().t()


def on(qw, d):
    move = lambda t: t.to(d) if t is not None else None
    return QuantizedWeight(qw.bits, move(qw.qweight), move(qw.scale), move(qw.zero), qw.group, qw.shape)


def q8(d, dtype=F16):
    w = w_()
    w[:4, 3] = 0  # an inf meets zero weights
    return on(quantize_int8_weight(w, dtype), d)


def q4(d, dtype=F16):
    return on(quantize_int4_weight(w_(), G, dtype), d)


def replace(qw, **fields):
    return QuantizedWeight(**{f: getattr(qw, f) for f in ("bits", "qweight", "scale", "zero", "group", "shape")} | fields)


def layer(d, bits=8, **kw):
    return MixQLinear(w_().to(d), dtype=F16, bits=bits, **kw)


IDX = torch.tensor([5, 40], dtype=torch.int32)  # the outlier channels given to mixq_linear


def over_threshold(x):
    """The channels a fresh W8A8 layer keeps from its first input: max |x| over 6, NaN not."""
    return (x.abs().nan_to_num(nan=0.0).amax(dim=0) > 6).nonzero().flatten().to(torch.int32).cpu()


def calibrated(d):
    """A W4A4 layer calibrated on clean samples (4 channels)."""
    lay = layer(d, 4)
    lay.calibrate(x_(16, d, seed=5), 4)
    return lay


def nonfinite_weight(value):
    w = w_()
    w[1, 2] = value
    return w


def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="meta")


ROWS = [
    # quantize_int8_weight
    ("quantize_int8_weight", "dtype", lambda d: quantize_int8_weight(w_().to(torch.int32)),
     Raises(TypeError, "w has dtype torch.int32")),
    ("quantize_int8_weight", "dtype", lambda d: quantize_int8_weight(w_(), torch.int32),
     Raises(TypeError, "dtype torch.int32 is not supported")),
    ("quantize_int8_weight", "dtype", lambda d: quantize_int8_weight(w_(), torch.float8_e4m3fn),
     Raises(TypeError, "dtype torch.float8_e4m3fn is not supported")),
    ("quantize_int8_weight", "device", lambda d: quantize_int8_weight(meta(N, K)), Raises(ValueError, "w is on meta")),
    ("quantize_int8_weight", "shape", lambda d: quantize_int8_weight(torch.randn(K)), Raises(ValueError, "2-D")),
    ("quantize_int8_weight", "strides", lambda d: quantize_int8_weight(w_(K, N).to(d).t(), F16),
     Same(lambda d: quantize_int8_weight(w_(K, N).to(d).t().contiguous(), F16))),
    ("quantize_int8_weight", "nan_inf", lambda d: quantize_int8_weight(nonfinite_weight(NAN)),
     Raises(ValueError, "w holds inf or NaN")),
    ("quantize_int8_weight", "nan_inf", lambda d: quantize_int8_weight(nonfinite_weight(-INF)),
     Raises(ValueError, "w holds inf or NaN")),
    ("quantize_int8_weight", "empty", lambda d: quantize_int8_weight(w_(N, 0)), Raises(ValueError, "in_features 0")),
    ("quantize_int8_weight", "empty", lambda d: quantize_int8_weight(w_(0, K), F16).qweight.shape,
     Same(lambda d: (0, K))),
    ("quantize_int8_weight", "types", lambda d: quantize_int8_weight(w_().tolist()),
     Raises(TypeError, "w must be a torch.Tensor, got list")),
    ("quantize_int8_weight", "types", lambda d: quantize_int8_weight(w_(), "float16"),
     Raises(TypeError, "dtype must be a torch.dtype, got str")),
    # quantize_int4_weight
    ("quantize_int4_weight", "dtype", lambda d: quantize_int4_weight(w_().to(torch.int8), G),
     Raises(TypeError, "w has dtype torch.int8")),
    ("quantize_int4_weight", "dtype", lambda d: quantize_int4_weight(w_(), G, torch.float8_e5m2),
     Raises(TypeError, "dtype torch.float8_e5m2 is not supported")),
    ("quantize_int4_weight", "device", lambda d: quantize_int4_weight(meta(N, K), G), Raises(ValueError, "w is on meta")),
    ("quantize_int4_weight", "shape", lambda d: quantize_int4_weight(w_(N, 48), G),
     Raises(ValueError, "in_features 48 is not a multiple of the group size 32")),
    ("quantize_int4_weight", "shape", lambda d: quantize_int4_weight(w_(), 48),
     Raises(ValueError, "group size 48 is not supported")),
    ("quantize_int4_weight", "strides", lambda d: quantize_int4_weight(w_(K, N).to(d).t(), G, F16),
     Same(lambda d: quantize_int4_weight(w_(K, N).to(d).t().contiguous(), G, F16))),
    ("quantize_int4_weight", "nan_inf", lambda d: quantize_int4_weight(nonfinite_weight(INF), G),
     Raises(ValueError, "w holds inf or NaN")),
    ("quantize_int4_weight", "empty", lambda d: quantize_int4_weight(w_(N, 0), G), Raises(ValueError, "in_features 0")),
    ("quantize_int4_weight", "empty", lambda d: quantize_int4_weight(w_(0, K), G, F16).qweight.shape,
     Same(lambda d: (K // 2, 0))),
    ("quantize_int4_weight", "types", lambda d: quantize_int4_weight(w_(), 32.0),
     Raises(TypeError, "group must be an int, got float")),
    ("quantize_int4_weight", "types", lambda d: quantize_int4_weight(w_(), "32"),
     Raises(TypeError, "group must be an int, got str")),
    # quantize_int4_weight_hqq and hqq_zero
    ("quantize_int4_weight_hqq", "dtype", lambda d: quantize_int4_weight_hqq(w_(), G, torch.int32),
     Raises(TypeError, "dtype torch.int32 is not supported")),
    ("quantize_int4_weight_hqq", "device", lambda d: quantize_int4_weight_hqq(meta(N, K), G),
     Raises(ValueError, "w is on meta")),
    ("quantize_int4_weight_hqq", "empty", lambda d: quantize_int4_weight_hqq(w_(N, 0), G),
     Raises(ValueError, "in_features 0")),
    ("quantize_int4_weight_hqq", "types", lambda d: quantize_int4_weight_hqq(w_(), G, p="0.7"),
     Raises(TypeError, "p must be a number, got str")),
    ("hqq_zero", "types", lambda d: hqq_zero(w_(), G, iters=2.5), Raises(TypeError, "iters must be an int, got float")),
    ("hqq_zero", "types", lambda d: hqq_zero(w_().tolist(), G), Raises(TypeError, "w must be a torch.Tensor")),
    ("hqq_zero", "shape", lambda d: hqq_zero(w_(), G, p=1.5), Raises(ValueError, "0 < p < 1")),
    ("hqq_zero", "device", lambda d: hqq_zero(meta(N, K), G), Raises(ValueError, "w is on meta")),
    ("hqq_zero", "empty", lambda d: hqq_zero(w_(N, 0), G), Raises(ValueError, "in_features 0")),
    ("hqq_zero", "nan_inf", lambda d: hqq_zero(nonfinite_weight(NAN), G), Raises(ValueError, "w holds inf or NaN")),
    # dequantize and unpack_int4
    ("dequantize", "types", lambda d: dequantize(w_()), Raises(TypeError, r"qw must be a QuantizedWeight \(kernels.quant.quantize\), got Tensor")),
    ("dequantize", "dtype", lambda d: dequantize(replace(q8(d), qweight=q8(d).qweight.to(torch.int32))),
     Raises(TypeError, "qw.qweight has dtype torch.int32")),
    ("dequantize", "device", lambda d: dequantize(on(q8("cpu"), "meta")), Raises(ValueError, "qw.qweight is on meta")),
    ("dequantize", "shape", lambda d: dequantize(replace(q8(d), qweight=q8(d).qweight.t().contiguous())),
     Raises(ValueError, r"int8 weight must be qweight int8 \(N, K\) = \(32, 64\)")),
    ("dequantize", "shape", lambda d: dequantize(replace(q8(d), bits=3)), Raises(ValueError, "bits must be 8 or 4, got 3")),
    ("dequantize", "types", lambda d: dequantize(replace(q4(d), group=32.0)),
     Raises(TypeError, "qw.group must be an int, got float")),
    ("dequantize", "shape", lambda d: dequantize(replace(q4(d), group=64)),
     Raises(ValueError, r"int4 scale and zero must be \(K/group, N\) = \(1, 32\)")),
    ("dequantize", "strides", lambda d: dequantize(replace(q8(d), qweight=q8(d).qweight.t().contiguous().t())),
     Same(lambda d: dequantize(q8(d)))),
    ("dequantize", "empty", lambda d: dequantize(on(quantize_int8_weight(w_(0, K), F16), d)),
     Same(lambda d: torch.zeros(0, K, device=d))),
    ("unpack_int4", "dtype", lambda d: unpack_int4(q4(d).qweight.to(torch.int8)),
     Raises(TypeError, "packed has dtype torch.int8")),
    ("unpack_int4", "device", lambda d: unpack_int4(meta(4, 4, dtype=torch.uint8)), Raises(ValueError, "packed is on meta")),
    ("unpack_int4", "shape", lambda d: unpack_int4(q4(d).qweight.flatten()), Raises(ValueError, "packed must be 2-D")),
    ("unpack_int4", "strides", lambda d: unpack_int4(q4(d).qweight[:, ::2]),
     Same(lambda d: unpack_int4(q4(d).qweight[:, ::2].contiguous()))),
    ("unpack_int4", "empty", lambda d: unpack_int4(torch.zeros(K // 2, 0, dtype=torch.uint8, device=d)),
     Same(lambda d: torch.zeros(K, 0, dtype=torch.int64, device=d))),
    ("unpack_int4", "types", lambda d: unpack_int4([[1, 2]]), Raises(TypeError, "packed must be a torch.Tensor, got list")),
    # quantize_int8_activations
    ("quantize_int8_activations", "dtype", lambda d: quantize_int8_activations(x_(2, d).to(torch.int32)),
     Raises(TypeError, "x has dtype torch.int32")),
    ("quantize_int8_activations", "device", lambda d: quantize_int8_activations(meta(2, K)), Raises(ValueError, "x is on meta")),
    ("quantize_int8_activations", "shape", lambda d: quantize_int8_activations(torch.tensor(1.0)),
     Raises(ValueError, "at least one channel")),
    ("quantize_int8_activations", "strides", lambda d: quantize_int8_activations(x_(K, d, k=4).t()),
     Same(lambda d: quantize_int8_activations(x_(K, d, k=4).t().contiguous()))),
    ("quantize_int8_activations", "nan_inf", lambda d: quantize_int8_activations(with_specials(x_(8, d))),
     Raises(ValueError, "x holds inf or NaN")),
    ("quantize_int8_activations", "empty", lambda d: quantize_int8_activations(x_(2, d, k=0)),
     Raises(ValueError, "at least one channel")),
    ("quantize_int8_activations", "empty", lambda d: quantize_int8_activations(x_(0, d)),
     Same(lambda d: (torch.zeros(0, K, dtype=torch.int8, device=d), torch.zeros(0, device=d)))),
    ("quantize_int8_activations", "types", lambda d: quantize_int8_activations("x"),
     Raises(TypeError, "x must be a torch.Tensor, got str")),
    # wo_matmul_reference and sqnr_db
    ("wo_matmul_reference", "types", lambda d: wo_matmul_reference(x_(2, d).tolist(), q8(d)),
     Raises(TypeError, "x must be a floating-point torch.Tensor, got list")),
    ("wo_matmul_reference", "dtype", lambda d: wo_matmul_reference(x_(2, d).to(torch.int64), q8(d)),
     Raises(TypeError, "x must be a floating-point torch.Tensor, got Tensor of torch.int64")),
    ("wo_matmul_reference", "shape", lambda d: wo_matmul_reference(x_(2, d, k=K - 1), q8(d)),
     Raises(ValueError, r"x must be \(\.\.\., 64\)")),
    ("wo_matmul_reference", "device", lambda d: wo_matmul_reference(meta(2, K), q8(d)),
     Raises(ValueError, "x is on meta, qw on")),
    ("sqnr_db", "shape", lambda d: sqnr_db(torch.ones(4, 1), torch.ones(4)), Raises(ValueError, "one shape")),
    ("sqnr_db", "types", lambda d: sqnr_db([1.0], torch.ones(1)), Raises(TypeError, "signal must be a torch.Tensor")),
    ("sqnr_db", "empty", lambda d: sqnr_db(torch.ones(0), torch.ones(0)), Same(lambda d: float("inf"))),
    # wo_matmul, each path
    ("wo_matmul", "dtype", lambda d: wo_matmul(x_(2, d, dtype=torch.float32), q8(d)),
     Raises(TypeError, "x has dtype float32")),
    ("wo_matmul", "dtype", lambda d: wo_matmul(x_(2, d, dtype=torch.bfloat16), q8(d)),
     Raises(TypeError, "quantize with dtype=torch.bfloat16")),
    ("wo_matmul", "dtype", lambda d: wo_matmul(x_(2, d), replace(q8(d), qweight=q8(d).qweight.view(torch.uint8))),
     Raises(ValueError, "int8 weight must be qweight int8")),
    ("wo_matmul", "device", lambda d: wo_matmul(meta(2, K, dtype=F16), q8(d)), Raises(ValueError, "x is on meta")),
    ("wo_matmul", "device", lambda d: wo_matmul(x_(2, d), on(q8("cpu"), "meta")),
     Raises(ValueError, "qw.qweight is on meta")),
    ("wo_matmul", "shape", lambda d: wo_matmul(x_(2, d, k=K - 1), q8(d)),
     Raises(ValueError, "x has 63 input channels; the weight has in_features 64")),
    ("wo_matmul", "shape", lambda d: wo_matmul(torch.tensor(1.0, dtype=F16, device=d), q8(d)),
     Raises(ValueError, "x must have at least 1 dimension")),
    ("wo_matmul", "shape", lambda d: wo_matmul(x_(2, d), replace(q4(d), scale=q4(d).scale[:1])),
     Raises(ValueError, r"int4 scale and zero must be \(K/group, N\) = \(2, 32\)")),
    ("wo_matmul", "strides", lambda d: wo_matmul(x_(3, d, k=2 * K)[:, ::2], q8(d)),
     Same(lambda d: wo_matmul_reference(x_(3, d, k=2 * K)[:, ::2], q8(d)))),
    ("wo_matmul", "strides", lambda d: wo_matmul(x_(K, d, k=1).t(), q4(d)),  # one row, K apart
     Same(lambda d: wo_matmul_reference(x_(K, d, k=1).t(), q4(d)))),
    ("wo_matmul", "strides", lambda d: wo_matmul(x_(2, d), replace(q8(d), qweight=q8(d).qweight.t().contiguous().t())),
     Raises(ValueError, "qweight must be contiguous")),
    ("wo_matmul", "nan_inf", lambda d: torch.cat([wo_matmul(r, q8(d)) for r in with_specials(x_(8, d)).split(1)]),
     Same(lambda d: wo_matmul_reference(with_specials(x_(8, d)), q8(d)))),  # the int8 gemv
    ("wo_matmul", "nan_inf", lambda d: torch.cat([wo_matmul(r, q4(d)) for r in with_specials(x_(8, d)).split(1)]),
     Same(lambda d: wo_matmul_reference(with_specials(x_(8, d)), q4(d)))),  # the int4 gemv
    ("wo_matmul", "nan_inf", lambda d: wo_matmul(with_specials(x_(8, d)), q8(d)),
     Same(lambda d: wo_matmul_reference(with_specials(x_(8, d)), q8(d)))),  # int8 tensor cores
    ("wo_matmul", "nan_inf", lambda d: wo_matmul(with_specials(x_(8, d)), q4(d)),
     Same(lambda d: on_rounded_weight(with_specials(x_(8, d)), q4(d)))),  # int4 tensor cores, deq_dot
    ("wo_matmul", "nan_inf", lambda d: wo_matmul(with_specials(x_(8, d)), q4(d), config={"path": "mma", "swap_ab": False}),
     Same(lambda d: on_rounded_weight(with_specials(x_(8, d)), q4(d)))),
    ("wo_matmul", "nan_inf", lambda d: wo_matmul(with_specials(x_(8, d)), q8(d), config={"path": "dequant"}),
     Same(lambda d: on_rounded_weight(with_specials(x_(8, d)), q8(d)))),
    ("wo_matmul", "empty", lambda d: wo_matmul(x_(0, d), q8(d)), Same(lambda d: torch.zeros(0, N, device=d))),
    ("wo_matmul", "empty", lambda d: wo_matmul(x_(2, d), on(quantize_int8_weight(w_(0, K), F16), d)),
     Same(lambda d: torch.zeros(2, 0, device=d))),
    ("wo_matmul", "empty", lambda d: wo_matmul(x_(2, d, k=0), QuantizedWeight(
        8, torch.zeros(N, 0, dtype=torch.int8, device=d), torch.ones(N, dtype=F16, device=d), None, None, (N, 0))),
     Same(lambda d: torch.zeros(2, N, device=d))),  # K = 0: an empty sum
    ("wo_matmul", "types", lambda d: wo_matmul(x_(2, d).tolist(), q8(d)), Raises(TypeError, "x must be a torch.Tensor")),
    ("wo_matmul", "types", lambda d: wo_matmul(x_(2, d), q8(d).qweight), Raises(TypeError, "qw must be a QuantizedWeight")),
    ("wo_matmul", "types", lambda d: wo_matmul(x_(2, d), q8(d), num_splits=2.0),
     Raises(TypeError, "num_splits must be an int, got float")),
    ("wo_matmul", "types", lambda d: wo_matmul(x_(2, d), replace(q8(d), shape=(N, "64"))),
     Raises(ValueError, "qw.shape must be .* two ints")),
    ("wo_matmul", "types", lambda d: wo_matmul(x_(2, d), q8(d), config="mma"),
     Raises(TypeError, "config must be a dict of launch options, got str")),
    ("wo_matmul", "types", lambda d: wo_matmul(x_(2, d), q8(d), config={"block_m": 16.0}),
     Raises(ValueError, "block_m must be a power of two from 16 to 256, got 16.0")),
    ("wo_matmul", "types", lambda d: wo_matmul(x_(2, d), q8(d), config={"deq_dot": False}),
     Raises(ValueError, r"wo_mma: unknown launch option\(s\) \['deq_dot'\]")),
    # dequantize_weight and gemv_takes
    ("dequantize_weight", "dtype", lambda d: dequantize_weight(q8(d), torch.int32),
     Raises(TypeError, "dtype must be torch.float16, bfloat16 or float32")),
    ("dequantize_weight", "device", lambda d: dequantize_weight(on(q4("cpu"), "meta"), F16),
     Raises(ValueError, "qw.qweight is on meta")),
    ("dequantize_weight", "shape", lambda d: dequantize_weight(q4(d), F16, config={"block_r": 12}),
     Raises(ValueError, "block_r must be a power of two")),
    ("dequantize_weight", "shape", lambda d: dequantize_weight(q4(d), F16, config={"block_r": 32}),
     Raises(ValueError, r"block_r 32 must divide half the group \(16\)")),
    ("dequantize_weight", "empty", lambda d: dequantize_weight(on(quantize_int8_weight(w_(0, K), F16), d), F16),
     Same(lambda d: torch.zeros(K, 0, device=d))),
    ("dequantize_weight", "types", lambda d: dequantize_weight(q8(d), F16, config={"block_n": 512.0}),
     Raises(ValueError, "block_n must be a power of two from 1 to 4096, got 512.0")),
    ("dequantize_weight", "types", lambda d: dequantize_weight(q8(d), F16, config={"block_c": 512}),
     Raises(ValueError, r"wo_dequant: unknown launch option\(s\) \['block_c'\]")),
    ("gemv_takes", "types", lambda d: gemv_takes("4096", 64, 8), Raises(TypeError, "N must be an int, got str")),
    ("gemv_takes", "shape", lambda d: gemv_takes(4096, 64, 3), Raises(ValueError, "bits must be 8 or 4")),
    # MixQLinear: the constructor, calibrate, the call
    ("MixQLinear", "dtype", lambda d: MixQLinear(w_().to(torch.int32).to(d)), Raises(TypeError, "w has dtype int32")),
    ("MixQLinear", "dtype", lambda d: MixQLinear(w_().to(d), dtype=torch.float32),
     Raises(TypeError, "dtype torch.float32 is not supported")),
    ("MixQLinear", "device", lambda d: MixQLinear(meta(N, K)), Raises(ValueError, "w is on meta")),
    ("MixQLinear", "shape", lambda d: MixQLinear(w_().flatten().to(d)), Raises(ValueError, "w must have at least 2")),
    ("MixQLinear", "strides", lambda d: MixQLinear(w_(K, N).to(d).t(), dtype=F16)(x_(3, d)),
     Same(lambda d: MixQLinear(w_(K, N).t().contiguous().to(d), dtype=F16)(x_(3, d)))),
    ("MixQLinear", "nan_inf", lambda d: MixQLinear(nonfinite_weight(NAN).to(d)), Raises(ValueError, "w holds inf or NaN")),
    ("MixQLinear", "empty", lambda d: MixQLinear(w_(N, 0).to(d)), Raises(ValueError, "in_features > 0")),
    ("MixQLinear", "empty", lambda d: MixQLinear(w_(0, K).to(d), dtype=F16)(x_(3, d)),
     Same(lambda d: torch.zeros(3, 0, device=d))),
    ("MixQLinear", "types", lambda d: MixQLinear(w_().tolist()), Raises(TypeError, "w must be a torch.Tensor, got list")),
    ("MixQLinear", "types", lambda d: MixQLinear(w_().to(d), bits=8.0), Raises(TypeError, "bits must be an int, got float")),
    ("MixQLinear", "types", lambda d: MixQLinear(w_().to(d), bits=2), Raises(ValueError, "bits must be 8")),
    ("MixQLinear", "types", lambda d: MixQLinear(w_().to(d), dtype="float16"),
     Raises(TypeError, "dtype 'float16' is not supported")),
    ("MixQLinear", "types", lambda d: MixQLinear(w_().to(d), threshold="6"),
     Raises(TypeError, "threshold must be a number, got str")),
    ("MixQLinear", "types", lambda d: MixQLinear(w_().to(d), max_outliers=1.5),
     Raises(TypeError, "max_outliers must be an int, got float")),
    ("MixQLinear.__call__", "dtype", lambda d: layer(d)(x_(2, d, dtype=torch.bfloat16)),
     Raises(TypeError, "the layer was built for torch.float16")),
    ("MixQLinear.__call__", "device", lambda d: layer(d)(meta(2, K, dtype=F16)), Raises(ValueError, "x is on meta")),
    ("MixQLinear.__call__", "shape", lambda d: layer(d)(x_(2, d, k=K + 1)),
     Raises(ValueError, "x has 65 input channels; the layer has in_features 64")),
    ("MixQLinear.__call__", "nan_inf", lambda d: layer(d)(with_specials(x_(8, d))),  # its first call
     Same(lambda d: mixq_reference(with_specials(x_(8, d)), layer(d), over_threshold(with_specials(x_(8, d)))))),
    ("MixQLinear.__call__", "nan_inf", lambda d: calibrated(d)(with_specials(x_(8, d))),
     Same(lambda d: mixq_reference(with_specials(x_(8, d)), calibrated(d), calibrated(d).cache.idx))),
    ("MixQLinear.__call__", "empty", lambda d: layer(d)(x_(0, d)), Same(lambda d: torch.zeros(0, N, device=d))),
    ("MixQLinear.__call__", "types", lambda d: layer(d)(x_(2, d).tolist()), Raises(TypeError, "x must be a torch.Tensor")),
    ("MixQLinear.calibrate", "dtype", lambda d: layer(d, 4).calibrate(x_(8, d).to(torch.int32)),
     Raises(TypeError, "x_samples has dtype torch.int32")),
    ("MixQLinear.calibrate", "device", lambda d: layer(d, 4).calibrate(meta(8, K)), Raises(ValueError, "x_samples is on meta")),
    ("MixQLinear.calibrate", "shape", lambda d: layer(d, 4).calibrate(x_(8, d, k=K - 1)),
     Raises(ValueError, "calibration samples have 63 channels")),
    ("MixQLinear.calibrate", "nan_inf", lambda d: layer(d, 4).calibrate(with_specials(x_(8, d)), 4),
     Same(lambda d: layer(d, 4).calibrate(with_specials(x_(8, d)).nan_to_num(nan=0.0), 4))),  # NaN ignored
    ("MixQLinear.calibrate", "empty", lambda d: layer(d, 4).calibrate(x_(0, d)), Raises(ValueError, "holds no samples")),
    ("MixQLinear.calibrate", "types", lambda d: layer(d, 4).calibrate(x_(8, d), n_outliers=2.5),
     Raises(TypeError, "n_outliers must be an int, got float")),
    ("MixQLinear.calibrate", "types", lambda d: layer(d, 4).calibrate(x_(8, d).tolist()),
     Raises(TypeError, "x_samples must be a tensor, got list")),
    # mixq_linear, mixq_reference, OutlierCache, mixq_quantize
    ("mixq_linear", "dtype", lambda d: mixq_linear(x_(2, d, dtype=torch.float32), layer(d)),
     Raises(TypeError, "x has dtype float32")),
    ("mixq_linear", "dtype", lambda d: mixq_linear(x_(2, d), layer(d), IDX.long().to(d)), Raises(TypeError, "1-D int32")),
    ("mixq_linear", "device", lambda d: mixq_linear(meta(2, K, dtype=F16), layer(d)), Raises(ValueError, "x is on meta")),
    ("mixq_linear", "device", lambda d: mixq_linear(x_(2, d), layer(d), IDX.to("meta")),
     Raises(ValueError, "outlier_idx is on meta")),
    ("mixq_linear", "shape", lambda d: mixq_linear(x_(2, d, k=K - 1), layer(d)), Raises(ValueError, "63 input channels")),
    ("mixq_linear", "shape", lambda d: mixq_linear(x_(2, d), layer(d), torch.tensor([3, K], dtype=torch.int32, device=d)),
     Raises(ValueError, r"outlier_idx must lie in \[0, 64\)")),
    ("mixq_linear", "strides", lambda d: mixq_linear(x_(3, d, k=2 * K)[:, ::2], layer(d), IDX.to(d)),
     Same(lambda d: mixq_reference(x_(3, d, k=2 * K)[:, ::2], layer(d), IDX))),
    ("mixq_linear", "nan_inf", lambda d: mixq_linear(with_specials(x_(8, d)), layer(d), IDX.to(d)),
     Same(lambda d: mixq_reference(with_specials(x_(8, d)), layer(d), IDX))),
    ("mixq_linear", "nan_inf", lambda d: mixq_linear(with_specials(x_(8, d)), layer(d, 4), IDX.to(d)),
     Same(lambda d: mixq_reference(with_specials(x_(8, d)), layer(d, 4), IDX))),
    ("mixq_linear", "empty", lambda d: mixq_linear(x_(0, d), layer(d)), Same(lambda d: torch.zeros(0, N, device=d))),
    ("mixq_linear", "types", lambda d: mixq_linear(x_(2, d), w_()), Raises(TypeError, "layer must be a MixQLinear")),
    ("mixq_linear", "types", lambda d: mixq_linear(x_(2, d), layer(d), [5, 40]), Raises(TypeError, "1-D int32")),
    ("mixq_linear", "types", lambda d: mixq_linear(x_(2, d), layer(d), config=("BLOCK_M", 16)),
     Raises(TypeError, "config must be a dict of launch options, got tuple")),
    ("mixq_linear", "types", lambda d: mixq_linear(x_(2, d), layer(d), config={"BLOCK_Q": 16}),
     Raises(ValueError, r"mixq_gemm: unknown launch option\(s\) \['BLOCK_Q'\]")),
    ("mixq_linear", "types", lambda d: mixq_linear(x_(2, d), layer(d), config={"QUANT_WARPS": 3}),
     Raises(ValueError, "QUANT_WARPS must be a power of two from 1 to 32, got 3")),
    ("mixq_reference", "types", lambda d: mixq_reference(x_(2, d), layer(d), [5]),
     Raises(TypeError, "outlier_idx must be a torch.Tensor")),
    ("mixq_reference", "shape", lambda d: mixq_reference(x_(2, d, k=K - 1), layer(d), IDX), Raises(ValueError, "x must be")),
    ("OutlierCache", "types", lambda d: OutlierCache(64.0, d), Raises(TypeError, "k must be an int, got float")),
    ("OutlierCache", "empty", lambda d: OutlierCache(0, d), Raises(ValueError, "k must be at least 1")),
    ("OutlierCache", "types", lambda d: OutlierCache(K, d, threshold=float("nan")), Raises(ValueError, "threshold")),
    ("mixq_quantize", "dtype", lambda d: mixq_quantize(x_(2, d, dtype=torch.float32), layer(d).cache.is_out),
     Raises(TypeError, "x2 has dtype float32")),
    ("mixq_quantize", "dtype", lambda d: mixq_quantize(x_(2, d), layer(d).cache.is_out.bool()),
     Raises(TypeError, "is_out has dtype bool")),
    ("mixq_quantize", "device", lambda d: mixq_quantize(meta(2, K, dtype=F16), layer(d).cache.is_out),
     Raises(ValueError, "x2 is on meta")),
    ("mixq_quantize", "strides", lambda d: mixq_quantize(x_(K, d, k=3).t(), layer(d).cache.is_out),
     Raises(ValueError, "unit stride along K")),
    ("mixq_quantize", "empty", lambda d: mixq_quantize(x_(2, d, k=0), layer(d).cache.is_out[:0]),
     Raises(ValueError, "K > 0")),
    ("mixq_quantize", "types", lambda d: mixq_quantize(x_(2, d), layer(d).cache.is_out, config={"QUANT_ROWS": "2"}),
     Raises(ValueError, "QUANT_ROWS must be a power of two from 1 to 32, got '2'")),
    ("mixq_quantize", "types", lambda d: mixq_quantize(x_(2, d), layer(d).cache.is_out, config={"rows_per_program": 2}),
     Raises(ValueError, r"mixq_quantize: unknown launch option\(s\) \['rows_per_program'\]")),
]


def special_pattern(y):
    """Per element: 0 finite, +-1 the sign of an inf, 2 NaN."""
    y = y.double().cpu()
    return torch.where(torch.isnan(y), 2, torch.where(torch.isinf(y), torch.sign(y), 0)).long()


def assert_same(got, expected):
    if isinstance(expected, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same(g, e)
    elif isinstance(expected, QuantizedWeight):
        assert got.bits == expected.bits and got.group == expected.group and got.shape == expected.shape
        for f in ("qweight", "scale", "zero"):
            assert_same(getattr(got, f), getattr(expected, f))
    elif isinstance(expected, torch.Tensor) and expected.dtype == torch.float64 or (
            isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor) and got.dtype != expected.dtype):
        # a float product against float64: the same non-finite values, the finite ones within
        # twice the output's rounding noise
        assert tuple(got.shape) == tuple(expected.shape), (tuple(got.shape), tuple(expected.shape))
        assert torch.equal(special_pattern(got), special_pattern(expected)), "NaN positions or inf signs differ"
        fin = torch.isfinite(expected.cpu())
        if fin.any():
            e, g = expected.cpu()[fin].double(), got.cpu()[fin].double()
            assert sqnr_db(e, g) >= sqnr_db(e, e.to(got.dtype).double()) - 3.0
    elif isinstance(expected, torch.Tensor):
        assert got.shape == expected.shape and got.dtype == expected.dtype
        assert torch.equal(got.cpu(), expected.cpu()) or bool(torch.isnan(got).any())
    else:
        assert got == expected


@pytest.mark.parametrize("entry,kind,call,expect",
                         [pytest.param(*row, id=f"{row[0]}-{row[1]}-{i}") for i, row in enumerate(ROWS)])
def test_bad_input(device, entry, kind, call, expect):
    if isinstance(expect, Raises):
        with pytest.raises(expect.error, match=expect.match):
            call(device)
    else:
        assert_same(call(device), expect.expected(device))


def test_the_table_covers_every_entry_point_and_kind():
    entries = {r[0] for r in ROWS}
    assert entries >= {"quantize_int8_weight", "quantize_int4_weight", "quantize_int4_weight_hqq", "hqq_zero",
                       "dequantize", "unpack_int4", "quantize_int8_activations", "wo_matmul_reference", "sqnr_db",
                       "wo_matmul", "dequantize_weight", "gemv_takes", "MixQLinear", "MixQLinear.__call__",
                       "MixQLinear.calibrate", "mixq_linear", "mixq_reference", "OutlierCache", "mixq_quantize"}
    kinds = {r[1] for r in ROWS}
    assert kinds == {"dtype", "device", "shape", "strides", "nan_inf", "empty", "types"}
