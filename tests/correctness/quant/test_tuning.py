"""The launch spaces of kernels/quant (kernels/tuning.py): wo_matmul's "wo_gemv", "wo_mma"
and "wo_dequant", one per path, and mixq_linear's "mixq_gemm" and "mixq_quantize".

- each default is the configuration the kernels launched before the spaces existed (hand
  listed from that code; the options it fixed, int4 dequantized before the dot and x read
  contiguously, are now the kernel's only behaviour);
- a space chooses only for its own path: a configuration of one never reaches another;
- every candidate of a few keys computes the right answer (small shapes, the CPU lane too);
- an unknown option in config= is a ValueError that names it.
"""
from types import SimpleNamespace

import pytest
import torch

from kernels import tuning
from kernels.quant import (MixQLinear, dequantize, mixq_linear, mixq_reference, quantize_int4_weight,
                           quantize_int8_weight, sqnr_db, wo_matmul, wo_matmul_reference)
from kernels.quant import mixq, wo_dequant, wo_gemv, wo_mma
from kernels.quant.mixq import mixq_quantize
from kernels.quant.wo_matmul import choose_path, dequantize_weight

pytestmark = pytest.mark.correctness

SPACES = {"gemv": (wo_gemv.SPACE, lambda m, qw: wo_gemv.launch_key(qw)),
          "mma": (wo_mma.SPACE, wo_mma.launch_key),
          "dequant": (wo_dequant.SPACE, lambda m, qw: wo_dequant.launch_key(qw))}

# (rows, N, K, bits, group): the path and what the old defaults launched there
OLD_DEFAULTS = [
    ((1, 14336, 4096, 4, 128), "gemv", dict(rows=32, num_warps=1, waves=8)),
    ((1, 4096, 14336, 4, 32), "gemv", dict(rows=16, num_warps=1, waves=8)),
    ((1, 14336, 4096, 8, None), "gemv", dict(block_n=16, block_k=512, num_warps=4, num_stages=3, waves=6)),
    ((1, 4096, 14336, 8, None), "gemv", dict(block_n=4, block_k=2048, num_warps=4, num_stages=3, waves=6)),
    ((1, 14334, 4096, 4, 128), "mma", dict(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=3, waves=8,
                                           swap_ab=True)),  # N % 4: not the gemv's
    ((16, 14336, 4096, 4, 128), "mma", dict(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=3, waves=8,
                                            swap_ab=True)),
    ((5, 4096, 4096, 4, 64), "mma", dict(block_m=16, block_n=64, block_k=64, num_warps=4, num_stages=3, waves=4,
                                         swap_ab=True)),
    ((64, 14336, 4096, 4, 128), "mma", dict(block_m=64, block_n=64, block_k=128, num_warps=4, num_stages=3, waves=1,
                                            swap_ab=True)),
    ((100, 14336, 4096, 4, 256), "mma", dict(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=3,
                                             waves=1, swap_ab=True)),
    ((16, 14336, 4096, 8, None), "mma", dict(block_m=16, block_n=64, block_k=256, num_warps=4, num_stages=3, waves=1,
                                             swap_ab=False)),
    ((9, 4096, 4096, 8, None), "mma", dict(block_m=16, block_n=64, block_k=256, num_warps=4, num_stages=3, waves=2,
                                           swap_ab=False)),
    ((40, 14336, 4096, 8, None), "mma", dict(block_m=64, block_n=64, block_k=128, num_warps=4, num_stages=3, waves=1,
                                             swap_ab=False)),
    ((300, 14336, 4096, 8, None), "mma", dict(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3,
                                              waves=1, swap_ab=False)),
    ((191, 14336, 4096, 4, 128), "mma", dict(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=3,
                                             waves=1, swap_ab=True)),
    ((192, 14336, 4096, 4, 128), "dequant", dict(block_r=16, block_n=512, num_warps=4)),
    ((2048, 4096, 14336, 8, None), "dequant", dict(block_r=16, block_n=512, num_warps=4)),
]


def weight_like(n, k, bits, group):
    """What the path choice and the launch keys read of a QuantizedWeight."""
    return SimpleNamespace(shape=(n, k), bits=bits, group=group, qweight=torch.empty(0, dtype=torch.int8))


@pytest.mark.parametrize("case,path,old", OLD_DEFAULTS, ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else None)
def test_wo_matmul_defaults_are_the_old_launches(case, path, old):
    m, n, k, bits, group = case
    qw = weight_like(n, k, bits, group)
    assert choose_path(m, n, k, qw) == path
    space, key_of = SPACES[path]
    key = key_of(m, qw)
    assert space.default(**key) == old
    assert space.choose(torch.device("cpu"), key) == old  # no table on the CPU
    assert space.search_space(key)[0] == old


@pytest.mark.parametrize("m,old", [(1, (16, 128, 8)), (16, (16, 128, 8)), (17, (64, 128, 4)), (64, (64, 128, 4)),
                                   (65, (128, 256, 8)), (2048, (128, 256, 8))])
def test_mixq_gemm_defaults_are_the_old_launches(m, old):
    bm, bn, warps = old
    key = dict(rows=tuning.pow2_bucket(m), n=10240, k=8192)
    assert mixq.GEMM_SPACE.default(**key) == dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128, BLOCK_O=32, GROUP_M=8,
                                                  num_warps=warps, num_stages=4, tma="auto", X_COMPACT_MIN_ROWS=256)


@pytest.mark.parametrize("k,block_k", [(300, 512), (4096, 4096), (8192, 8192), (8193, 2048), (28672, 2048)])
def test_mixq_quantize_defaults_are_the_old_launches(k, block_k):
    assert mixq.QUANTIZE_SPACE.default(rows=16, k=k) == dict(QUANT_ROWS=1, QUANT_BLOCK_K=block_k, QUANT_WARPS=8)


def test_candidates_are_tens_and_pass_their_check():
    for space, keys in [(wo_gemv.SPACE, [dict(bits=b, group=g, n=n, k=k) for b, g in ((4, 32), (4, 128), (8, 0))
                                         for n, k in ((14336, 4096), (4096, 14336), (64, 256))]),
                        (wo_mma.SPACE, [dict(rows=r, n=14336, k=4096, bits=b, group=g) for r in (1, 16, 64, 256)
                                        for b, g in ((4, 32), (4, 128), (8, 0))]),
                        (wo_dequant.SPACE, [dict(bits=b, group=g, n=4096, k=4096) for b, g in ((4, 32), (8, 0))]),
                        (mixq.GEMM_SPACE, [dict(rows=r, n=10240, k=8192) for r in (1, 32, 2048)]),
                        (mixq.QUANTIZE_SPACE, [dict(rows=r, k=k) for r in (1, 2048) for k in (128, 8192, 28672)])]:
        for key in keys:
            configs = space.search_space(key)
            assert 1 <= len(configs) <= 60, (space.kernel, key, len(configs))
            for cfg in configs:
                space.check(cfg)


def test_a_path_takes_only_its_own_space(device):
    """Which space each call chooses from, at which key; and a configuration forced on one
    path's space (here an invalid one) never reaches a call that takes another path."""
    g = torch.Generator().manual_seed(1)
    q4 = on_device(quantize_int4_weight(torch.randn(64, 128, generator=g), 64, torch.float16), device)
    x = torch.randn(200, 128, generator=g).to(torch.float16).to(device)
    for m, kernel, key in [(1, "wo_gemv", dict(bits=4, group=64, n=64, k=128)),
                           (3, "wo_mma", dict(rows=4, n=64, k=128, bits=4, group=64)),
                           (192, "wo_dequant", dict(bits=4, group=64, n=64, k=128))]:
        with tuning.recording() as seen:
            wo_matmul(x[:m], q4)
        assert [(s.kernel, k) for s, k in seen] == [(kernel, key)]
    one_row = wo_matmul(x[:1], q4)
    with tuning.forcing("wo_mma", {"block_m": 3}), tuning.forcing("wo_dequant", {"block_r": 5}):
        assert torch.equal(wo_matmul(x[:1], q4), one_row)
        with pytest.raises(ValueError, match="block_m must be a power of two from 16 to 256, got 3"):
            wo_matmul(x[:3], q4)
    with tuning.forcing("wo_gemv", {"rows": 64}):  # 64 rows would not fit the group: never used off the gemv
        assert torch.equal(wo_matmul(x[:3], q4), wo_matmul(x[:3], q4, config={"path": "mma"}))


def forced_each(space, key, call):
    """call() under every configuration of the space at key; yields (config, output)."""
    for cfg in space.search_space(key):
        with tuning.forcing(space.kernel, cfg):
            yield cfg, call()


@pytest.mark.parametrize("bits", [4, 8])
def test_every_gemv_candidate_computes_the_product(device, bits):
    g = torch.Generator().manual_seed(2)
    n, k = 32, 64 if bits == 4 else 128
    qw = quantize_int4_weight(torch.randn(n, k, generator=g), 32, torch.float16) if bits == 4 else \
        quantize_int8_weight(torch.randn(n, k, generator=g), torch.float16)
    x = torch.randn(1, k, generator=g).to(torch.float16)
    exact = wo_matmul_reference(x, qw)
    floor = sqnr_db(exact, exact.to(torch.float16)) - 3.0
    qd, xd = on_device(qw, device), x.to(device)
    for cfg, y in forced_each(wo_gemv.SPACE, wo_gemv.launch_key(qw), lambda: wo_matmul(xd, qd)):
        assert sqnr_db(exact, y.cpu()) >= floor, cfg


@pytest.mark.parametrize("bits", [4, 8])
def test_every_mma_candidate_computes_the_product(device, bits):
    g = torch.Generator().manual_seed(3)
    m, n, k = 3, 48, 128 if bits == 4 else 100
    qw = quantize_int4_weight(torch.randn(n, k, generator=g), 32, torch.float16) if bits == 4 else \
        quantize_int8_weight(torch.randn(n, k, generator=g), torch.float16)
    x = torch.randn(m, k, generator=g).to(torch.float16)
    exact = wo_matmul_reference(x, qw)
    rounded = (x.double() @ dequantize(qw).half().double().t()).half() if bits == 4 else exact.to(torch.float16)
    floor = sqnr_db(exact, rounded) - 3.0
    qd, xd = on_device(qw, device), x.to(device)
    for cfg, y in forced_each(wo_mma.SPACE, wo_mma.launch_key(m, qw), lambda: wo_matmul(xd, qd)):
        assert sqnr_db(exact, y.cpu()) >= floor, cfg


@pytest.mark.parametrize("bits", [4, 8])
def test_every_dequant_candidate_writes_the_rounded_weight(device, bits):
    g = torch.Generator().manual_seed(4)
    w = torch.randn(40, 128, generator=g)
    qw = quantize_int4_weight(w, 64, torch.float16) if bits == 4 else quantize_int8_weight(w, torch.float16)
    expected = dequantize(qw).to(torch.float16).t()
    qd = on_device(qw, device)
    for cfg, got in forced_each(wo_dequant.SPACE, wo_dequant.launch_key(qw),
                                lambda: dequantize_weight(qd, torch.float16)):
        assert torch.equal(got.cpu(), expected), cfg


def test_every_mixq_candidate_computes_the_product(device):
    g = torch.Generator().manual_seed(5)
    m, n, k = 3, 40, 128
    w = torch.randn(n, k, generator=g) * 0.1
    x = torch.randn(m, k, generator=g)
    x[:, [7, 90]] *= 20
    x = x.to(torch.float16)
    layer = MixQLinear(w.to(device), dtype=torch.float16)
    idx = torch.tensor([7, 90], dtype=torch.int32)
    ref = mixq_reference(x, layer, idx)
    floor = sqnr_db(ref, ref.to(torch.float16)) - 3.0
    xd, idx_d = x.to(device), idx.to(device)
    call = lambda: mixq_linear(xd, layer, idx_d)
    for cfg, y in forced_each(mixq.GEMM_SPACE, dict(rows=4, n=n, k=k), call):
        assert sqnr_db(ref, y.cpu()) >= floor, cfg
    base = call()
    for cfg, y in forced_each(mixq.QUANTIZE_SPACE, dict(rows=4, k=k), call):
        assert torch.equal(y, base), cfg


def test_unknown_launch_options_are_named(device):
    q8 = on_device(quantize_int8_weight(torch.randn(32, 64), torch.float16), device)
    x = torch.randn(2, 64, dtype=torch.float16, device=device)
    for call, error in [
        (lambda: wo_matmul(x, q8, config={"fast_cvt": True}), r"wo_mma: unknown launch option\(s\) \['fast_cvt'\]"),
        (lambda: wo_matmul(x[:1], q8, config={"path": "gemv", "maxnreg": 128}),
         r"wo_gemv: unknown launch option\(s\) \['maxnreg'\]"),
        (lambda: wo_matmul(x, q8, config={"path": "dequant", "num_stages": 2}),
         r"wo_dequant: unknown launch option\(s\) \['num_stages'\]"),
        (lambda: dequantize_weight(q8, torch.float16, config={"rows": 2}), r"wo_dequant: unknown launch option"),
        (lambda: mixq_quantize(x, torch.zeros(64, dtype=torch.int8, device=device), config={"QUANT_STAGES": 2}),
         r"mixq_quantize: unknown launch option\(s\) \['QUANT_STAGES'\]"),
        (lambda: mixq_linear(x, MixQLinear(torch.randn(32, 64, device=device), dtype=torch.float16),
                             config={"QUANT_ROWS": 2, "BLOCK_R": 16}),
         r"mixq_gemm: unknown launch option\(s\) \['BLOCK_R'\]"),
    ]:
        with pytest.raises(ValueError, match=error):
            call()


def on_device(qw, device):
    on = lambda t: t.to(device) if t is not None else None
    return type(qw)(qw.bits, on(qw.qweight), on(qw.scale), on(qw.zero), qw.group, qw.shape)
