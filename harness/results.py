"""Reading results files (pytest-benchmark JSON with the suite's extra_info)."""
from __future__ import annotations

import gzip
import json
import math
import os
import shlex
import zlib
from dataclasses import dataclass, field
from pathlib import Path

# Where a results file says what made it: {"line": str or None, ...} (command_record).
COMMAND_KEY = "command"
# Set by tools/bench: the command as the user typed it (make bench ARGS=...).
COMMAND_ENV = "KERNEL_BENCH_COMMAND"
# Settings that change what a run measures or names, recorded beside the command line.
COMMAND_ENV_PREFIXES = ("KERNEL_BENCH_", "KERNELS_", "LINEAR_", "TRITON_")
COMMAND_ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "PYTHONPATH", "HYPOTHESIS_PROFILE")


class UnusableInput(Exception):
    """A results file the command cannot use: exit code 2."""


@dataclass
class Entry:
    case: str
    provider: str
    role: str
    median_s: float
    samples_s: list[float] | None
    info: dict


@dataclass
class Run:
    path: str
    gpu: str | None
    datetime: str | None
    entries: dict[tuple[str, str], Entry]
    software: dict = field(default_factory=dict)  # torch, triton, cuda, driver
    source: dict = field(default_factory=dict)    # commit, dirty
    command: dict | None = None                   # the file's COMMAND_KEY object, if any
    name: str = ""                                # path inside its results folder (load_folder)
    ceilings: dict = field(default_factory=dict)  # the GPU's measured ceilings, as the run recorded them

    def cases(self) -> set[str]:
        return {c for c, _ in self.entries}

    def kernel_entry(self, case: str) -> Entry | None:
        for (c, _), e in self.entries.items():
            if c == case and e.role == "kernel":
                return e
        return None


def _positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


# extra_info fields that must be numbers (or null) where a results file has them
NUMBER_FIELDS = ("median_s", "iqr_s", "speedup_vs_best_baseline", "tflops", "gbps", "roofline_fraction",
                 "read_bound_fraction", "flops", "bytes", "compile_time_s")


def _entry(p: Path, i: int, b) -> Entry | None:
    """One benchmark of the file, checked; None for a benchmark that is not a suite case."""
    where = f"{p}: benchmarks[{i}]"
    if not isinstance(b, dict):
        raise UnusableInput(f"{where} is not an object")
    info = b.get("extra_info") or {}
    if not isinstance(info, dict) or "case" not in info or "provider" not in info:
        return None  # not one of the suite's device-timed cases
    where += f" ({info['case']} [{info['provider']}])"
    stats = b.get("stats")
    if not isinstance(stats, dict):
        raise UnusableInput(f"{where} has no stats")
    median = stats.get("median", info.get("median_s"))
    if not _positive_finite(median):
        raise UnusableInput(f"{where}: stats.median is {median!r}, not a positive finite number")
    for name in NUMBER_FIELDS:  # what the tables, figures and gate compute with
        value = info.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UnusableInput(f"{where}: extra_info.{name} is {value!r}, not a number")
    data = stats.get("data")
    if data is not None:
        if not isinstance(data, list) or not all(_positive_finite(x) for x in data):
            raise UnusableInput(f"{where}: stats.data must be a list of positive finite seconds "
                                "(NaN, infinite, zero or negative samples found)")
    return Entry(case=str(info["case"]), provider=str(info["provider"]), role=info.get("role", "baseline"),
                 median_s=float(median), samples_s=data or None, info=info)


def read_json(path: str | Path):
    """A results file's JSON, plain or gzip-compressed (the committed runs: NAME.json.gz)."""
    p = Path(path)
    try:
        return json.loads(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes())
    except FileNotFoundError:
        raise UnusableInput(f"{p}: no such file") from None
    except (OSError, EOFError, zlib.error, ValueError) as exc:  # what gzip raises on a cut or corrupt stream
        raise UnusableInput(f"{p}: not a readable JSON results file ({exc})") from None


def write_run(path: str | Path, data) -> Path:
    """`data` as a committed run: compact JSON, gzip-compressed (mtime 0: the same bytes each
    time); never over an existing file."""
    p = Path(path)
    try:
        with p.open("xb") as f:  # exclusive: results are added, never replaced
            f.write(gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0))
    except FileExistsError:
        raise UnusableInput(f"{p} exists: results are never overwritten") from None
    return p


def run_files(folder: str | Path) -> list[Path]:
    """The results files under `folder` (recursively), plain or gzip-compressed, sorted."""
    root = Path(folder)
    return sorted([*root.rglob("*.json"), *root.rglob("*.json.gz")])


def load_run(path: str | Path) -> Run:
    p = Path(path)
    if p.is_dir():
        raise UnusableInput(f"{p} is a folder; give a results file (or use a folder only as the gate's BASE)")
    return parse_run(p, read_json(p))


def parse_run(p: Path, data) -> Run:
    """The Run of a results file's JSON, already read (read_json), named by its path p."""
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise UnusableInput(f"{p}: not a pytest-benchmark results file ('benchmarks' is not a list)")
    entries = {}
    for i, b in enumerate(data["benchmarks"]):
        e = _entry(p, i, b)
        if e is None:
            continue
        if (e.case, e.provider) in entries:
            raise UnusableInput(f"{p}: benchmarks[{i}] repeats {e.case} [{e.provider}]: which one to judge?")
        entries[(e.case, e.provider)] = e
    machine = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    gpu_info = machine.get("gpu") if isinstance(machine.get("gpu"), dict) else {}
    if gpu_info.get("name") is not None and not isinstance(gpu_info["name"], str):
        raise UnusableInput(f"{p}: machine_info.gpu.name is {gpu_info['name']!r}, not a string")
    soft = machine.get("software") if isinstance(machine.get("software"), dict) else {}
    software = {k: soft.get(k) for k in ("torch", "triton", "cuda")}
    software["driver"] = gpu_info.get("driver")
    commit = data.get("commit_info") if isinstance(data.get("commit_info"), dict) else {}
    source = {"commit": commit.get("id"), "dirty": commit.get("dirty")}
    command = data.get(COMMAND_KEY) if isinstance(data.get(COMMAND_KEY), dict) else None
    ceilings = machine.get("ceilings") if isinstance(machine.get("ceilings"), dict) else {}
    return Run(str(p), gpu_info.get("name"), data.get("datetime"), entries, software, source, command,
               ceilings=ceilings)


def command_record(args, env=None) -> dict:
    """The COMMAND_KEY object a run writes into its file: `line`, the command as a user
    would retype it from the repository root (tools/bench's COMMAND_ENV, else the pytest
    call rebuilt from `args`); `argv`, pytest's own arguments; `env`, the settings of
    COMMAND_ENV_PREFIXES / COMMAND_ENV_NAMES that were set."""
    env = os.environ if env is None else env
    argv = [str(a) for a in args]
    told = env.get(COMMAND_ENV)
    line = told or shlex.join(["python", "-m", "pytest", *argv])
    settings = {k: env[k] for k in sorted(env)
                if k != COMMAND_ENV and (k.startswith(COMMAND_ENV_PREFIXES) or k in COMMAND_ENV_NAMES)}
    record = {"line": line, "argv": argv, "env": settings,
              "recorded_by": "tools/bench" if told else "harness.pytest_plugin"}
    missing = [s for s in _selections(argv) if s not in line] if told else []
    if missing:  # the line was told, and selects other cases than pytest's own arguments did
        record["not_in_line"] = missing
    return record


def _selections(argv: list[str]) -> list[str]:
    """What picks the cases in pytest's arguments: -k expressions and test paths."""
    out = []
    for i, a in enumerate(argv):
        if a == "-k" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith("-k") and len(a) > 2:
            out.append(a[2:].lstrip("="))
        elif a.startswith("tests/") and (i == 0 or argv[i - 1] != "-k"):
            out.append(a)
    return out


def command_problem(data) -> str | None:
    """Why a results file's COMMAND_KEY does not say what made it (None when it does): a
    `line` string, or a null `line` with a `note` saying the command was not recorded."""
    cmd = data.get(COMMAND_KEY) if isinstance(data, dict) else None
    if not isinstance(cmd, dict):
        return f"no {COMMAND_KEY!r} object"
    line = cmd.get("line")
    if isinstance(line, str) and line.strip():
        return None
    if line is None and isinstance(cmd.get("note"), str) and cmd["note"].strip():
        return None
    return f"{COMMAND_KEY}.line is {line!r}: give the command, or null with a note saying it was not recorded"


def load_history(folder: str | Path, gpu: str | None, exclude: list[str | Path] = ()) -> list[Run]:
    """Every readable results file under `folder` (recursively) of GPU model `gpu` (any
    model if None) that holds device-timed cases, oldest first; a file holding the same JSON
    as one in `exclude` (the candidate), however stored (plain, compact, gzip), is left out:
    a run is never part of its own reference."""
    excluded = []
    for x in exclude:
        try:
            excluded.append(read_json(x))
        except UnusableInput:
            pass  # an unreadable candidate is no file's twin
    runs = []
    for f in run_files(folder):
        try:
            data = read_json(f)
            r = parse_run(f, data)
        except UnusableInput:
            continue
        if any(isinstance(d, dict) and d.get("datetime") == r.datetime and data == d for d in excluded):
            continue
        if r.entries and (gpu is None or r.gpu == gpu):
            runs.append(r)
    runs.sort(key=lambda r: (r.datetime or "", r.path))
    return runs


def load_folder(folder: str | Path) -> list[Run]:
    """Every results file under `folder` (recursively), oldest first (datetime, then path),
    each named by its path inside the folder; an unreadable file is an error here, not
    skipped: these are the committed runs the generated tables come from."""
    root = Path(folder)
    runs = []
    for f in run_files(root):
        r = load_run(f)
        r.name = f.relative_to(root).as_posix()
        runs.append(r)
    runs.sort(key=lambda r: (r.datetime or "", r.name))
    return runs


def reference_for_gpu(folder: str | Path, gpu: str | None, exclude: list[str | Path] = (),
                      runs: list[Run] | None = None) -> Run:
    """The reference held in `folder` (recursively) for GPU model `gpu`: for every case, its
    entries from the newest file that measured it, the candidate (`exclude`) left out. A run
    of a few cases adds to the reference; it does not hide the cases it did not run. `runs`:
    that history already loaded (load_history of the same arguments)."""
    runs = load_history(folder, gpu, exclude) if runs is None else runs
    if not runs:
        raise UnusableInput(f"no results file under {folder} was recorded on {gpu!r} "
                            "(the candidate itself left out): nothing to compare with")
    newest = {case: r for r in runs for case in sorted(r.cases())}  # later (newer) runs win
    entries = {k: e for case, r in newest.items() for k, e in r.entries.items() if k[0] == case}
    used = sorted({Path(r.path).name for r in newest.values()})
    return Run(f"{folder} (newest file per case: {', '.join(used)})", gpu, runs[-1].datetime, entries,
               runs[-1].software, runs[-1].source)
