"""The work an operation must do, as its cost model states it: operations, the fewest
bytes it must move through device memory (every input read once, every output written
once), and which measured ceiling its arithmetic runs against (harness.metrics turns a
measured time into rates and a roofline fraction)."""
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
