"""Perf cases: one shape and dtype of one operation, every implementation timed together.

A test file declares its grid and its providers (`perf_bench`, `Provider`: below) and
parametrizes over (case, provider); `PerfSession.run` (harness/pytest_plugin.py) is the one
place a case's providers, its kernel included, are called. The first test of
a case times all its providers in one interleaved run (harness.timing); every test then
records its own provider's samples into pytest-benchmark's statistics, with the
`extra_info` keys docs/measurement.md documents. Before timing, every provider's output is checked
against the case's reference, so that nothing fast-because-wrong is ever recorded.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from kernels.platform import PDL_ENV  # the variable the kernels read at every launch

from .metrics import Cost, derive_metrics
from .targets import NOT_SELECTED
from .timing import Measurement, TimingConfig, first_call_s, l2_cache_bytes, time_providers
from kernels.providers import ProviderUnavailable  # raised by baselines, caught here


@dataclass
class PerfCase:
    op: str                                   # operation, e.g. "rmsnorm"
    shape: dict                               # e.g. {"rows": 4096, "hidden": 4096}
    dtype: torch.dtype
    make_inputs: Callable[[], tuple]          # fresh random inputs on the GPU
    cost: Cost
    reference: Callable[..., Any]             # fn(*inputs) -> output(s), float32 or better
    rtol: float                               # allowed ||out - ref|| / ||ref|| per output
    kernel: str = "triton"                    # which provider is the suite's own kernel
    unavailable: dict[str, str] = field(default_factory=dict)  # provider -> reason
    timing_mode: str | None = None            # force "graph" or "events" for this case
    kernel_info: dict = field(default_factory=dict)  # more facts for the kernel's extra_info
    unchecked: tuple = ()                     # baselines timed for scale whose output is another
                                              # function (e.g. a GEMM alone): not compared
    # Programmatic dependent launch (kernels/launch.py) lets a kernel launch while the one
    # before it finishes. A case that times one kernel runs without it. A case that times a
    # chain of kernels runs with it, as a model would: a decoder layer, or an operation of
    # two kernels such as the split-KV decode and the merge of its chunks. Every suite
    # kernel waits (pdl_wait) for all earlier work before it reads anything that work may
    # still be writing, and before it writes, so one call's work never overlaps the next's.
    pdl: bool = False
    # Bytes every call reads from state the providers hold rather than from the inputs (a
    # weight quantized ahead of time, a baseline's own packed copy of it). Graph timing
    # (timing.py) makes L2 cold by rotating copies of the inputs only, so held bytes that
    # fit in L2 would be read from L2 on every replay: such a case is timed with events,
    # the L2 flushed before each call (timing_config_for).
    held_bytes: int = 0
    # Where a whole reference is out of reach (attention over 128K tokens: T^2 scores), the
    # index every output is cut with before the check; the reference computes that part only.
    output_slice: tuple | None = None
    # name -> fn(*inputs), the kernel first. Filled by a PerfBench from its declared providers.
    providers: dict[str, Callable[..., Any]] = field(default_factory=dict, kw_only=True)
    state: Any = field(default=None, kw_only=True)  # what the providers' factories read (a layer, a weight)

    @property
    def case_id(self) -> str:
        dims = ",".join(f"{k}={v}" for k, v in self.shape.items())
        return f"{self.op}/{dims}/{dtype_name(self.dtype)}"


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32",
            torch.float64: "fp64", torch.int8: "int8"}.get(dtype, str(dtype).replace("torch.", ""))


# ---- declared providers: a perf file is its grid plus its providers ----------------------

@dataclass(frozen=True)
class Provider:
    """One implementation a perf case times, declared once per file.

    Give either `fn`, the provider itself (fn(*inputs)), or `make`, a factory called once per
    case with the case's `state` that returns fn(*inputs) (a torch.compile per case, a layer
    built from the case's weights); `make` may raise ProviderUnavailable with the reason.
    needs: modules that must import ("torchao", or a tuple), or a check returning None or why
        not; looked at once per session, before any case is built.
    when: which grid points have this provider: None or True for all; False leaves it out of
        that point's tests; a string keeps the test and skips it with that reason.
    kernel: the suite's own kernel (exactly one per bench; it has no needs or when).
    checked: False for a baseline timed for scale whose output is another function (a GEMM
        alone): its shape and finiteness are checked, not its values.
    """
    name: str
    fn: Callable[..., Any] | None = None
    make: Callable[[Any], Callable[..., Any]] | None = None
    needs: str | tuple[str, ...] | Callable[[], str | None] = ()
    when: Callable[[Any], bool | str] | None = None
    kernel: bool = False
    checked: bool = True

    def __post_init__(self):
        if (self.fn is None) == (self.make is None):
            raise ValueError(f"provider {self.name!r}: give exactly one of fn= (the provider) or make= (its factory)")

    def missing(self) -> str | None:
        """Why this provider cannot run on this machine, or None."""
        return _missing(self.needs)

    def at(self, point) -> bool | str:
        """True: timed at this grid point; False: not one of its tests; a string: skipped, with why."""
        if self.when is None:
            return True
        got = self.when(point)
        return got if isinstance(got, str) else bool(got)


_MISSING: dict[Any, str | None] = {}  # needs -> why not: every library imported at most once


def _missing(needs) -> str | None:
    if needs in _MISSING:
        return _MISSING[needs]
    why = None
    if callable(needs):
        why = needs()
    else:
        for module in (needs,) if isinstance(needs, str) else needs:
            try:
                importlib.import_module(module)
            except Exception as exc:  # ImportError, or a build that does not match this torch
                why = f"{module} does not import: {type(exc).__name__}: {exc}"
                break
    _MISSING[needs] = why
    return why


class Point(dict):
    """One grid point: its fields by name (point["m"]) or attribute (point.m); hashable."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __hash__(self):
        return hash(tuple(self.items()))


@dataclass(frozen=True)
class CaseSpec:
    """A test's parameter: one bench at one grid point, built into its PerfCase on demand."""
    bench: "PerfBench"
    point: Point

    def build(self) -> PerfCase:
        return self.bench.case(self.point)


_LAST_CASE: list = []  # [(key, case)]: tests of one case run back to back, so one case is kept


class PerfBench:
    """A family's perf cases of one operation: a grid, a test id per point, the declared
    providers, and `setup(**point)`, which returns the PerfCase (inputs, reference, cost,
    rtol...) without providers; the bench adds the providers available at that point."""

    def __init__(self, setup: Callable[..., PerfCase], grid: Callable[[bool], list[dict]], id: str,
                 providers: list[Provider]):
        self.setup, self.grid, self.id_format, self.providers = setup, grid, id, list(providers)
        self.name = getattr(setup, "__name__", "bench")
        names = [p.name for p in self.providers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"perf bench {self.name}: provider {dup[0]!r} is declared more than once")
        kernels = [p for p in self.providers if p.kernel]
        if len(kernels) != 1:
            raise ValueError(f"perf bench {self.name}: {len(kernels)} providers have kernel=True; "
                             f"declare exactly one (the suite's own kernel)")
        self.kernel = kernels[0]
        if self.kernel.needs or self.kernel.when is not None:
            raise ValueError(f"perf bench {self.name}: the kernel {self.kernel.name!r} takes no needs= or when=: "
                             f"it runs wherever the suite runs")
        self.selected: dict[str, frozenset] | None = None

    def select(self, chosen: dict[str, set] | None) -> None:
        """The providers whose tests run this session, by point id (pytest -k, a shard): the
        others are neither built nor timed. The kernel runs with its case whether or not its
        own test was selected: every row's speedup is against it. None: every provider."""
        self.selected = None if chosen is None else {pid: frozenset(names) for pid, names in chosen.items()}
        _LAST_CASE.clear()  # a case kept from before was built for another selection

    def points(self, sweep: bool = False) -> list[Point]:
        return [Point(p) for p in self.grid(sweep)]

    def point_id(self, point) -> str:
        return self.id_format.format(**point)

    def providers_at(self, point) -> list[Provider]:
        point = Point(point)
        return [p for p in self.providers if p.at(point) is not False]

    def params(self, sweep: bool = False) -> list:
        """pytest params (spec, provider), point by point, providers in declared order."""
        import pytest

        out, seen = [], set()
        for point in self.points(sweep):
            pid = self.point_id(point)
            if pid in seen:
                raise ValueError(f"perf bench {self.name}: two grid points have the test id {pid!r}")
            seen.add(pid)
            spec = CaseSpec(self, point)
            out += [pytest.param(spec, p.name, id=f"{pid}-{p.name}") for p in self.providers_at(point)]
        return out

    def case(self, point) -> PerfCase:
        """The PerfCase of a point, built once: the last one is kept for the next test."""
        key = (id(self), self.point_id(point))
        if _LAST_CASE and _LAST_CASE[0][0] == key:
            return _LAST_CASE[0][1]
        _LAST_CASE.clear()  # release the previous case's GPU tensors before allocating
        case = self._build(Point(point))
        _LAST_CASE.append((key, case))
        return case

    def _build(self, point) -> PerfCase:
        case = self.setup(**point)
        case.kernel = self.kernel.name
        case.unchecked = tuple(p.name for p in self.providers if not p.checked)
        chosen = None if self.selected is None else self.selected.get(self.point_id(point), frozenset())
        for p in self.providers_at(point):
            if chosen is not None and not p.kernel and p.name not in chosen:
                case.unavailable[p.name] = NOT_SELECTED
                continue
            why = p.at(point)
            why = why if isinstance(why, str) else p.missing()
            if why is not None:
                case.unavailable[p.name] = why
                continue
            try:
                case.providers[p.name] = p.fn if p.fn is not None else p.make(case.state)
            except ProviderUnavailable as exc:
                if p.kernel:
                    raise
                case.unavailable[p.name] = str(exc)
            except torch.OutOfMemoryError as exc:  # a baseline that cannot be built costs only its own row
                if p.kernel:
                    raise
                torch.cuda.empty_cache()
                case.unavailable[p.name] = f"out of memory building it: {str(exc).splitlines()[0]}"
        return case

    def check_declaration(self, sweep: bool = False) -> None:
        """What can be checked without a GPU: the points' test ids and setup's arguments."""
        params = inspect.signature(self.setup)
        for point in self.points(sweep):
            params.bind(**point)  # a grid field setup does not take is a TypeError here
            self.point_id(point)


def perf_bench(*, grid: Callable[[bool], list[dict]], id: str, providers: list[Provider]):
    """Declares a perf bench: decorates its setup(**point) -> PerfCase (tritonbench's
    register_benchmark in spirit: the providers are declared, not wired).

        @perf_bench(grid=lambda sweep: [dict(rows=r) for r in ROWS], id="op-rows{rows}",
                    providers=[Provider("triton", my_kernel, kernel=True),
                               Provider("eager", eager_op),
                               Provider("lib", make=lambda s: lib_op, needs="lib")])
        def op(rows): return PerfCase(op="op", shape={"rows": rows}, ...)
    """
    def declare(setup):
        return PerfBench(setup, grid, id, providers)
    return declare


def perf_tests(*benches: PerfBench):
    """The module's pytest_generate_tests: the tests taking (spec, provider) get every point
    of the benches, in order, with their providers; --perf-sweep gives the sweep grids."""
    def pytest_generate_tests(metafunc):
        if not {"spec", "provider"} <= set(metafunc.fixturenames):
            return
        sweep = bool(metafunc.config.getoption("perf_sweep"))
        metafunc.parametrize("spec,provider", [p for b in benches for p in b.params(sweep)])
    return pytest_generate_tests


def _as_list(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [o for o in out if isinstance(o, torch.Tensor)]


def check_providers(case: PerfCase, inputs: tuple) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """First call of each provider, compared with the reference on the case's inputs.

    Returns (provider -> error text, baseline -> why it refused these inputs, provider ->
    first-call seconds). The first call is where torch.compile compiles and Triton
    autotunes: its time is `compile_time_s`.
    """
    ref = _as_list(case.reference(*inputs))
    errors, refused, first_s = {}, {}, {}
    for name, fn in case.providers.items():
        try:
            first_s[name], out = first_call_s(fn, inputs)
            got = _as_list(out)
            if case.output_slice is not None:
                got = [g[case.output_slice] for g in got]
        except Exception as exc:
            reason = f"raised {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            if name == case.kernel or isinstance(exc, NameError):
                # the suite's own kernel must run, and a name missing from a baseline's code is
                # a bug in the suite, not a refusal: a failure either way
                errors[name] = reason
            else:
                refused[name] = reason  # a baseline that refuses these inputs here: skipped, with why
            continue
        if len(got) != len(ref):
            errors[name] = f"returned {len(got)} tensors, the reference {len(ref)}"
            continue
        for i, (g, r) in enumerate(zip(got, ref)):
            if g.shape != r.shape:
                errors[name] = f"output {i} has shape {tuple(g.shape)}, expected {tuple(r.shape)}"
                break
            g64, r64 = g.double(), r.double()
            if not torch.isfinite(g64).all():
                errors[name] = f"output {i} has non-finite values"
                break
            if name in case.unchecked:  # another function: its shape and finiteness only
                continue
            denom = r64.norm().item() or 1.0
            rel = (g64 - r64).norm().item() / denom
            if rel > case.rtol:
                errors[name] = f"output {i}: ||out-ref||/||ref|| = {rel:.3g} > {case.rtol:g}"
                break
    return errors, refused, first_s


@dataclass
class CaseResult:
    measurements: dict[str, Measurement]
    errors: dict[str, str]
    unavailable: dict[str, str]  # baseline -> why it did not run: known before, or refused here
    records: dict[str, dict]  # provider -> extra_info


@contextlib.contextmanager
def _pdl_setting(on: bool):
    before = os.environ.get(PDL_ENV)
    os.environ[PDL_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PDL_ENV)
        else:
            os.environ[PDL_ENV] = before


def run_case(case: PerfCase, config: TimingConfig, ceilings: dict | None) -> CaseResult:
    # KERNELS_PDL=0 set by the user turns PDL off for every case (to time layers without it).
    pdl = case.pdl and os.environ.get(PDL_ENV, "1") != "0"
    with _pdl_setting(pdl):
        result = _run_case(case, config, ceilings)
    for info in result.records.values():
        info["pdl"] = pdl
    return result


def timing_config_for(case: PerfCase, config: TimingConfig, l2_bytes: int) -> TimingConfig:
    """The timing of this case: its forced mode if it has one; with the mode auto, events (a
    flush before every call) where held bytes could stay in L2 across a graph's calls,
    under 2x the L2 as for rotated inputs; else the configured mode (auto: graph for calls
    under 20 us; a mode given explicitly, --timing, is kept)."""
    if case.timing_mode:
        return dataclasses.replace(config, mode=case.timing_mode)
    if config.cold_l2 and config.mode == "auto" and 0 < case.held_bytes < 2 * l2_bytes:
        return dataclasses.replace(config, mode="events")
    return config


def _run_case(case: PerfCase, config: TimingConfig, ceilings: dict | None) -> CaseResult:
    inputs = case.make_inputs()
    errors, refused, first_s = check_providers(case, inputs)
    del inputs
    unavailable = {**case.unavailable, **refused}
    ok = {n: fn for n, fn in case.providers.items() if n not in errors and n not in unavailable}
    config = timing_config_for(case, config, l2_cache_bytes())
    measurements = time_providers(ok, case.make_inputs, config, first_s, kernel=case.kernel) if ok else {}
    for name in [n for n, m in measurements.items() if not m.samples_s]:
        errors[name] = (f"no clean sample ({measurements.pop(name).note}): every call waited on the host, a "
                        "device-to-host sync inside it (.item(), bool(tensor), a copy from pageable memory) or "
                        "launches slower than its GPU work")
    torch.cuda.empty_cache()
    return CaseResult(measurements, errors, unavailable, build_records(case, measurements, ceilings, unavailable))


def build_records(case: PerfCase, measurements: dict[str, Measurement], ceilings: dict | None,
                  unavailable: dict[str, str]) -> dict:
    """The extra_info of every timed provider (docs/measurement.md, "Result fields")."""
    medians = {n: m.median_s for n, m in measurements.items()}
    baselines = {n: t for n, t in medians.items() if n != case.kernel}
    records = {}
    for name, m in measurements.items():
        info = {
            "case": case.case_id,
            "op": case.op,
            "provider": name,
            "role": "kernel" if name == case.kernel else "baseline",
            "shape": dict(case.shape),
            "dtype": dtype_name(case.dtype),
            **derive_metrics(case.cost, m.median_s, ceilings),
            "timing": m.timing,
            "l2_flush": m.flush,
            "calls_per_sample": m.calls_per_sample,
            "timing_mode_decided_by": m.mode_decided_by,
            "discarded_samples": m.discarded,
            "compile_time_s": m.compile_time_s,
            "host_overhead_s": m.host_s,
            "median_s": m.median_s,
            "iqr_s": m.iqr_s,
            "flops": case.cost.flops,
            "bytes": case.cost.bytes,
        }
        if m.note:
            info["timing_note"] = m.note
        if "host-bound" in m.note:  # too few clean samples: the gate will not judge this entry
            info["timing_flag"] = m.note
        if name == case.kernel:
            info["speedups"] = {b: t / m.median_s for b, t in baselines.items()}
            best = min(baselines, key=baselines.get) if baselines else None
            info["best_baseline"] = best
            info["speedup_vs_best_baseline"] = baselines[best] / m.median_s if best else None
            info["unavailable_baselines"] = dict(unavailable)
            info.update(case.kernel_info)
        records[name] = info
    return records


def record_into_benchmark(benchmark, samples_s: list[float], extra_info: dict) -> None:
    """Put device samples into pytest-benchmark's own stats (a pinned API: README, "Dependencies and pins"): one
    datum per sample, the time of one call; `iterations` is the calls a sample averages
    (a graph replay's), and the timer named is the one that took them."""
    calls = int(extra_info.get("calls_per_sample") or 1)
    mode = str(extra_info.get("timing", "events")).split("+")[0]
    benchmark._timer = f"harness.timing: CUDA events around {'a CUDA-graph replay' if mode == 'graph' else 'one call'}"
    stats = benchmark._make_stats(calls)
    for s in samples_s:
        stats.update(s * calls)  # pytest-benchmark divides each datum by iterations: hand it the sample's whole time
    benchmark._mode = "harness.device_timer"
    benchmark.extra_info.update(extra_info)
