"""compare and gate: two runs, case by case.

The gate judges the same-run ratio kernel / baseline (both timed in one process,
interleaved), not absolute times, so a slower or busier machine does not read as a
regression. For each case and each baseline timed in both runs it computes

    change = (kernel_cand / baseline_cand) / (kernel_base / baseline_base)

from the medians (change > 1: the kernel lost ground), with a 95% confidence interval by
bootstrap over the four sets of samples. A case regresses only when the kernel lost
ground against EVERY such baseline, each change beyond the practical threshold and its
interval above 1; it improves only when it gained against every one. One baseline alone
moving is that baseline's own variation: torch.compile's time at one shape was seen to
change by 1.6x between two sessions on one H100 (Inductor chose another kernel
configuration), while the kernel and the other baselines repeated within 1%.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .results import Run, UnusableInput

BOOTSTRAP = 2000


@dataclass
class CaseVerdict:
    case: str
    baseline: str  # the baseline that decides: least lost ground (or least gained)
    change: float
    ci_low: float
    ci_high: float
    verdict: str  # "regression", "improvement", "unchanged"
    changes: dict  # every common baseline -> (change, ci_low, ci_high)


def _median_ratio_change(kb, bb, kc, bc) -> float:
    return (np.median(kc) / np.median(bc)) / (np.median(kb) / np.median(bb))


def bootstrap_change(kb, bb, kc, bc, seed: int = 0) -> tuple[float, float, float]:
    sets = [np.asarray(s, dtype=float) for s in (kb, bb, kc, bc)]
    rng = np.random.default_rng(seed)
    meds = []
    for s in sets:
        idx = rng.integers(0, len(s), size=(BOOTSTRAP, len(s)))
        meds.append(np.median(s[idx], axis=1))
    mkb, mbb, mkc, mbc = meds
    dist = (mkc / mbc) / (mkb / mbb)
    lo, hi = np.quantile(dist, [0.025, 0.975])
    return _median_ratio_change(*sets), float(lo), float(hi)


def _method(info: dict) -> str:
    """How a case was timed. Files from before l2_flush was recorded flushed by writing."""
    timing = info.get("timing", "?")
    if timing == "events+cold_l2":
        timing += "/flush-" + (info.get("l2_flush") or "write")
    return timing


def _samples(run: Run, case: str, provider: str) -> list[float]:
    e = run.entries[(case, provider)]
    if not e.samples_s:
        raise UnusableInput(
            f"{run.path}: {case} [{provider}] has no samples (saved without --benchmark-save-data)"
        )
    return e.samples_s


def gate(base: Run, cand: Run, threshold: float = 0.10) -> tuple[list[CaseVerdict], list[str]]:
    """Verdicts for every case both runs can be compared on, and notes on those they cannot."""
    if base.gpu != cand.gpu:
        raise UnusableInput(f"GPU models differ: {base.gpu!r} in {base.path}, {cand.gpu!r} in {cand.path}")
    verdicts, notes = [], []
    for case in sorted(base.cases() & cand.cases()):
        kb, kc = base.kernel_entry(case), cand.kernel_entry(case)
        if kb is None or kc is None or kb.provider != kc.provider:
            notes.append(f"{case}: no common kernel entry")
            continue
        if _method(kb.info) != _method(kc.info):
            notes.append(f"{case}: timed differently ({_method(kb.info)} vs {_method(kc.info)}): not comparable")
            continue
        common = [p for (c, p), e in base.entries.items()
                  if c == case and e.role == "baseline" and (case, p) in cand.entries]
        if not common:
            notes.append(f"{case}: no baseline timed in both runs")
            continue
        changes = {
            b: bootstrap_change(
                _samples(base, case, kb.provider), _samples(base, case, b),
                _samples(cand, case, kc.provider), _samples(cand, case, b),
            )
            for b in common
        }
        mildest = min(changes, key=lambda b: changes[b][0])   # least ground lost
        harshest = max(changes, key=lambda b: changes[b][0])  # least ground gained
        c, lo, _ = changes[mildest]
        if c > 1 + threshold and lo > 1.0:
            verdict, decider = "regression", mildest
        else:
            c, _, hi = changes[harshest]
            if c < 1 / (1 + threshold) and hi < 1.0:
                verdict, decider = "improvement", harshest
            else:
                verdict, decider = "unchanged", mildest
        change, lo, hi = changes[decider]
        verdicts.append(CaseVerdict(case, decider, change, lo, hi, verdict, changes))
    if not verdicts:
        raise UnusableInput(
            f"nothing to compare: no case of {cand.path} has a kernel and a baseline also in {base.path}"
            + (f" ({'; '.join(notes[:5])})" if notes else "")
        )
    return verdicts, notes


def compare_rows(base: Run, cand: Run) -> list[dict]:
    """Every (case, provider) in both runs: medians, absolute change, and for the kernel
    the change of its same-run speedup over the best baseline."""
    rows = []
    for key in sorted(set(base.entries) & set(cand.entries)):
        b, c = base.entries[key], cand.entries[key]
        row = {"case": key[0], "provider": key[1], "base_us": b.median_s * 1e6,
               "cand_us": c.median_s * 1e6, "time_ratio": c.median_s / b.median_s}
        sb, sc = b.info.get("speedup_vs_best_baseline"), c.info.get("speedup_vs_best_baseline")
        if b.role == "kernel" and sb and sc:
            row["speedup_base"], row["speedup_cand"] = sb, sc
        rows.append(row)
    return rows
