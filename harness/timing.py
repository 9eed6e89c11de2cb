"""Device timing: every implementation of one case, timed in the same process, interleaved.

Protocol (DESIGN.md, "Measurement protocol"):
- The first call of each implementation compiles / autotunes; it is timed on the host
  (with a device sync) and recorded apart as `compile_time_s`, never as a sample.
- Then a warm-up of `warmup_ms`, from which the time of one call is estimated.
- If the fastest implementation of the case runs under `graph_threshold_s` (launch
  overhead would dominate), every implementation of the case is captured in a CUDA
  graph that calls it once on each of K rotating input copies, and one sample is one
  replay's time / K. K is chosen so that the copies together exceed twice the L2, so
  every call reads its inputs from device memory (cold L2); when that would take too
  many copies, the timing says `warm_l2`.
- Otherwise each sample is one call between two CUDA events, after the L2 is flushed
  outside the events (TimingConfig.flush: by default a 2x-L2 buffer is read, leaving clean
  lines; "write" zeroes it, as triton's do_bench does). Before each sample a spin
  kernel holds the GPU for longer than the host takes to enqueue the sample, so the
  events time device work only: host launch overhead is reported apart (`host_s`).
- Rounds interleave the implementations (rotating the order each round), so a GPU that
  slows down or speeds up during the run affects all of them alike.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

GRAPH_THRESHOLD_S = 20e-6
MAX_GRAPH_COPIES = 8192
MAX_COPY_BYTES = 2 << 30  # never hold more than 2 GiB of rotating input copies


@dataclass
class Measurement:
    samples_s: list[float]
    mode: str  # "events" or "graph"
    cold_l2: bool
    calls_per_sample: int
    compile_time_s: float
    note: str = ""
    host_s: float | None = None  # host time to launch one call (not part of the samples)
    flush: str | None = None      # events mode, cold L2: how the L2 was flushed

    @property
    def timing(self) -> str:
        """The `timing` field of a result: how the samples were taken."""
        return f"{self.mode}+{'cold_l2' if self.cold_l2 else 'warm_l2'}"

    @property
    def median_s(self) -> float:
        return _quantile(self.samples_s, 0.5)

    @property
    def iqr_s(self) -> float:
        return _quantile(self.samples_s, 0.75) - _quantile(self.samples_s, 0.25)


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        raise ValueError("no samples")
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class TimingConfig:
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    cold_l2: bool = True
    mode: str = "auto"  # "auto", "events" or "graph"
    graph_threshold_s: float = GRAPH_THRESHOLD_S
    min_samples: int = 10
    max_samples: int = 1000
    # How the L2 is made cold: "read" streams a 2x-L2 buffer through it (L2 left full of
    # clean lines); "write" zeroes the buffer (triton's do_bench way), which leaves ~L2-size
    # dirty lines whose write-back the timed call then pays.
    flush: str = "read"


def l2_cache_bytes(device=None) -> int:
    props = torch.cuda.get_device_properties(device or torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 0) or 50 << 20)


def tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(tensor_bytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(o) for o in obj.values())
    return 0


def _sync():
    if torch.cuda.is_available():  # CPU providers (the microbench runner's device: cpu) need none
        torch.cuda.synchronize()


def first_call_s(fn: Callable[..., Any], inputs: tuple) -> tuple[float, Any]:
    """Host time of the first call (compilation, autotuning), synchronized; and its output."""
    _sync()
    t0 = time.perf_counter()
    out = fn(*inputs)
    _sync()
    return time.perf_counter() - t0, out


_CYCLES_PER_S: float | None = None


def _hold_gpu(seconds: float) -> None:
    """Keep the GPU busy for about `seconds` (a spin kernel), so that everything the host
    enqueues next is already queued when the GPU reaches it: the events that follow then
    time device work only, never the host's launch overhead."""
    global _CYCLES_PER_S
    if _CYCLES_PER_S is None:
        torch.cuda._sleep(1_000_000)  # warm the clocks a little before calibrating
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        torch.cuda._sleep(2_000_000)
        e.record()
        _sync()
        _CYCLES_PER_S = 2_000_000 / (s.elapsed_time(e) / 1e3)
    torch.cuda._sleep(int(seconds * _CYCLES_PER_S))


def _host_s(fn: Callable[[], Any], n: int) -> float:
    """Host time to enqueue one call (the GPU may still be running them)."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def _estimate_call_s(fn: Callable[[], Any], warmup_ms: float) -> tuple[float, float]:
    """Warm up for about warmup_ms; return (device time of one call, host time to enqueue one)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    _sync()
    host = _host_s(fn, 3)
    _sync()
    start.record()
    fn()
    end.record()
    _sync()
    rough = max(start.elapsed_time(end) / 1e3, host, 1e-7)
    n = int(min(max(warmup_ms / 1e3 / rough, 1), 1000))
    host = _host_s(fn, n)
    _sync()
    n = min(n, 200)
    _hold_gpu(1.5 * n * host + 50e-6)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    _sync()
    return max(start.elapsed_time(end) / 1e3 / n, 1e-8), host


def time_providers(
    providers: dict[str, Callable[..., Any]],
    make_inputs: Callable[[], tuple],
    config: TimingConfig | None = None,
    compile_s: dict[str, float] | None = None,
) -> dict[str, Measurement]:
    """Time each provider fn(*inputs) on the current CUDA device; see the module doc.

    `compile_s` gives the first-call times where the caller already made the first
    calls (harness.perfcase checks outputs with them); otherwise they are made here.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("device timing needs a CUDA GPU")
    cfg = config or TimingConfig()
    inputs = make_inputs()

    compile_s = dict(compile_s or {})
    est_s: dict[str, float] = {}
    host_s: dict[str, float] = {}
    for name, fn in providers.items():
        if name not in compile_s:
            compile_s[name] = first_call_s(fn, inputs)[0]
        est_s[name], host_s[name] = _estimate_call_s(lambda fn=fn: fn(*inputs), cfg.warmup_ms)

    mode = cfg.mode
    if mode == "auto":
        mode = "graph" if min(est_s.values()) < cfg.graph_threshold_s else "events"
    note = ""
    if mode == "graph":
        try:
            result = _time_graphs(providers, inputs, make_inputs, est_s, compile_s, cfg)
            for n, m in result.items():
                m.host_s = host_s[n]
            return result
        except Exception as exc:  # a provider that cannot be captured: fall back, say so
            torch.cuda.synchronize()
            note = f"graph capture failed ({type(exc).__name__}: {exc}); timed with events"
    result = _time_events(providers, inputs, est_s, host_s, compile_s, cfg)
    for n, m in result.items():
        m.note = note
        m.host_s = host_s[n]
    return result


class _L2Flush:
    """Evicts the L2 before a timed call, outside the events (TimingConfig.flush)."""

    def __init__(self, how: str):
        if how not in ("read", "write"):
            raise ValueError(f"L2 flush must be 'read' or 'write', got {how!r}")
        self.how = how
        self.buf = torch.ones(2 * l2_cache_bytes() // 4, dtype=torch.int32, device="cuda")
        self.sink = torch.empty((), dtype=torch.int32, device="cuda")

    def __call__(self):
        if self.how == "write":
            self.buf.zero_()
        else:
            torch.amax(self.buf, out=self.sink)  # reads the whole buffer, writes 4 bytes


def _interleaved(names, want, before, call) -> dict[str, list]:
    """Rounds over the providers, rotating their order each round, until each has its
    `want` samples: before(n) runs outside the events, call(n) between them."""
    events: dict[str, list] = {n: [] for n in names}
    rnd = 0
    while any(len(events[n]) < want[n] for n in names):
        k = rnd % len(names)
        for n in names[k:] + names[:k]:
            if len(events[n]) >= want[n]:
                continue
            before(n)
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            call(n)
            e.record()
            events[n].append((s, e))
        rnd += 1
    _sync()
    return events


def _time_events(providers, inputs, est_s, host_s, compile_s, cfg) -> dict[str, Measurement]:
    flush = None
    if cfg.cold_l2:
        flush = _L2Flush(cfg.flush)
    want = {
        n: int(min(max(cfg.rep_ms / 1e3 / est_s[n], cfg.min_samples), cfg.max_samples))
        for n in providers
    }
    names = list(providers)

    def before(n):
        _hold_gpu(2 * host_s[n] + 20e-6)  # flush + events + the call, all queued in time
        if flush is not None:
            flush()

    events = _interleaved(names, want, before, lambda n: providers[n](*inputs))
    return {
        n: Measurement(
            samples_s=[s.elapsed_time(e) / 1e3 for s, e in events[n]],
            mode="events",
            cold_l2=flush is not None,
            flush=flush.how if flush is not None else None,
            calls_per_sample=1,
            compile_time_s=compile_s[n],
        )
        for n in names
    }


def _time_graphs(providers, inputs, make_inputs, est_s, compile_s, cfg) -> dict[str, Measurement]:
    per_copy = max(tensor_bytes(inputs), 1)
    # Enough calls per replay that one replay lasts well past the event resolution.
    calls = max(int(50e-6 / min(est_s.values())), 1)
    cold = False
    copies = [inputs]
    if cfg.cold_l2:
        need = -(-2 * l2_cache_bytes() // per_copy)  # ceil
        n_copies = min(need, MAX_GRAPH_COPIES, max(MAX_COPY_BYTES // per_copy, 1))
        cold = n_copies >= need
        copies += [make_inputs() for _ in range(n_copies - 1)]
        calls = max(calls, n_copies)
    calls = min(calls, MAX_GRAPH_COPIES)

    graphs = {}
    for name, fn in providers.items():
        # Warm-up on a side stream is what torch.cuda.graph expects before capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn(*copies[0])
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(calls):
                fn(*copies[i % len(copies)])
        g.replay()
        graphs[name] = g
    _sync()

    names = list(providers)
    want = {
        n: int(min(max(cfg.rep_ms / 1e3 / (est_s[n] * calls), cfg.min_samples), 200))
        for n in names
    }
    events = _interleaved(names, want, lambda n: None, lambda n: graphs[n].replay())
    note = "" if cold or not cfg.cold_l2 else (
        f"inputs of {per_copy} B need more than {MAX_GRAPH_COPIES} copies to exceed 2x L2"
    )
    out = {
        n: Measurement(
            samples_s=[s.elapsed_time(e) / 1e3 / calls for s, e in events[n]],
            mode="graph",
            cold_l2=cold,
            calls_per_sample=calls,
            compile_time_s=compile_s[n],
            note=note,
        )
        for n in names
    }
    del graphs
    return out


def time_one(fn: Callable[[], Any], *, warmup_ms: float = 25.0, rep_ms: float = 200.0) -> list[float]:
    """Samples (seconds) of one large operation, warm L2: used for ceilings."""
    _estimate_call_s(fn, warmup_ms)
    est, _ = _estimate_call_s(fn, 1.0)
    n = int(min(max(rep_ms / 1e3 / est, 5), 500))
    pairs = []
    for _ in range(n):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        pairs.append((s, e))
    _sync()
    return [s.elapsed_time(e) / 1e3 for s, e in pairs]
