"""The launch tuner: for a perf case, search the launch space of every tunable kernel the
case's own provider runs, on the GPU at hand, and keep the fastest configuration whose
output passes the case's check.

For each (kernel, launch key) the call reaches (kernels.tuning.recording), every candidate
of the kernel's space is run once under `kernels.tuning.forcing` and its output compared
with the case's reference at the case's tolerance (harness.perfcase.check_providers); a
candidate that raises (a compile or resource failure) or computes a wrong result is
rejected, with why. The rest are timed together, interleaved, as the perf cases time
providers. The default stays unless a candidate beats it by more than MIN_GAIN (so that
noise never rewrites a table). The search's wall time, compiling included, is recorded
with each entry.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kernels import tuning

from .perfcase import PerfCase, _pdl_setting, check_providers, timing_config_for
from .timing import TimingConfig, l2_cache_bytes, time_providers

MIN_GAIN = 0.02  # a winner must beat the default by 2%, above the run-to-run noise of one case
TUNE_REP_MS = 40.0  # timed budget per candidate: tens of candidates a key, each interleaved with the rest


@dataclass
class Entry:
    kernel: str
    key: dict
    config: dict           # the configuration kept (the default's when nothing beat it)
    default: dict
    default_us: float
    best_us: float         # the kept configuration's time
    candidates: int        # searched, the default included
    rejected: dict         # candidate label -> why (raised, or wrong output)
    search_s: float        # wall time of this search: compiling, checking and timing
    case: str              # the perf case it was tuned on
    times_us: dict = field(default_factory=dict)  # candidate label -> median us (printed by --ranking, not kept)

    @property
    def gain(self) -> float:
        return self.default_us / self.best_us - 1.0

    def record(self) -> dict:
        return {"config": self.config, "default": self.default, "default_us": round(self.default_us, 3),
                "best_us": round(self.best_us, 3), "candidates": self.candidates, "rejected": len(self.rejected),
                "search_s": round(self.search_s, 2), "case": self.case}


def label(config: dict) -> str:
    return ",".join(f"{k}={config[k]}" for k in sorted(config))


def _forced_call(kernel: str, config: dict, fn: Callable) -> Callable:
    def call(*inputs):
        with tuning.forcing(kernel, config):
            return fn(*inputs)
    return call


def launches_of(case: PerfCase) -> list[tuple[tuning.LaunchSpace, dict]]:
    """The tunable kernels the case's own provider launches, with their keys, in order."""
    inputs = case.make_inputs()
    with tuning.recording() as seen:
        case.providers[case.kernel](*inputs)
    out, keys = [], set()
    for space, key in seen:
        ident = (space.kernel, tuning.key_text(key))
        if ident not in keys:
            keys.add(ident)
            out.append((space, key))
    return out


def tune_case(case: PerfCase, config: TimingConfig | None = None, timer: Callable | None = None,
              only: set | None = None, done: set | None = None) -> list[Entry]:
    """Search every launch the case's kernel makes (only the kernels named in `only`, if
    given; keys in `done` are skipped). `timer(providers, make_inputs) -> {name: seconds}`
    replaces device timing (the CPU lane's tests)."""
    config = config or TimingConfig()
    return [_search(case, space, key, config, timer) for space, key, _ in _new_launches(case, only, done)]


def _new_launches(case: PerfCase, only: set | None, done: set | None):
    """(space, key, ident) of each launch of the case's kernel not in `done` (added to it as
    yielded), only the kernels named in `only` if given; under the case's PDL setting."""
    done = set() if done is None else done
    with _pdl_setting(case.pdl):
        for space, key in launches_of(case):
            ident = (space.kernel, tuning.key_text(key))
            if (only and space.kernel not in only) or ident in done:
                continue
            done.add(ident)
            yield space, key, ident


def compile_case(case: PerfCase, only: set | None = None, done: set | None = None,
                 shard: tuple[int, int] = (0, 1)) -> dict:
    """Run and check every candidate of every launch the case's kernel makes, once, timing
    nothing: Triton compiles each into its on-disk cache. Several processes do this at once
    (`python -m harness tune --jobs`), process i of n taking candidates i, i + n, ... of
    every launch (`shard`), so that the timed search, one process on the GPU, finds its
    kernels compiled. Returns {(kernel, key text): {candidate: why rejected}}."""
    return {ident: _check_candidates(case, space, key, shard)[3]
            for space, key, ident in _new_launches(case, only, done)}


def _check_candidates(case: PerfCase, space: tuning.LaunchSpace, key: dict, shard: tuple[int, int] = (0, 1)):
    """Each candidate (of the shard: every n-th from the i-th) run once under forcing and
    checked against the case's reference: (candidates, labels, providers, rejected,
    first-call seconds)."""
    kernel_fn = case.providers[case.kernel]
    i, n = shard
    candidates = space.search_space(key)[i::n]
    if not candidates:
        return [], [], {}, {}, {}
    labels = [label(c) for c in candidates]
    providers = {lab: _forced_call(space.kernel, c, kernel_fn) for lab, c in zip(labels, candidates)}
    probe = dataclasses.replace(case, providers=providers, kernel=labels[0], unchecked=(), unavailable={})
    inputs = case.make_inputs()
    errors, refused, first_s = check_providers(probe, inputs)
    del inputs
    if i == 0 and labels[0] in errors:  # the shard that holds the default
        raise RuntimeError(f"{space.kernel} at {tuning.key_text(key)}: the default configuration fails "
                           f"the case's check ({errors[labels[0]]}); fix the kernel before tuning it")
    return candidates, labels, providers, {**errors, **refused}, first_s


def _search(case: PerfCase, space: tuning.LaunchSpace, key: dict, config: TimingConfig,
            timer: Callable | None) -> Entry:
    start = time.perf_counter()
    candidates, labels, providers, rejected, first_s = _check_candidates(case, space, key)
    default_label = labels[0]
    ok = {lab: fn for lab, fn in providers.items() if lab not in rejected}
    if timer is not None:
        times = timer(ok, case.make_inputs)
    else:
        cfg = timing_config_for(case, dataclasses.replace(config, rep_ms=min(config.rep_ms, TUNE_REP_MS)),
                                l2_cache_bytes())
        measured = time_providers(ok, case.make_inputs, cfg, {k: v for k, v in first_s.items() if k in ok})
        times = {lab: m.median_s for lab, m in measured.items() if m.samples_s}
        rejected.update({lab: "no clean sample" for lab in ok if lab not in times})
    default_s = times[default_label]
    best_label = min(times, key=times.get)
    if times[best_label] * (1.0 + MIN_GAIN) > default_s:
        best_label = default_label
    chosen = candidates[labels.index(best_label)]
    return Entry(kernel=space.kernel, key=key, config=_changed(chosen, candidates[0]) if best_label != default_label else {},
                 default=candidates[0], default_us=default_s * 1e6, best_us=times[best_label] * 1e6,
                 candidates=len(candidates), rejected=rejected, search_s=time.perf_counter() - start,
                 case=case.case_id, times_us={lab: t * 1e6 for lab, t in times.items()})


def ranking(e: Entry) -> list[str]:
    """Every candidate of a search, fastest first: its time, its ratio to the default's, its
    options (the default and the kept one marked), then the rejected ones with why."""
    default, kept = label(e.default), label({**e.default, **e.config})
    lines = []
    for lab, us in sorted(e.times_us.items(), key=lambda t: t[1]):
        mark = " (default)" if lab == default else " (kept)" if lab == kept else ""
        lines.append(f"  {us:>11.2f} us {e.default_us / us:>6.2f}x  {lab}{mark}")
    lines += [f"  {'rejected':>14} {'':>7}  {lab}: {why}" for lab, why in sorted(e.rejected.items())]
    return lines


def _changed(config: dict, default: dict) -> dict:
    """Only the options that differ from the default: the table stays readable, and a later
    change of the default's other options still reaches this key."""
    return {k: v for k, v in config.items() if default.get(k) != v}


def merge_into_table(path: Path, entries: list[Entry], gpu_name: str, software: dict) -> dict:
    """Write the entries into the table at `path` (created if missing); keys tuned now
    replace their old entries, every other entry stays."""
    data = json.loads(path.read_text()) if path.exists() else {}
    if data and data.get("format") != tuning.TABLE_FORMAT:
        raise ValueError(f"{path}: launch table format {data.get('format')!r}; this tuner writes {tuning.TABLE_FORMAT}")
    if data and data.get("gpu") != gpu_name:
        raise ValueError(f"{path} is the table of {data.get('gpu')!r}, not of this GPU ({gpu_name!r})")
    data.update({"format": tuning.TABLE_FORMAT, "gpu": gpu_name, "software": software})
    kernels = data.setdefault("kernels", {})
    for e in entries:
        kernels.setdefault(e.kernel, {})[tuning.key_text(e.key)] = e.record()
    data["kernels"] = {k: dict(sorted(v.items())) for k, v in sorted(kernels.items())}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    tuning.reload_tables()
    return data


def summary(entries: list[Entry]) -> str:
    """One line per searched launch, then the search time per kernel."""
    lines = [f"{'kernel':<16} {'key':<44} {'cands':>5} {'rej':>4} {'default us':>10} {'best us':>9} "
             f"{'gain':>6} {'search s':>8}  kept"]
    for e in entries:
        lines.append(f"{e.kernel:<16} {tuning.key_text(e.key):<44} {e.candidates:>5} {len(e.rejected):>4} "
                     f"{e.default_us:>10.2f} {e.best_us:>9.2f} {e.gain:>6.1%} {e.search_s:>8.1f}  "
                     f"{label(e.config) or 'default'}")
    per_kernel: dict[str, float] = {}
    for e in entries:
        per_kernel[e.kernel] = per_kernel.get(e.kernel, 0.0) + e.search_s
    lines.append("search time: " + ", ".join(f"{k} {s:.0f} s" for k, s in per_kernel.items()))
    return "\n".join(lines)


def all_spaces() -> dict:
    """Every launch space of the suite's kernels (importing each family declares its spaces)."""
    import kernels.attention  # noqa: F401
    import kernels.linear  # noqa: F401
    import kernels.norm  # noqa: F401
    import kernels.quant  # noqa: F401

    return tuning.spaces()


# `python -m harness tune`: which perf files each target runs (the cases a kernel is tuned on)
TARGETS = {
    "attention": ["tests/perf/attention"],
    "linear": ["tests/perf/linear"],
    "norm": ["tests/perf/norm"],
    "quant": ["tests/perf/quant"],
    "layers": ["tests/e2e/test_decoder_layer.py"],
}


# perf files whose cases build a whole model (16 GB at LLaMA-3-8B's size): each compile process
# would hold one, so their candidates compile in the timed search (their kernel cases tune faster)
WHOLE_MODEL_FILES = ("tests/e2e/test_model_perf.py", "tests/e2e/test_shared_prefix_perf.py",
                     "tests/e2e/test_sparse_model_perf.py")


def _builds_whole_models(path: str) -> bool:
    p = Path(path).resolve()
    root = Path(__file__).resolve().parents[1]
    return any(p == root / f or (p.is_dir() and (root / f).is_relative_to(p)) for f in WHOLE_MODEL_FILES)


def main(argv: list[str]) -> int:
    """python -m harness tune [TARGET ...] [--kernel NAME] [-k EXPR] [--table PATH] [--jobs N] [-- PYTEST ARGS]"""
    import argparse
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from .lanes import GPU_SHARE_ENV, has_gpu

    p = argparse.ArgumentParser(prog="python -m harness tune",
                                description="search the kernels' launch spaces on this GPU at the perf cases' shapes "
                                            "and write the winners into its launch table")
    p.add_argument("targets", nargs="*", default=[],
                   help=f"families ({', '.join(TARGETS)}) or perf files/folders; default: all families")
    p.add_argument("--kernel", action="append", default=[], help="only this launch space (repeatable)")
    p.add_argument("-k", dest="keyword", help="only the cases whose test id matches (pytest -k)")
    p.add_argument("--table", help="the table to write (default kernels/tuned/<gpu>.json)")
    p.add_argument("--ranking", action="store_true",
                   help="print every candidate's time after each search, fastest first (the table keeps the winner)")
    p.add_argument("--jobs", type=int, default=min(8, max(1, (os.cpu_count() or 2) // 2)),
                   help="processes that compile and check the candidates before the timed search, which "
                        "runs alone on the GPU (1: the search compiles as it goes); default: half the cores, up to 8")
    args, extra = p.parse_known_args(argv)
    if not has_gpu():
        print("python -m harness tune: no CUDA GPU here; the launch tables hold times measured on a GPU", file=sys.stderr)
        return 2
    known = set(all_spaces())
    for name in args.kernel:
        if name not in known:
            print(f"python -m harness tune: no launch space {name!r} (known: {', '.join(sorted(known))})",
                  file=sys.stderr)
            return 2
    paths = []
    for t in args.targets or list(TARGETS):
        if t in TARGETS:
            paths += TARGETS[t]
        elif Path(t).exists():
            paths.append(t)
        else:
            print(f"python -m harness tune: {t!r} is neither a family ({', '.join(TARGETS)}) nor a path",
                  file=sys.stderr)
            return 2
    cmd = [sys.executable, "-m", "pytest", *paths, "-m", "perf", "--tune", "-q", "-p", "no:cacheprovider"]
    cmd += [f"--tune-kernel={k}" for k in args.kernel]
    if args.keyword:
        cmd += ["-k", args.keyword]
    if args.table:
        cmd += [f"--tune-table={args.table}"]
    if args.ranking:
        cmd += ["--tune-ranking"]
    if args.jobs < 1:
        print(f"python -m harness tune: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    if args.jobs > 1 and any(_builds_whole_models(t) for t in paths):
        print("python -m harness tune: whole-model cases compile in the timed search (--jobs 1): every compile "
              "process would build the model; docs/tuning.md names their kernel cases", flush=True)
        args.jobs = 1
    if args.jobs > 1:
        # Compiling is most of a search's wall time and uses one core; the timing must run alone.
        # Each process takes every jobs-th candidate of every case (a case's candidates are most
        # of the work: split by case, a few large spaces left most processes idle); the first
        # shows its progress.
        start = time.perf_counter()
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # each process plans its inputs on its share of the GPU (lanes.gpu_free_bytes)
        shared = dict(env={**os.environ, GPU_SHARE_ENV: str(args.jobs)})
        shards = [cmd + ["--tune-compile-only", f"--tune-compile-shard={i}/{args.jobs}"] + extra
                  for i in range(args.jobs)]
        with ThreadPoolExecutor(args.jobs) as pool:
            codes = list(pool.map(lambda i: subprocess.call(shards[i], **shared, **(quiet if i else {})),
                                  range(args.jobs)))
        # a failure here (a candidate's or a case's) is the timed search's to report, with the rest searched
        print(f"python -m harness tune: compiled and checked the candidates with {args.jobs} processes "
              f"in {time.perf_counter() - start:.0f} s (exits {sorted(set(codes))}); now the timed search", flush=True)
    return subprocess.call(cmd + extra)
