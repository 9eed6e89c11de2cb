"""How well the gate separates real regressions from noise, on committed runs.

For each pair of runs that measured unchanged kernel code (A/A): the gate must pass the
pair as it is (a regression verdict is a false alarm), and must flag a slowdown of the
kernel alone, injected into one case at a time by scaling the candidate's kernel samples;
each injection is judged twice, inside the whole candidate file and as a candidate file
holding that case alone. Stability comes from the history folder without the candidate,
as the gate itself takes it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .gate import gate, history_stability
from .results import Run, load_run


def _with_kernel_scaled(run: Run, case: str, factor: float, only_case: bool) -> Run:
    entries = {}
    for key, e in run.entries.items():
        if only_case and key[0] != case:
            continue
        if key[0] == case and e.role == "kernel":
            e = dataclasses.replace(e, median_s=e.median_s * factor,
                                    samples_s=[s * factor for s in e.samples_s])
        entries[key] = e
    return dataclasses.replace(run, path=f"{run.path} [{case} kernel x{factor:g}]", entries=entries)


@dataclasses.dataclass
class PairReport:
    base: str
    cand: str
    cases: int
    false_alarms: list
    caught_in_file: int
    caught_alone: int
    missed: list  # (case, change, ci_low) of injections missed either way


def check_pair(base_path, cand_path, history, slowdown: float, threshold: float) -> PairReport:
    base, cand = load_run(base_path), load_run(cand_path)
    stability = history_stability(history, cand.gpu, [base_path, cand_path])
    aa = gate(base, cand, threshold, stability)
    false_alarms = [(v.case, v.change) for v in aa.regressions]
    caught_in_file = caught_alone = 0
    missed = []
    for v in aa.verdicts:
        full = gate(base, _with_kernel_scaled(cand, v.case, slowdown, False), threshold, stability)
        in_file = next(x for x in full.verdicts if x.case == v.case)
        alone = gate(base, _with_kernel_scaled(cand, v.case, slowdown, True), threshold, stability).verdicts[0]
        caught_in_file += in_file.verdict == "regression"
        caught_alone += alone.verdict == "regression"
        if in_file.verdict != "regression" or alone.verdict != "regression":
            missed.append((v.case, alone.change, alone.ci_low))
    return PairReport(str(base_path), str(cand_path), len(aa.verdicts), false_alarms,
                      caught_in_file, caught_alone, missed)


def run_check(pairs: list[tuple[str, str]], history: str | Path | None, slowdown: float = 1.15,
              threshold: float = 0.10) -> tuple[list[PairReport], dict]:
    reports = [check_pair(b, c, history, slowdown, threshold) for b, c in pairs]
    n = sum(r.cases for r in reports)
    totals = {
        "cases": n,
        "false_alarms": sum(len(r.false_alarms) for r in reports),
        "caught_in_file": sum(r.caught_in_file for r in reports),
        "caught_alone": sum(r.caught_alone for r in reports),
    }
    totals["catch_rate"] = min(totals["caught_in_file"], totals["caught_alone"]) / n if n else 0.0
    return reports, totals
