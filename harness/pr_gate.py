"""The pull-request gate in one step, for CI: a candidate run (the pull request's head,
timed by `make bench` on the runner's GPU) judged against the committed reference of its GPU
model and, when given, against a run of the base branch made on the same machine in the same
job; the report built beside the committed history; one Markdown summary of both verdicts
(GitHub Actions shows it as the job summary); and an exit status that fails the check on a
regression.

Exit status: 0 pass, 1 a regression in either gate, 3 a case neither passed nor flagged
(too few clean samples, no baseline in common: the gate could not judge it), 2 unusable
input (no committed reference for the GPU model, a broken results file).
.github/workflows/gpu-gate.yml runs it through tools/pr-gate."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .gate import GateResult, judge_candidate, software_differences
from .results import Run, UnusableInput


@dataclass
class Judgement:
    title: str        # what the candidate was judged against
    base: Run
    result: GateResult
    notes: list[str]  # software differences between the two runs


def _verdict(result: GateResult) -> str:
    return "FAIL" if result.regressions else "INCOMPLETE" if result.unjudged else "pass"


def _table(result: GateResult) -> list[str]:
    order = {"regression": 0, "improvement": 1}
    rows = sorted(result.verdicts, key=lambda v: (order.get(v.verdict, 2), v.case))
    lines = ["| verdict | case | change | 95% CI | kernel | machine |", "|---|---|---|---|---|---|"]
    for v in rows:
        mark = "**regression**" if v.verdict == "regression" else v.verdict
        lines.append(f"| {mark} | `{v.case}` | {v.change:.3f} | [{v.ci_low:.3f}, {v.ci_high:.3f}] | "
                     f"{v.kernel_ratio:.3f} | {v.machine:.3f} |")
    return lines


def summary(cand: Run, judgements: list[Judgement], report_pages: list[Path], report_note: str,
            threshold: float) -> str:
    """The job summary: the overall verdict, then each gate's table (regressions first), the
    cases it could not judge, the software differences, and where the report went."""
    worst = max((j.result.exit_code for j in judgements), default=0)
    overall = {0: "pass", 1: "FAIL", 3: "INCOMPLETE"}[worst]
    out = [f"# GPU gate: {overall}", "",
           f"Candidate `{cand.path}` on {cand.gpu}; threshold {threshold:.0%} on the change of the "
           "kernel's same-run speedup (change > 1 is slower), 95% confidence.", ""]
    for j in judgements:
        r = j.result
        out += [f"## Against {j.title}: {_verdict(r)}", "",
                f"`{j.base.path}`: {len(r.regressions)} regression(s) in {len(r.verdicts)} judged case(s), "
                f"{len(r.unjudged)} not judged, {len(r.missing)} of the base not run.", ""]
        out += [*(f"- note: software differs: {n}" for n in j.notes), *([""] if j.notes else [])]
        if r.verdicts:
            out += [*_table(r), ""]
        if r.unjudged:
            out += ["Not judged:", "", *(f"- {n}" for n in r.unjudged), ""]
        if r.missing:
            out += [f"In the base, not run by the candidate: {len(r.missing)} case(s).", ""]
    out += ["## Report", ""]
    if report_pages:
        out += [f"{report_note}: " + ", ".join(f"`{p}`" for p in report_pages), ""]
    else:
        out += [report_note, ""]
    return "\n".join(out)


def run(cand_path, results_dir, base_run=None, report_dir=None, threshold: float = 0.10):
    """(exit status, summary text). Raises UnusableInput on input the gate cannot use."""
    judgements = []
    base, cand, _, result = judge_candidate(results_dir, cand_path, threshold, results_dir)
    judgements.append(Judgement(f"the committed reference ({Path(results_dir).name}/)", base, result,
                                software_differences(base, cand)))
    if base_run is not None:
        base, cand, _, result = judge_candidate(base_run, cand_path, threshold, results_dir)
        judgements.append(Judgement("the base branch, run on this machine in this job", base, result,
                                    software_differences(base, cand)))
    pages, note = [], "No report was asked for (--report-dir)."
    if report_dir is not None:
        try:
            from .figures import build_report

            sources = [results_dir, cand_path] + ([base_run] if base_run is not None else [])
            pages = build_report(sources, report_dir)
            note = "Figures and history, in the job's report artifact"
        except ImportError as exc:  # matplotlib is optional: the verdict never depends on it
            note = f"No report: the figures need matplotlib ({exc})."
    status = max(j.result.exit_code for j in judgements)
    return status, summary(cand, judgements, pages, note, threshold)


def main(args) -> int:
    from .gate import check_threshold

    threshold = check_threshold(args.threshold)
    try:
        status, text = run(args.cand, args.results, args.base_run, args.report_dir, threshold)
    except UnusableInput as exc:
        status, text = 2, f"# GPU gate: cannot judge\n\n{exc}\n"
    print(text)
    if args.summary:
        with open(args.summary, "a") as f:  # GitHub's step summary is appended to
            f.write(text + "\n")
    return status
