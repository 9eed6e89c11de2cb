"""compare and gate: two runs, case by case.

The gate asks whether the suite's kernel got slower than the machine it ran on. For each
case it takes the kernel's change of median time, candidate over base, and divides it by
the machine's change, estimated from the baselines timed in the same runs:

    change = (kernel_cand / kernel_base) / machine,
    machine = weighted median over the case's baselines of (baseline_cand / baseline_base)

Each baseline's weight is 1 / sigma^2, sigma being that provider's run-to-run spread of
log time measured on the committed history (`Stability`): an autotuned or compiled
baseline that moves by 8-44% between sessions (torch.compile, torchao's compiled path,
bitsandbytes) carries little weight, and no single baseline decides unless it is the
only one. A slower machine slows the kernel and its baselines alike, so the change stays
at 1. The 95% interval is a bootstrap over the samples of every entry involved.

A case regresses when the change exceeds 1 + threshold and its interval lies above 1;
it improves when the change is under 1 / (1 + threshold) and its interval lies below 1.
A case the gate cannot judge (timed by another method, no common kernel or baseline) is
listed and makes the gate's exit 3 unless a regression already makes it 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .results import Run, UnusableInput, load_history, load_run, reference_for_gpu

BOOTSTRAP = 2000
# Spread assumed for a provider the history never measured twice: as unstable as the
# least stable baselines seen on the H100 (bitsandbytes 17%, torch._int_mm at MixQ's
# shapes 38%, torch.compile 6%).
UNKNOWN_SIGMA = 0.15
# No provider is trusted beyond this (timer resolution and clock drift within a session).
MIN_SIGMA = 0.005


@dataclass
class Stability:
    """Run-to-run spread (standard deviation of log median time) per baseline provider."""
    sigma: dict = field(default_factory=dict)
    source: str = "none"

    def of(self, provider: str) -> float:
        return max(self.sigma.get(provider, UNKNOWN_SIGMA), MIN_SIGMA)

    def weight(self, provider: str) -> float:
        return 1.0 / self.of(provider) ** 2


def measure_stability(runs: list[Run], source: str = "") -> Stability:
    """Each baseline provider's spread: for every (case, provider, timing method) measured
    in two or more runs, the standard deviation of log median time across them; the
    provider's spread pools those over its cases (root mean square), so a provider that
    holds still at most shapes but jumps at a few (torch.compile choosing another kernel)
    counts as unstable. Baselines are code the suite does not change, so every committed
    run of a case counts, whatever kernel ran beside it."""
    logs: dict[tuple, list[float]] = {}
    for r in runs:
        for (case, provider), e in r.entries.items():
            if e.role == "baseline":
                logs.setdefault((case, provider, method(e.info)), []).append(math.log(e.median_s))
    per_provider: dict[str, list[float]] = {}
    for (_, provider, _), xs in logs.items():
        if len(xs) >= 2:
            per_provider.setdefault(provider, []).append(float(np.std(xs, ddof=1)))
    return Stability({p: float(np.sqrt(np.mean(np.square(s)))) for p, s in per_provider.items()}, source)


def history_stability(folder: str | Path | None, gpu: str | None, exclude: list[str],
                      runs: list[Run] | None = None) -> Stability:
    """Stability measured on the results under `folder` of GPU model `gpu` (all models if
    it has none there), the files in `exclude` left out; empty if there is no history.
    `runs`: that model's history already loaded (load_history of the same arguments)."""
    if folder is None or not Path(folder).is_dir():
        return Stability(source="none (every baseline weighted alike)")
    runs = load_history(folder, gpu, exclude) if runs is None else runs
    label = f"{len(runs)} file(s) of {gpu} under {folder}"
    if not runs:
        runs = load_history(folder, None, exclude)
        label = f"{len(runs)} file(s) of every GPU model under {folder}"
    if not runs:
        return Stability(source="none (every baseline weighted alike)")
    return measure_stability(runs, label)


@dataclass
class CaseVerdict:
    case: str
    change: float
    ci_low: float
    ci_high: float
    verdict: str         # "regression", "improvement", "unchanged"
    kernel_ratio: float  # kernel_cand / kernel_base
    machine: float       # the weighted-median baseline ratio
    baselines: dict      # provider -> (baseline_cand / baseline_base, weight)


def method(info: dict) -> str:
    """How a case was timed. Files from before l2_flush was recorded flushed by writing."""
    timing = info.get("timing", "?")
    if timing == "events+cold_l2":
        timing += "/flush-" + (info.get("l2_flush") or "write")
    return timing


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted median over axis 0 of `values` (P x B), weights (P,): the value where the
    cumulative weight reaches half, the mean of the two neighbours on an exact tie (so
    equal weights give the ordinary median)."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        return weighted_median(values[:, None], weights)[0]
    order = np.argsort(values, axis=0)
    v = np.take_along_axis(values, order, axis=0)
    w = np.asarray(weights, dtype=float)[order]
    cum = np.cumsum(w, axis=0) / w.sum(axis=0)
    half = 0.5 - 1e-12
    i = np.argmax(cum >= half, axis=0)
    cols = np.arange(v.shape[1])
    tie = np.abs(cum[i, cols] - 0.5) < 1e-9
    nxt = np.minimum(i + 1, v.shape[0] - 1)
    return np.where(tie, 0.5 * (v[i, cols] + v[nxt, cols]), v[i, cols])


def bootstrap_medians(samples, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of n_boot resamples (with replacement) of `samples`, drawn exactly from the
    order-statistic distribution of a resample's (lower) median: the median of a resample
    is x_(k) with k = ceil(n V), V ~ Beta(m, n - m + 1), m = (n + 1) // 2."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    m = (n + 1) // 2
    k = np.ceil(rng.beta(m, n - m + 1, size=n_boot) * n).astype(int)
    return x[np.clip(k, 1, n) - 1]


def judge_case(case: str, kb, kc, bases: dict, cands: dict, stability: Stability,
               threshold: float, seed: int = 0) -> CaseVerdict:
    """One case's verdict from the samples of the kernel (kb, kc) and of each common
    baseline (bases[p], cands[p]), base and candidate."""
    names = sorted(bases)
    weights = np.array([stability.weight(p) for p in names])
    k_ratio = np.median(kc) / np.median(kb)
    ratios = np.array([np.median(cands[p]) / np.median(bases[p]) for p in names])
    machine = math.exp(weighted_median(np.log(ratios), weights))
    change = k_ratio / machine

    rng = np.random.default_rng(seed)
    bk = bootstrap_medians(kc, BOOTSTRAP, rng) / bootstrap_medians(kb, BOOTSTRAP, rng)
    logr = np.stack([np.log(bootstrap_medians(cands[p], BOOTSTRAP, rng) / bootstrap_medians(bases[p], BOOTSTRAP, rng))
                     for p in names])
    dist = bk / np.exp(weighted_median(logr, weights))
    lo, hi = (float(q) for q in np.quantile(dist, [0.025, 0.975]))

    if change > 1 + threshold and lo > 1.0:
        verdict = "regression"
    elif change < 1 / (1 + threshold) and hi < 1.0:
        verdict = "improvement"
    else:
        verdict = "unchanged"
    return CaseVerdict(case, float(change), lo, hi, verdict, float(k_ratio), machine,
                       {p: (float(r), float(w)) for p, r, w in zip(names, ratios, weights)})


def _samples(run: Run, case: str, provider: str) -> list[float]:
    e = run.entries[(case, provider)]
    if not e.samples_s:
        raise UnusableInput(
            f"{run.path}: {case} [{provider}] has no samples (saved without --benchmark-save-data)"
        )
    return e.samples_s


@dataclass
class GateResult:
    verdicts: list[CaseVerdict]
    unjudged: list[str]        # cases in both runs the gate could not judge, with why
    missing: list[str]         # cases of the base the candidate did not run

    @property
    def regressions(self) -> list[CaseVerdict]:
        return [v for v in self.verdicts if v.verdict == "regression"]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 3 if self.unjudged else 0


def check_threshold(threshold) -> float:
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
        raise UnusableInput(f"--threshold must be a finite number >= 0, got {threshold!r}")
    return float(threshold)


def gate(base: Run, cand: Run, threshold: float = 0.10, stability: Stability | None = None) -> GateResult:
    """Verdicts for every case both runs can be compared on, the cases they cannot be
    judged on, and the base's cases absent from the candidate."""
    threshold = check_threshold(threshold)
    stability = stability or Stability()
    if base.gpu != cand.gpu:
        raise UnusableInput(f"GPU models differ: {base.gpu!r} in {base.path}, {cand.gpu!r} in {cand.path}")
    verdicts, unjudged = [], []
    for case in sorted(base.cases() & cand.cases()):
        kb, kc = base.kernel_entry(case), cand.kernel_entry(case)
        if kb is None or kc is None or kb.provider != kc.provider:
            unjudged.append(f"{case}: no common kernel entry")
            continue
        flagged = [f"{r}: {e.info['timing_flag']}" for r, e in (("base", kb), ("candidate", kc)) if e.info.get("timing_flag")]
        if flagged:
            unjudged.append(f"{case}: kernel not timed cleanly ({'; '.join(flagged)})")
            continue
        if method(kb.info) != method(kc.info):
            unjudged.append(f"{case}: timed differently ({method(kb.info)} vs {method(kc.info)})")
            continue
        common = [p for (c, p), e in base.entries.items()
                  if c == case and e.role == "baseline" and (case, p) in cand.entries
                  and method(e.info) == method(cand.entries[(case, p)].info)]
        if not common:
            unjudged.append(f"{case}: no baseline timed the same way in both runs")
            continue
        verdicts.append(judge_case(
            case, _samples(base, case, kb.provider), _samples(cand, case, kc.provider),
            {p: _samples(base, case, p) for p in common}, {p: _samples(cand, case, p) for p in common},
            stability, threshold,
        ))
    if not verdicts and not unjudged:
        raise UnusableInput(f"nothing to compare: no case of {cand.path} is also in {base.path}")
    missing = sorted(c for c in base.cases() - cand.cases() if base.kernel_entry(c) is not None)
    return GateResult(verdicts, unjudged, missing)


def software_differences(base: Run, cand: Run) -> list[str]:
    """torch, triton, CUDA and driver versions that differ between the two runs."""
    out = []
    for key in ("torch", "triton", "cuda", "driver"):
        a, b = base.software.get(key), cand.software.get(key)
        if a != b:
            out.append(f"{key} {a or '?'} -> {b or '?'}")
    return out


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


def judge_candidate(base_arg, cand_path, threshold: float, history) -> tuple[Run, Run, Stability, GateResult]:
    """The gate's whole decision for a candidate file: BASE a results folder (its newest run
    of the candidate's GPU model is the reference) or one results file; the baselines'
    stability from the `history` folder. Returns (base, candidate, stability, result)."""
    cand = load_run(cand_path)
    runs = None  # BASE's history, loaded once when it also gives the stability
    if Path(base_arg).is_dir():
        if not cand.gpu:  # the folder's runs of every GPU model would be its reference
            raise UnusableInput(f"{cand_path} records no GPU model (machine_info.gpu.name): a results folder "
                                "gives a reference only for a run of a GPU model; give BASE as a file")
        if Path(history).resolve() == Path(base_arg).resolve():
            runs = load_history(base_arg, cand.gpu, [cand_path])
        base = reference_for_gpu(base_arg, cand.gpu, exclude=[cand_path], runs=runs)
    else:
        base = load_run(base_arg)
        if Path(base_arg).resolve() == Path(cand_path).resolve():
            raise UnusableInput(f"{cand_path} is both BASE and CAND: a run is never its own reference")
    stability = history_stability(history, cand.gpu, [cand_path], runs=runs or None)
    return base, cand, stability, gate(base, cand, threshold, stability)
