"""Cost models and the metrics derived from a measured time.

Each operation states the work it must do (`Cost`): floating-point or integer
operations, the fewest bytes it must move through device memory (every input read
once, every output written once), and which measured ceiling its arithmetic runs
against. The roofline floor is the larger of bytes / bandwidth and ops / peak rate
(the sum of such terms where the work runs on several units in turn, e.g. an int8 GEMM
and an fp16 outlier GEMM); `roofline_fraction` is that floor over the measured time
(1.0 = at the roofline).
"""
from __future__ import annotations

import math

from kernels.cost import Cost  # noqa: F401  (the cost models are the kernels'; the metrics are derived here)


def read_time_s(nbytes: float, curve) -> float:
    """The time of the fastest pure read of nbytes, from the ceilings' read curve
    ([[bytes, seconds], ...], ascending): log-log interpolation between its points; below
    the first, the first's time (a launch and one round trip cost that much at least);
    past the last, the last's rate."""
    if nbytes <= curve[0][0]:
        return curve[0][1]
    for (b0, t0), (b1, t1) in zip(curve, curve[1:]):
        if nbytes <= b1:
            w = math.log(nbytes / b0) / math.log(b1 / b0)
            return math.exp(math.log(t0) + w * (math.log(t1) - math.log(t0)))
    b, t = curve[-1]
    return t * nbytes / b


def derive_metrics(cost: Cost, time_s: float, ceilings: dict | None) -> dict:
    """Achieved TFLOP/s (or TOP/s), GB/s, the fraction of the roofline reached, and the
    fraction of a pure read of the same bytes (where the ceilings hold the read curve)."""
    if time_s <= 0:
        raise ValueError(f"time must be positive, got {time_s}")
    tflops = cost.total_flops / time_s / 1e12
    gbps = cost.bytes / time_s / 1e9
    fraction = None
    bound = None
    if ceilings:
        floors = {}
        bw = ceilings.get("copy_gbps")
        if bw:
            floors["memory"] = cost.bytes / (bw * 1e9)
        work = ([(cost.flops, cost.flops_ceiling)] if cost.flops_ceiling else []) + list(cost.more_flops)
        peaks = [ceilings.get(c) for _, c in work]
        if work and all(peaks):
            floors["compute"] = sum(f / (p * 1e12) for (f, _), p in zip(work, peaks))
        if floors:
            bound = max(floors, key=floors.get)
            fraction = floors[bound] / time_s
    read_fraction = None
    if ceilings and ceilings.get("read_curve") and cost.bytes > 0:
        read_fraction = read_time_s(cost.bytes, ceilings["read_curve"]) / time_s
    return {"tflops": tflops, "gbps": gbps, "roofline_fraction": fraction, "roofline_bound": bound,
            "read_bound_fraction": read_fraction, "compute_ceiling": cost.flops_ceiling}
