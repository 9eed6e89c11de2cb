import pytest

from harness.metrics import Cost, derive_metrics
from harness.timing import Measurement

pytestmark = pytest.mark.harness

CEIL = {"copy_gbps": 3000.0, "bf16_tflops": 750.0}


def test_memory_bound_fraction_is_bandwidth_fraction():
    m = derive_metrics(Cost(flops=1e6, bytes=3e9), 2e-3, CEIL)  # 3 GB in 2 ms = 1500 GB/s
    assert m["gbps"] == pytest.approx(1500.0)
    assert m["roofline_fraction"] == pytest.approx(0.5)


def test_compute_bound_fraction_uses_the_named_ceiling():
    # 2*8192^3 flops in 2 ms: 550 TFLOP/s of 750; its bytes alone would need far less time.
    cost = Cost(flops=2 * 8192**3, bytes=3 * 8192 * 8192 * 2, flops_ceiling="bf16_tflops")
    m = derive_metrics(cost, 2e-3, CEIL)
    assert m["tflops"] == pytest.approx(549.76, rel=1e-3)
    assert m["roofline_fraction"] == pytest.approx(549.76 / 750, rel=1e-3)


def test_no_ceilings_no_fraction_and_bad_time():
    assert derive_metrics(Cost(1, 1), 1.0, None)["roofline_fraction"] is None
    with pytest.raises(ValueError):
        derive_metrics(Cost(1, 1), 0.0, CEIL)


def test_measurement_median_iqr_and_timing_label():
    m = Measurement(samples_s=[4.0, 1.0, 3.0, 2.0, 5.0], mode="graph", cold_l2=True, calls_per_sample=10, compile_time_s=0.0)
    assert m.median_s == 3.0 and m.iqr_s == 2.0
    assert m.timing == "graph+cold_l2"


def test_a_cost_that_can_be_compute_bound_must_name_its_ceiling():
    with pytest.raises(ValueError, match="name the ceiling"):
        Cost(flops=2 * 2048 * 4096 * 4096, bytes=4096 * 4096 * 2)
    Cost(flops=9 * 4096, bytes=6 * 4096)  # a norm: a few ops a byte, bandwidth alone bounds it


def test_quant_gemms_at_2048_rows_are_held_to_their_compute_ceiling():
    """MixQ at 2048 rows ran at ~910 TOP/s on an H100 and reported 0.14 of a roofline that
    counted bandwidth only. With the int8 ceiling named, the fraction is against int8's."""
    from kernels.quant.cost import mixq_cost, wo_matmul_cost

    ceil = {"copy_gbps": 3000.0, "bf16_tflops": 700.0, "fp16_tflops": 700.0, "int8_tops": 1300.0}
    m, n, k, outliers = 2048, 10240, 8192, 128  # LLaMA-2-70B q projection
    cost = mixq_cost(m, n, k, outliers)
    t = 316e-6
    got = derive_metrics(cost, t, ceil)
    floor = 2 * m * n * (k - outliers) / 1300e12 + 2 * m * n * outliers / 700e12
    assert got["roofline_bound"] == "compute"
    assert got["roofline_fraction"] == pytest.approx(floor / t)
    assert got["roofline_fraction"] > 0.5
    wo = derive_metrics(wo_matmul_cost(2048, 4096, 14336, 4096 * 14336 // 2, "bf16"), 360e-6, ceil)
    assert wo["roofline_bound"] == "compute" and wo["roofline_fraction"] == pytest.approx(2 * 2048 * 4096 * 14336 / 700e12 / 360e-6)
    one_row = derive_metrics(wo_matmul_cost(1, 4096, 14336, 4096 * 14336 // 2, "bf16"), 20e-6, ceil)
    assert one_row["roofline_bound"] == "memory"


def test_read_bound_fraction_interpolates_the_read_curve():
    """The fraction of a pure read of the op's bytes: the read curve interpolated log-log
    between its points, its first time below them, its last rate past them."""
    curve = [[1 << 20, 4e-6], [1 << 22, 8e-6], [1 << 30, 400e-6]]
    ceil = {**CEIL, "read_curve": curve}
    assert derive_metrics(Cost(0, 1 << 22), 16e-6, ceil)["read_bound_fraction"] == pytest.approx(0.5)
    assert derive_metrics(Cost(0, 1 << 21), 16e-6, ceil)["read_bound_fraction"] == pytest.approx(2 ** 0.5 * 4e-6 / 16e-6)
    assert derive_metrics(Cost(0, 1000), 8e-6, ceil)["read_bound_fraction"] == pytest.approx(0.5)
    assert derive_metrics(Cost(0, 1 << 31), 1600e-6, ceil)["read_bound_fraction"] == pytest.approx(0.5)
    assert derive_metrics(Cost(0, 1 << 22), 16e-6, CEIL)["read_bound_fraction"] is None  # older ceilings: no curve
