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

from dataclasses import dataclass
from typing import Optional

# Above this many operations per byte, a cost must name the ceiling its arithmetic runs
# against: every GPU the suite targets has its ridge point far higher (H100 bf16: ~300),
# so below it leaving the ceiling out changes no roofline, above it it hides the bound.
COMPUTE_INTENSITY_NEEDS_CEILING = 10.0


@dataclass(frozen=True)
class Cost:
    flops: float
    bytes: float
    # Name of the ceiling the flops are bounded by (a key of harness.ceilings), or
    # None when the arithmetic is negligible next to the memory traffic (norms,
    # elementwise ops): then only bandwidth bounds the operation.
    flops_ceiling: Optional[str] = None
    # Further work on other units, done in turn with `flops`: ((ops, ceiling), ...).
    more_flops: tuple = ()

    def __post_init__(self):
        if self.flops < 0 or self.bytes < 0:
            raise ValueError(f"a cost needs flops and bytes >= 0, got {self.flops}, {self.bytes}")
        if self.flops_ceiling is None and self.flops > COMPUTE_INTENSITY_NEEDS_CEILING * self.bytes:
            raise ValueError(
                f"{self.flops:.3g} ops on {self.bytes:.3g} bytes ({self.flops / self.bytes:.0f} per byte) can be "
                "compute-bound: name the ceiling they run against (flops_ceiling, e.g. 'bf16_tflops', 'int8_tops')")

    @property
    def total_flops(self) -> float:
        return self.flops + sum(f for f, _ in self.more_flops)


def derive_metrics(cost: Cost, time_s: float, ceilings: dict | None) -> dict:
    """Achieved TFLOP/s (or TOP/s), GB/s, and the fraction of the roofline reached."""
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
    return {"tflops": tflops, "gbps": gbps, "roofline_fraction": fraction, "roofline_bound": bound}
