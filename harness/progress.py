"""Progress of a long run as a count with the time left: the perf runner's cases, the
tuner's cases, the microbenchmark runner's items. The estimate is the mean time of the
units done so far times the units left (units differ in cost, so it is a guide)."""
from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """'45s', '3m05s', '1h02m'."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    def __init__(self, total: int, unit: str = "cases", clock=time.monotonic):
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self.total, self.unit, self.clock = total, unit, clock
        self.done = 0
        self.start = clock()

    def step(self, n: int = 1) -> str:
        """Count n more units done; the progress line."""
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        return self.line()

    def line(self) -> str:
        elapsed = self.clock() - self.start
        text = f"{self.done}/{self.total} {self.unit}, {duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", about {duration(elapsed / self.done * (self.total - self.done))} left"
        return text
