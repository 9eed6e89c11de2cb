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
