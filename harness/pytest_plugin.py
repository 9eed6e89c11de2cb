"""The suite's pytest plugin: lanes, options, hypothesis profiles, the perf fixture,
machine info in every results file, results stored per GPU model, and a summary table."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from . import lanes

DEFAULT_STORAGE = "file://./.benchmarks"


def pytest_addoption(parser):
    g = parser.getgroup("kernel-bench", "LLM inference kernel suite")
    g.addoption("--perf-sweep", action="store_true",
                help="run the long perf sweeps (more shapes and dtypes) besides the default cases")
    g.addoption("--warmup-ms", type=float, default=25.0, help="warm-up per implementation and case (ms)")
    g.addoption("--rep-ms", type=float, default=100.0, help="timed budget per implementation and case (ms)")
    g.addoption("--timing", choices=("auto", "events", "graph"), default="auto",
                help="auto: CUDA-graph replay for cases under 20 us, events otherwise")
    g.addoption("--warm-l2", action="store_true", help="do not flush the L2 between timed calls")
    g.addoption("--l2-flush", choices=("read", "write"), default="read",
                help="read: stream a 2x-L2 buffer (clean lines); write: zero it (leaves dirty lines "
                     "whose write-back the timed call pays, as triton's do_bench does)")
    g.addoption("--remeasure-ceilings", action="store_true", help="measure the GPU ceilings again")
    g.addoption("--partial-results", metavar="PATH",
                help="append each provider's record to PATH (JSON lines) as soon as it is measured: a run "
                     "cut short (a time limit) keeps every case it finished")
    g.addoption("--tune", action="store_true",
                help="search the launch space of each case's kernel instead of timing the case "
                     "(python -m harness tune); winners go into the GPU model's launch table")
    g.addoption("--tune-table", metavar="PATH",
                help="the launch table --tune writes (default kernels/tuned/<gpu>.json)")
    g.addoption("--tune-kernel", action="append", default=[], metavar="NAME",
                help="with --tune: search only this launch space (repeatable)")
    g.addoption("--tune-ranking", action="store_true",
                help="with --tune: print every candidate's time after each search, fastest first")
    g.addoption("--tune-compile-only", action="store_true",
                help="with --tune: run and check every candidate once (filling Triton's compile cache), "
                     "time nothing, write no table; python -m harness tune runs this in parallel first")
    g.addoption("--tune-compile-shard", default=(0, 1), metavar="I/N", type=_shard,
                help="with --tune-compile-only: only candidates I, I+N, I+2N, ... of each launch (python -m "
                     "harness tune runs N such processes at once)")
    g.addoption("--perf-shard", metavar="K/N", type=_shard,
                help="run the K-th of N shares of the perf cases (0 <= K < N; every provider of a case in one "
                     "share): make bench gives each GPU of a machine one share, in its own process")
    g.addoption("--quant-config", metavar="FILE",
                help="torchao-style YAML config: its items become perf cases (tests/perf/quant/test_microbench.py)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Before pytest-benchmark builds its session (its hook is trylast): results of
    # different GPU models never share a folder.
    if getattr(config.option, "benchmark_storage", None) == DEFAULT_STORAGE:
        config.option.benchmark_storage = f"file://./.benchmarks/{lanes.lane_slug()}"
    _load_hypothesis_profile(config)


def _load_hypothesis_profile(config):
    from hypothesis import HealthCheck, settings

    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("ci", max_examples=12, derandomize=True, print_blob=True, **common)
    settings.register_profile("dev", max_examples=30, **common)
    settings.register_profile("nightly", max_examples=300, **common)
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def _shard(text: str) -> tuple[int, int]:
    import argparse

    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes K/N (two ints), got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"K/N needs 0 <= K < N, got {text!r}")
    return k, n


def _perf_spec(item):
    """The CaseSpec of a perf test (one per case, shared by its providers' tests), else None."""
    spec = getattr(getattr(item, "callspec", None), "params", {}).get("spec")
    return spec if spec is not None and "perf" in item.keywords else None


def perf_shard(items, k: int, n: int) -> tuple[list, list]:
    """(kept, dropped): the perf cases dealt round-robin in collection order, the k-th of n
    shares kept, every test of a case (one per provider: they are timed together) in the
    same share; tests that are no perf case are kept."""
    kept, dropped, order = [], [], {}
    for item in items:
        spec = _perf_spec(item)
        if spec is None:
            kept.append(item)
            continue
        index = order.setdefault(id(spec), len(order))
        (kept if index % n == k else dropped).append(item)
    return kept, dropped


def pytest_collection_modifyitems(config, items):
    shard = config.getoption("perf_shard")
    if shard is not None:
        items[:], dropped = perf_shard(items, *shard)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
    gpu = lanes.has_gpu()
    tune = config.getoption("tune")
    for item in items:
        if "perf" in item.keywords and not gpu:
            item.add_marker(pytest.mark.skip(reason=lanes.NO_GPU_PERF_REASON))
        elif "gpu" in item.keywords and not gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        elif tune and _is_baseline_test(item):  # skipped before its case is built (a baseline's set-up costs memory)
            item.add_marker(pytest.mark.skip(reason="--tune: only the suite's kernel is searched"))


def perf_case_count(items) -> int:
    """The perf cases among `items` that will run (each case is one test per provider)."""
    specs = set()
    for item in items:
        spec = _perf_spec(item)
        if spec is not None and not item.get_closest_marker("skip"):
            specs.add(id(spec))
    return len(specs)


def pytest_collection_finish(session):
    from .progress import Progress

    session.config._perf_progress = Progress(perf_case_count(session.items), "cases")
    select_providers(session.items)


def select_providers(items) -> None:
    """Tells each perf bench which of its providers' tests will run, so that a case builds
    and times only those (and its kernel): `-k "t1048576 and (triton or cudnn)"` times two
    providers, not every baseline of the point."""
    chosen: dict = {}
    for item in items:
        spec = _perf_spec(item)
        provider = item.callspec.params.get("provider") if spec is not None else None
        if provider is None:
            continue
        names = chosen.setdefault(spec.bench, {}).setdefault(spec.bench.point_id(spec.point), set())
        if not item.get_closest_marker("skip"):
            names.add(provider)
    for bench, by_point in chosen.items():
        bench.select(by_point)


def _is_baseline_test(item) -> bool:
    """A perf test of a (spec, provider) pair whose provider is not the bench's kernel."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    spec, provider = params.get("spec"), params.get("provider")
    bench = getattr(spec, "bench", None)
    if bench is None or provider is None:
        return False
    return provider != next((p.name for p in bench.providers if p.kernel), provider)


def pytest_report_header(config):
    return [f"kernel-bench lane: {lanes.describe_lane()}"]


@pytest.fixture(scope="session")
def device() -> str:
    """The device the correctness tests run on: 'cuda', or 'cpu' with the Triton interpreter."""
    return lanes.test_device()


class PerfSession:
    """Times each case once (all providers together) and hands each test its record."""

    def __init__(self, config):
        from .timing import TimingConfig

        self.config = config
        self.timing = TimingConfig(
            warmup_ms=config.getoption("warmup_ms"),
            rep_ms=config.getoption("rep_ms"),
            cold_l2=not config.getoption("warm_l2"),
            mode=config.getoption("timing"),
            flush=config.getoption("l2_flush"),
        )
        self._ceilings = None
        self._results: dict[str, object] = {}
        self.rows: list[dict] = []
        self.tune = config.getoption("tune")
        self.tuned: list = []          # harness.tune.Entry of every search made
        self._tuned_keys: set = set()  # (kernel, key) searched already: a key is searched once

    @property
    def ceilings(self) -> dict:
        if self._ceilings is None:
            from .ceilings import get_ceilings

            self._ceilings = get_ceilings(self.config.getoption("remeasure_ceilings"))
        return self._ceilings

    def run(self, case, provider: str, benchmark) -> dict:
        """Time `case` (once per session) and record `provider`'s samples into `benchmark`."""
        from .perfcase import record_into_benchmark, run_case

        if self.tune:
            return self._tune(case, provider)
        if benchmark.disabled:
            pytest.skip("pytest-benchmark is disabled (xdist -n, or --benchmark-disable): perf cases need it")
        if provider in case.unavailable:
            pytest.skip(f"{provider} unavailable: {case.unavailable[provider]}")
        if provider not in case.providers:
            raise KeyError(f"{case.case_id} has no provider {provider!r}; it has {list(case.providers)}")
        result = self._results.get(case.case_id)
        if result is None:
            # Keep only the latest case's result: tests of one case are consecutive.
            self._results.clear()
            result = self._results[case.case_id] = run_case(case, self.timing, self.ceilings)
            self._progress()
        if provider in result.unavailable:  # refused the case's inputs when first called
            pytest.skip(f"{provider} unavailable: {result.unavailable[provider]}")
        if provider in result.errors:
            pytest.fail(f"{case.case_id} [{provider}] failed: {result.errors[provider]}")
        m = result.measurements[provider]
        info = result.records[provider]
        record_into_benchmark(benchmark, m.samples_s, info)
        self.rows.append(info)
        self._keep(info)
        return info

    def _progress(self) -> None:
        """One case done: its count and the time left, on the terminal."""
        progress = getattr(self.config, "_perf_progress", None)
        if progress is not None:
            self._write_line("progress: " + progress.step())

    def _write_line(self, line: str) -> None:
        import contextlib

        plugins = getattr(self.config, "pluginmanager", None)  # None: a bare config (the tuner's tests)
        reporter = plugins.get_plugin("terminalreporter") if plugins else None
        capture = plugins.get_plugin("capturemanager") if plugins else None
        if reporter is not None:  # past the test's output capture, which would swallow the line
            with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
                reporter.write_line(line)

    def _keep(self, info: dict) -> None:
        """The record at once: one line on the terminal and, with --partial-results, in its file."""
        import json

        from .report import format_table

        self._write_line("measured: " + format_table([info]).splitlines()[1])
        path = self.config.getoption("partial_results")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(info, default=str) + "\n")

    def _tune(self, case, provider: str) -> dict:
        from kernels import tuning

        from .tune import label, ranking, tune_case

        if provider != case.kernel:
            pytest.skip("--tune: only the suite's kernel is searched; baselines are not timed")
        only = set(self.config.getoption("tune_kernel")) or None
        if self.config.getoption("tune_compile_only"):
            from .tune import compile_case

            compiled = compile_case(case, only=only, done=self._tuned_keys,
                                    shard=self.config.getoption("tune_compile_shard"))
            self._progress()
            return {"compiled": {f"{k} {key}": len(r) for (k, key), r in compiled.items()}}
        entries = tune_case(case, self.timing, only=only, done=self._tuned_keys)
        self.tuned.extend(entries)
        if entries:  # into the table at once: a search cut short keeps every key it finished
            _merge_tuned(self.config, entries)
        for e in entries:
            self._write_line(f"tuned: {e.kernel} {tuning.key_text(e.key)}: {e.default_us:.1f} -> {e.best_us:.1f} us "
                             f"({label(e.config)})")
            if self.config.getoption("tune_ranking"):
                for line in ranking(e):
                    self._write_line(line)
        self._progress()
        return {"tuned": [e.record() for e in entries]}


@pytest.fixture(scope="session")
def perf(request) -> PerfSession:
    if not lanes.has_gpu():
        pytest.skip(lanes.NO_GPU_PERF_REASON)
    sess = getattr(request.config, "_kernel_perf_session", None)
    if sess is None:
        sess = request.config._kernel_perf_session = PerfSession(request.config)
    return sess


_CLOCKS_AT_START = None


def pytest_sessionstart(session):
    global _CLOCKS_AT_START
    if lanes.has_gpu():
        from .machine import gpu_clocks

        _CLOCKS_AT_START = gpu_clocks()


def pytest_benchmark_update_machine_info(config, machine_info):
    from .machine import gpu_clocks, gpu_info, software_versions

    machine_info["lane"] = lanes.describe_lane()
    machine_info["gpu"] = gpu_info()
    machine_info["software"] = software_versions()
    sess = getattr(config, "_kernel_perf_session", None)
    if sess is not None and sess._ceilings is not None:
        machine_info["ceilings"] = sess._ceilings
    machine_info["clocks_start"] = _CLOCKS_AT_START
    machine_info["clocks_end"] = gpu_clocks() if lanes.has_gpu() else None


def pytest_benchmark_update_commit_info(config, commit_info):
    """The commit and code that ran (harness.machine.source_info), in place of pytest-benchmark's
    own git probe, which names whatever commit a copied .git says."""
    from .machine import source_info

    commit_info.clear()
    commit_info.update(source_info())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    sess = getattr(config, "_kernel_perf_session", None)
    if sess is not None and sess.tuned:
        _write_tuned(terminalreporter, config, sess.tuned)
    if sess is None or not sess.rows:
        return
    from .report import format_table

    terminalreporter.write_sep("=", "device times (median of the samples; speedup = best baseline / kernel)")
    terminalreporter.write_line(format_table(sess.rows))


def _tuned_table(config) -> tuple[str, Path]:
    import torch

    from kernels import tuning

    name = torch.cuda.get_device_name()
    return name, Path(config.getoption("tune_table") or tuning.table_path(name))


def _merge_tuned(config, entries) -> None:
    """Merge one case's winners into the GPU model's launch table."""
    from .machine import software_versions
    from .tune import merge_into_table

    name, path = _tuned_table(config)
    merge_into_table(path, entries, name, software_versions())


def _write_tuned(terminalreporter, config, entries) -> None:
    """Print the search (each case's winners are in the table already)."""
    from .tune import summary

    name, path = _tuned_table(config)
    terminalreporter.write_sep("=", f"launch tuning on {name}: {len(entries)} launch keys, table {path}")
    terminalreporter.write_line(summary(entries))


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """The command that made the run, written into the file itself (harness.results.command_record)."""
    from .results import COMMAND_ENV, COMMAND_KEY, command_record

    output_json[COMMAND_KEY] = command_record(config.invocation_params.args)
    missing = output_json[COMMAND_KEY].get("not_in_line")
    if missing:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"warning: the recorded command ({COMMAND_ENV}) lacks what this run selected: "
                          f"{missing}; the file keeps pytest's own arguments beside it", yellow=True)
