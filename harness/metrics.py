"""Cost models and the metrics derived from a measured time.

Each operation states the work it must do (`Cost`): floating-point or integer
operations, the fewest bytes it must move through device memory (every input read
once, every output written once), and which measured ceiling its arithmetic runs
against. The roofline floor is the larger of bytes / bandwidth and ops / peak rate;
`roofline_fraction` is that floor over the measured time (1.0 = at the roofline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Cost:
    flops: float
    bytes: float
    # Name of the ceiling the flops are bounded by (a key of harness.ceilings), or
    # None when the arithmetic is negligible next to the memory traffic (norms,
    # elementwise ops): then only bandwidth bounds the operation.
    flops_ceiling: Optional[str] = None


def derive_metrics(cost: Cost, time_s: float, ceilings: dict | None) -> dict:
    """Achieved TFLOP/s, GB/s, and the fraction of the roofline reached."""
    if time_s <= 0:
        raise ValueError(f"time must be positive, got {time_s}")
    tflops = cost.flops / time_s / 1e12
    gbps = cost.bytes / time_s / 1e9
    fraction = None
    if ceilings:
        floors = []
        bw = ceilings.get("copy_gbps")
        if bw:
            floors.append(cost.bytes / (bw * 1e9))
        if cost.flops_ceiling:
            peak = ceilings.get(cost.flops_ceiling)
            if peak:
                floors.append(cost.flops / (peak * 1e12))
        if floors:
            fraction = max(floors) / time_s
    return {"tflops": tflops, "gbps": gbps, "roofline_fraction": fraction}
