"""Reading results files (pytest-benchmark JSON with the suite's extra_info)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


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

    def cases(self) -> set[str]:
        return {c for c, _ in self.entries}

    def kernel_entry(self, case: str) -> Entry | None:
        for (c, _), e in self.entries.items():
            if c == case and e.role == "kernel":
                return e
        return None


def load_run(path: str | Path) -> Run:
    p = Path(path)
    if p.is_dir():
        raise UnusableInput(f"{p} is a folder; give a results file (or use a folder only as the gate's BASE)")
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise UnusableInput(f"{p}: no such file") from None
    except (OSError, ValueError) as exc:
        raise UnusableInput(f"{p}: not a readable JSON results file ({exc})") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise UnusableInput(f"{p}: not a pytest-benchmark results file (no 'benchmarks' list)")
    entries = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info") or {}
        if "case" not in info or "provider" not in info:
            continue  # not one of the suite's device-timed cases
        stats = b.get("stats") or {}
        entries[(info["case"], info["provider"])] = Entry(
            case=info["case"],
            provider=info["provider"],
            role=info.get("role", "baseline"),
            median_s=float(stats.get("median", info.get("median_s"))),
            samples_s=stats.get("data"),
            info=info,
        )
    gpu = ((data.get("machine_info") or {}).get("gpu") or {}).get("name")
    return Run(str(p), gpu, data.get("datetime"), entries)


def reference_for_gpu(folder: str | Path, gpu: str | None) -> Run:
    """The reference held in `folder` (recursively) for GPU model `gpu`: for every case, its
    entries from the newest file that measured it. A run of a few cases adds to the
    reference; it does not hide the cases it did not run."""
    runs = []
    for f in sorted(Path(folder).rglob("*.json")):
        try:
            r = load_run(f)
        except UnusableInput:
            continue
        if r.entries and r.gpu == gpu:
            runs.append(r)
    if not runs:
        raise UnusableInput(f"no results file under {folder} was recorded on {gpu!r}: nothing to compare with")
    runs.sort(key=lambda r: (r.datetime or "", r.path))
    newest = {case: r for r in runs for case in r.cases()}  # later (newer) runs win
    entries = {k: e for case, r in newest.items() for k, e in r.entries.items() if k[0] == case}
    used = sorted({Path(r.path).name for r in newest.values()})
    return Run(f"{folder} (newest file per case: {', '.join(used)})", gpu, runs[-1].datetime, entries)
