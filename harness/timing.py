"""Device timing: every implementation of one case, timed in the same process, interleaved.

Protocol:
- The first call of each implementation compiles / autotunes; it is timed on the host
  (with a device sync) and recorded apart as `compile_time_s`, never as a sample.
- Then a warm-up of `warmup_ms`, from which the time of one call is estimated (a call
  that alone lasts the warm-up is its own estimate).
- Samples: `rep_ms` of them, at least `min_samples`; a call so long that `min_samples`
  would take over `long_samples_s` gets as many as fit in that, at least 3 (a dense prefill
  at 1M tokens, seconds a call). Their spread is recorded with them (`iqr_s`).
- If the fastest baseline of the case runs under `graph_threshold_s` (launch overhead
  would dominate), every implementation of the case is captured in a CUDA
  graph that calls it once on each of K rotating input copies, and one sample is one
  replay's time / K. K is chosen so that the copies together exceed twice the L2, so
  every call reads its inputs from device memory (cold L2); when that would take too
  many copies, the timing says `warm_l2`.
- Otherwise each sample is one call between two CUDA events, after the L2 is flushed
  outside the events (TimingConfig.flush: by default a 2x-L2 buffer is read, leaving clean
  lines; "write" zeroes it, as triton's do_bench does). Before each sample a spin
  kernel holds the GPU for longer than the host takes to enqueue the sample, so the
  events time device work only: host launch overhead is reported apart (`host_s`).
  Graph replays are held the same way.
- Every sample is checked: an event recorded right after the hold is queried once the
  host has enqueued the whole sample; if the GPU had already passed it, the GPU may have
  waited on the host inside the sample, which is then discarded, the hold lengthened
  toward the host time that sample took (at most doubled, capped), and the sample taken
  again (`discarded_samples`). A call of more kernels than the GPU queues blocks the host
  until the hold ends, so none of its samples is clean: it is then timed as one call
  replayed in a CUDA graph (warm L2, said in its note); one that cannot be captured (a
  host sync inside) stays flagged host-bound.
- The kernel's own speed never decides how it is timed: the mode is chosen on the
  baselines' times (the kernel's only when no baseline runs), so a kernel that slows
  down is timed as before and the gate can still compare it.
- Rounds interleave the implementations (rotating the order each round), so a GPU that
  slows down or speeds up during the run affects all of them alike.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

GRAPH_THRESHOLD_S = 20e-6
MAX_GRAPH_COPIES = 8192
MAX_COPY_BYTES = 2 << 30  # never hold more than 2 GiB of rotating input copies
MAX_REPLAY_S = 50e-3  # calls captured in one graph: at most about this long a replay


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
    discarded: int = 0            # samples in which the GPU may have waited on the host, retaken
    mode_decided_by: str = ""     # whose estimated times chose the mode (auto)

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
    # A long call's samples stop at about this much device time, never under 3: ten samples
    # of a dense prefill at 1M tokens, seconds a call, would be minutes a provider.
    long_samples_s: float = 60.0
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
MAX_RETAKES = 6  # rounds of retaking contaminated samples before the case is flagged
MAX_HOLD_S = 1e-3  # a discard never lengthens a hold past this (or 4x the first hold)


def longer_hold(hold_s: float, first_hold_s: float, enqueue_s: float) -> float:
    """The hold after a discarded sample whose host work took enqueue_s: long enough to
    cover that work, but at most doubled per discard and capped. One host hiccup (a GC
    pause, a page fault) would otherwise lengthen every later hold of the provider for
    good: a 50 ms pause made each of 8000 read-curve samples spin 100 ms on the GPU."""
    cap = max(MAX_HOLD_S, 4 * first_hold_s)
    return max(hold_s, min(2 * enqueue_s + 20e-6, 2 * hold_s, cap))


def calibrate_hold() -> float:
    """Spin-kernel cycles per second at the clocks the GPU runs now. Calibrated again for
    every case: calibrated once, at a fresh machine's idle clocks, the hold ran short
    once the clocks rose, and host time leaked into the samples."""
    global _CYCLES_PER_S
    torch.cuda._sleep(1_000_000)  # bring the clocks up before measuring them
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    torch.cuda._sleep(4_000_000)
    e.record()
    _sync()
    _CYCLES_PER_S = 4_000_000 / (s.elapsed_time(e) / 1e3)
    return _CYCLES_PER_S


def _hold_gpu(seconds: float) -> None:
    """Keep the GPU busy for about `seconds` (a spin kernel), so that everything the host
    enqueues next is already queued when the GPU reaches it: the events that follow then
    time device work only, never the host's launch overhead (checked per sample)."""
    if _CYCLES_PER_S is None:
        calibrate_hold()
    torch.cuda._sleep(int(seconds * _CYCLES_PER_S))


def _host_s(fn: Callable[[], Any], n: int) -> float:
    """Host time to enqueue one call (the GPU may still be running them)."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def sample_count(cfg: TimingConfig, est_s: float, cap: int) -> int:
    """Samples of a call of est_s: rep_ms of them, at least min_samples, at most cap; where
    min_samples would take over long_samples_s, as many as fit in it, at least 3."""
    floor = cfg.min_samples
    if est_s * floor > cfg.long_samples_s:
        floor = max(3, math.ceil(cfg.long_samples_s / est_s))
    return int(min(max(cfg.rep_ms / 1e3 / est_s, floor), cap))


def _estimate_call_s(fn: Callable[[], Any], warmup_ms: float) -> tuple[float, float]:
    """Warm up for about warmup_ms; return (device time of one call, host time to enqueue one).
    A call that alone lasts the warm-up is its own estimate (a seconds-long call runs once)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    _sync()
    t0 = time.perf_counter()
    start.record()
    fn()
    end.record()
    host = time.perf_counter() - t0
    _sync()
    call_ms = start.elapsed_time(end)
    if call_ms >= warmup_ms and host * 1e3 < call_ms / 2:  # long on the device, not waiting on the host
        return call_ms / 1e3, host
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
    kernel: str | None = None,
) -> dict[str, Measurement]:
    """Time each provider fn(*inputs) on the current CUDA device; see the module doc.

    `compile_s` gives the first-call times where the caller already made the first
    calls (harness.perfcase checks outputs with them); otherwise they are made here.
    `kernel` names the provider under test: its own time never chooses the mode.
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

    calibrate_hold()
    mode, decided_by = cfg.mode, "option"
    if mode == "auto":
        deciders = [n for n in providers if n != kernel] or list(providers)
        decided_by = "baselines" if deciders != list(providers) or kernel is None else "kernel (no baseline ran)"
        mode = "graph" if min(est_s[n] for n in deciders) < cfg.graph_threshold_s else "events"
    note = ""
    result = None
    if mode == "graph":
        try:
            result = _time_graphs(providers, inputs, make_inputs, est_s, host_s, compile_s, cfg)
        except Exception as exc:  # a provider that cannot be captured: fall back, say so
            torch.cuda.synchronize()
            note = f"graph capture failed ({type(exc).__name__}: {exc}); timed with events"
    if result is None:
        result = _time_events(providers, inputs, est_s, host_s, compile_s, cfg)
        for n in [n for n, m in result.items() if not m.samples_s]:
            replayed = _replayed_alone(n, providers[n], inputs, make_inputs, est_s, host_s, compile_s, cfg)
            if replayed is not None:
                result[n] = replayed
    for n, m in result.items():
        m.note = "; ".join(x for x in (note, m.note) if x)
        m.host_s = host_s[n]
        m.mode_decided_by = decided_by
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


def _interleaved(names, want, before, call, hold_s) -> tuple[dict[str, list[float]], dict[str, int], str]:
    """Rounds over the providers, rotating their order each round, until each has its
    `want` clean samples: before(n) runs outside the events, call(n) between them, after
    a hold of hold_s[n]. A sample whose hold the GPU had passed before the host finished
    enqueueing it is discarded and retaken with a longer hold (module doc). Returns the
    samples (seconds), the count discarded per provider, and a note if some stayed short."""
    samples: dict[str, list[float]] = {n: [] for n in names}
    discarded = {n: 0 for n in names}
    hold = dict(hold_s)
    for attempt in range(MAX_RETAKES + 1):
        pending = {n: want[n] - len(samples[n]) for n in names}
        if not any(v > 0 for v in pending.values()):
            break
        taken: dict[str, list] = {n: [] for n in names}
        rnd = 0
        while any(len(taken[n]) < pending[n] for n in names):
            k = rnd % len(names)
            for n in names[k:] + names[:k]:
                if len(taken[n]) >= pending[n]:
                    continue
                _hold_gpu(hold[n])
                held = torch.cuda.Event()
                held.record()
                t0 = time.perf_counter()
                before(n)
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                call(n)
                e.record()
                enqueue_s = time.perf_counter() - t0
                clean = not held.query()  # the GPU was still in the hold: all was queued in time
                taken[n].append((s, e, clean))
                if not clean:  # hold longer, toward what this sample's host work took
                    hold[n] = longer_hold(hold[n], hold_s[n], enqueue_s)
            rnd += 1
        _sync()
        for n in names:
            for s, e, clean in taken[n]:
                if clean:
                    samples[n].append(s.elapsed_time(e) / 1e3)
                else:
                    discarded[n] += 1
    short = [f"{n} ({len(samples[n])} of {want[n]})" for n in names if len(samples[n]) < want[n]]
    note = ("host-bound: clean samples still short after retakes for " + ", ".join(short)) if short else ""
    return samples, discarded, note


def _time_events(providers, inputs, est_s, host_s, compile_s, cfg) -> dict[str, Measurement]:
    flush = None
    if cfg.cold_l2:
        flush = _L2Flush(cfg.flush)
    want = {n: sample_count(cfg, est_s[n], cfg.max_samples) for n in providers}
    names = list(providers)
    hold = {n: 2 * host_s[n] + 20e-6 for n in names}  # flush + events + the call, all queued in time
    samples, discarded, note = _interleaved(names, want, lambda n: flush() if flush is not None else None,
                                            lambda n: providers[n](*inputs), hold)
    return {
        n: Measurement(
            samples_s=samples[n],
            mode="events",
            cold_l2=flush is not None,
            flush=flush.how if flush is not None else None,
            calls_per_sample=1,
            compile_time_s=compile_s[n],
            discarded=discarded[n],
            note=note if len(samples[n]) < want[n] else "",
        )
        for n in names
    }


def _capture(g, body) -> None:
    """body() captured into the CUDA graph g. A capture that fails (a host sync inside)
    leaves torch's CUDA generator marked as capturing, and every later random draw on the
    GPU then raises ("Offset increment outside graph capture"): its state is put back."""
    gen = torch.cuda.default_generators[torch.cuda.current_device()]
    saved = gen.clone_state()
    try:
        with torch.cuda.graph(g):
            body()
    except Exception:
        gen.graphsafe_set_state(saved)
        raise


def graph_plan(per_copy: int, est_s: list[float], cold_l2: bool, l2_bytes: int) -> tuple[int, int, bool]:
    """(calls per replay, input copies, cold) for a graph sample: enough calls that one replay
    lasts well past the event resolution, rotating over enough input copies to exceed 2x L2
    when asked, but never more calls than fill MAX_REPLAY_S for the slowest provider. A long
    call (a whole model's step on token ids of a few KB) would otherwise be captured
    thousands of times: minutes of capture for a sample that needs one call."""
    calls = max(int(50e-6 / min(est_s)), 1)
    fit = max(int(MAX_REPLAY_S / max(est_s)), 1)
    copies, cold = 1, False
    if cold_l2:
        need = -(-2 * l2_bytes // per_copy)  # ceil
        copies = min(need, MAX_GRAPH_COPIES, max(MAX_COPY_BYTES // per_copy, 1), fit)
        cold = copies >= need
        calls = max(calls, copies)
    return min(calls, MAX_GRAPH_COPIES, fit), copies, cold


def _time_graphs(providers, inputs, make_inputs, est_s, host_s, compile_s, cfg) -> dict[str, Measurement]:
    per_copy = max(tensor_bytes(inputs), 1)
    calls, n_copies, cold = graph_plan(per_copy, list(est_s.values()), cfg.cold_l2, l2_cache_bytes())
    copies = [inputs] + [make_inputs() for _ in range(n_copies - 1)]

    graphs = {}
    for name, fn in providers.items():
        # Warm-up on a side stream is what torch.cuda.graph expects before capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn(*copies[0])
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        _capture(g, lambda: [fn(*copies[i % len(copies)]) for i in range(calls)])
        g.replay()
        graphs[name] = g
    _sync()

    names = list(providers)
    want = {n: sample_count(cfg, est_s[n] * calls, 200) for n in names}
    # A replay is one launch; hold the GPU past its host cost like an events sample.
    samples, discarded, short = _interleaved(names, want, lambda n: None, lambda n: graphs[n].replay(),
                                             {n: 100e-6 for n in names})
    note = "" if cold or not cfg.cold_l2 else (
        f"warm L2: {n_copies} copies of its {per_copy} B inputs do not exceed 2x L2"
    )
    out = {
        n: Measurement(
            samples_s=[x / calls for x in samples[n]],
            mode="graph",
            cold_l2=cold,
            calls_per_sample=calls,
            compile_time_s=compile_s[n],
            discarded=discarded[n],
            note="; ".join(x for x in (note, short if len(samples[n]) < want[n] else "") if x),
        )
        for n in names
    }
    del graphs
    return out


def _replayed_alone(name, fn, inputs, make_inputs, est_s, host_s, compile_s, cfg) -> Measurement | None:
    """A provider that got no clean events sample, timed again as one call replayed in a CUDA
    graph (warm L2: its inputs are not copied). A call of more kernels than the GPU queues
    (about a thousand: a whole model's eager prefill) blocks the host inside every hold, so
    no events sample can be clean, though the GPU never waits on it; a replay is one launch.
    A call that syncs with the host cannot be captured: None, and it stays host-bound."""
    try:
        m = _time_graphs({name: fn}, inputs, make_inputs, {name: est_s[name]}, {name: host_s[name]},
                         {name: compile_s[name]}, replace(cfg, cold_l2=False))[name]
    except Exception:  # noqa: BLE001 - not capturable (a sync inside): the events verdict stands
        torch.cuda.synchronize()
        return None
    if not m.samples_s:
        return None
    m.note = "; ".join(x for x in ("no clean events sample (more launches than the GPU queues during a hold); "
                                   "one call replayed in a CUDA graph", m.note) if x)
    return m


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


def kernel_share_s(fn: Callable[[], Any], name: str, reps: int = 5) -> float | None:
    """Median seconds one call of fn spends in the GPU kernels whose name contains `name`,
    as the CUDA profiler records them: one stage of a call that launches several kernels
    (the events around the call time all of them). None without a GPU or when no such
    kernel ran."""
    if not torch.cuda.is_available():
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()  # compile, warm
    _sync()
    per_call = []
    for _ in range(reps):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            _sync()
        per_call.append(sum(e.device_time_total for e in prof.events()
                            if name in e.name and e.device_type == torch.autograd.DeviceType.CUDA) / 1e6)
    per_call.sort()
    return per_call[len(per_call) // 2] or None
