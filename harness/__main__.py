"""python -m harness {compare,gate,gate-check,pr-gate,table,csv,report,store,ceilings,tune,source}

  compare A B            per-case table: medians of A and B, their ratio, and the
                         kernel's same-run speedup in each run
  gate BASE CAND         exit 0 pass, 1 regression, 2 unusable input (nothing to compare,
                         different GPU models, unreadable or malformed files, a bad
                         threshold), 3 no regression but some common case could not be
                         judged (timed differently, no common baseline); BASE may be a
                         folder (e.g. results/): for each case, its newest file of CAND's
                         GPU model, CAND itself (or a stored copy of it) left out
  gate-check BASE:CAND.. the gate's catch rate for an injected kernel slowdown and its
                         false alarms, on pairs of runs of unchanged code (exit 1 if under
                         the target)
  pr-gate CAND [--base-run FILE] [--report-dir DIR] [--summary FILE]
                         CI's pull-request gate (.github/workflows/gpu-gate.yml): CAND
                         against the committed reference of its GPU model and, with
                         --base-run, against the base branch run in the same job; the
                         report; a Markdown summary (appended to $GITHUB_STEP_SUMMARY); exit
                         as gate (1 on a regression in either)
  table FILE             one results file as the summary table (median, GB/s, roofline, speedup)
  table --markdown [--gpu SLUG] [--out PATH] [--check]
                         the newest committed result of every case of results/<SLUG>/ (every
                         GPU folder without --gpu) as docs/results/<SLUG>.md; --check writes
                         nothing and exits 1 where a file differs from what it would write
  csv FILE [-o OUT] [--torchao]
                         one results file as CSV (stdout, or OUT, never overwritten);
                         --torchao: the torchao-column rows a harness.microbench run keeps
  store RUN.json NAME [--results DIR]
                         add a run to the committed results as DIR/<gpu>/NNNN_NAME.json.gz
                         (gzip-compressed compact JSON, numbered one past the highest there;
                         never overwrites); it must record its command and its GPU
  ceilings               measure this GPU's ceilings and print them
  tune [TARGET ...] [--kernel NAME] [-k EXPR] [--table PATH]
                         search the kernels' launch spaces on this GPU at the perf cases'
                         shapes; the winners go into kernels/tuned/<gpu>.json (docs/tuning.md)
  report RESULTS... -o DIR
                         figures (speedups, roofline, sweeps, history with the gate's flags)
                         and tables of results files and folders, one page per GPU model
                         (matplotlib); files that cannot be read are listed, not fatal
  source                 the commit and code hash of this tree, as environment settings
                         for a run on a machine that got a copy of it (a lent GPU)
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from pathlib import Path

from .gate import check_threshold, compare_rows, judge_candidate, software_differences
from .results import UnusableInput, load_run, read_json

# The committed results: where the gate measures each baseline's run-to-run stability.
RESULTS = Path(__file__).resolve().parent.parent / "results"
# The tables generated from them (table --markdown), one file per GPU folder.
DOCS_RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"

CSV_FIELDS = ["case", "op", "provider", "role", "dtype", "shape", "median_us", "iqr_us", "rounds",
              "tflops", "gbps", "roofline_fraction", "timing", "compile_time_s",
              "best_baseline", "speedup_vs_best_baseline"]


def cmd_compare(args) -> int:
    base, cand = load_run(args.a), load_run(args.b)
    if base.gpu != cand.gpu:
        print(f"note: GPU models differ ({base.gpu} vs {cand.gpu}): absolute times are not comparable; "
              "the speedup columns (same-run ratios) are", file=sys.stderr)
    rows = compare_rows(base, cand)
    if not rows:
        raise UnusableInput(f"no (case, provider) is in both {args.a} and {args.b}")
    head = ("case", "provider", "A_us", "B_us", "B/A", "speedup A", "speedup B")
    lines = [head]
    for r in rows:
        lines.append((r["case"], r["provider"], f"{r['base_us']:.2f}", f"{r['cand_us']:.2f}",
                      f"{r['time_ratio']:.3f}",
                      f"{r['speedup_base']:.2f}x" if "speedup_base" in r else "",
                      f"{r['speedup_cand']:.2f}x" if "speedup_cand" in r else ""))
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    for x in lines:
        print("  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip())
    return 0


def cmd_gate(args) -> int:
    threshold = check_threshold(args.threshold)
    history = args.history if args.history is not None else (args.base if Path(args.base).is_dir() else RESULTS)
    base, cand, stability, result = judge_candidate(args.base, args.cand, threshold, history)
    print(f"gate: {cand.path} against {base.path} ({cand.gpu}), threshold {threshold:.0%}, 95% CI")
    print(f"  baseline weights from the run-to-run stability of {stability.source}")
    for d in software_differences(base, cand):
        print(f"  note: software differs: {d}")
    for v in result.verdicts:
        per = ", ".join(f"{b} {r:.3f} (sd {w ** -0.5:.1%})" for b, (r, w) in sorted(v.baselines.items()))
        print(f"  {v.verdict:<11} {v.case}  change {v.change:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}] "
              f"= kernel {v.kernel_ratio:.3f} / machine {v.machine:.3f}; baselines: {per}")
    for n in result.unjudged:
        print(f"  NOT JUDGED  {n}")
    for c in result.missing:
        print(f"  missing     {c}: in the base, not run by the candidate")
    bad = result.regressions
    verdict = "FAIL" if bad else "INCOMPLETE" if result.unjudged else "pass"
    print(f"gate: {verdict}: {len(bad)} regression(s) in {len(result.verdicts)} judged case(s), "
          f"{len(result.unjudged)} not judged, {len(result.missing)} of the base not run")
    return result.exit_code


def cmd_pr_gate(args) -> int:
    from .pr_gate import main as pr_gate

    return pr_gate(args)


def cmd_gate_check(args) -> int:
    from .gate_check import run_check

    pairs = []
    for p in args.pairs:
        if p.count(":") != 1:
            raise UnusableInput(f"{p!r}: give each pair as BASE.json:CAND.json")
        pairs.append(tuple(p.split(":")))
    reports, totals = run_check(pairs, args.history, args.slowdown, check_threshold(args.threshold))
    for r in reports:
        print(f"{Path(r.base).name} -> {Path(r.cand).name}: {r.cases} cases, false alarms {len(r.false_alarms)}, "
              f"caught in file {r.caught_in_file}, caught alone {r.caught_alone}")
        for case, change in r.false_alarms:
            print(f"  false alarm  {case} change {change:.3f}")
        for case, change, lo in r.missed:
            print(f"  missed       {case} change {change:.3f} (CI low {lo:.3f})")
    ok = totals["catch_rate"] >= args.target and totals["false_alarms"] == 0
    print(f"gate-check: {totals['cases']} injections of a {args.slowdown - 1:.0%} kernel slowdown: "
          f"caught {totals['caught_in_file']} in the whole file, {totals['caught_alone']} alone "
          f"({totals['catch_rate']:.1%}, target {args.target:.0%}); false alarms {totals['false_alarms']}: "
          + ("pass" if ok else "FAIL"))
    return 0 if ok else 1


def _torchao_csv(path: str, buf) -> None:
    """The runner's CSV again, from the rows its JSON keeps (harness.microbench writes both)."""
    data = read_json(path)
    rows = (data.get("microbench") or {}).get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise UnusableInput(f"{path} holds no microbench rows (it was not written by python -m harness.microbench)")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))  # the columns in the order the run wrote them
    w.writeheader()
    w.writerows(rows)


def cmd_csv(args) -> int:
    buf = io.StringIO()
    if args.torchao:
        _torchao_csv(args.file, buf)
        return _write_csv(args, buf)
    run = load_run(args.file)
    if not run.entries:
        raise UnusableInput(f"{args.file} holds no device-timed cases")
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for (case, provider), e in sorted(run.entries.items()):
        i = e.info
        w.writerow({
            "case": case, "op": i.get("op"), "provider": provider, "role": e.role, "dtype": i.get("dtype"),
            "shape": json.dumps(i.get("shape"), separators=(",", ":")),
            "median_us": e.median_s * 1e6, "iqr_us": i.get("iqr_s", 0) * 1e6,
            "rounds": len(e.samples_s or []), "tflops": i.get("tflops"), "gbps": i.get("gbps"),
            "roofline_fraction": i.get("roofline_fraction"), "timing": i.get("timing"),
            "compile_time_s": i.get("compile_time_s"), "best_baseline": i.get("best_baseline"),
            "speedup_vs_best_baseline": i.get("speedup_vs_best_baseline"),
        })
    return _write_csv(args, buf)


def _write_csv(args, buf) -> int:
    if args.output:
        out = Path(args.output)
        if out.exists():
            raise UnusableInput(f"{out} exists: results are never overwritten; choose another name")
        out.write_text(buf.getvalue())
    else:
        sys.stdout.write(buf.getvalue())
    return 0


def cmd_table(args) -> int:
    from .report import format_table

    if args.markdown or args.check:  # --check only ever checks the generated markdown
        return cmd_table_markdown(args)
    if args.file is None or args.gpu or args.out:
        raise UnusableInput("table FILE prints one results file; --gpu, --out and --check go with --markdown")
    run = load_run(args.file)
    if not run.entries:
        raise UnusableInput(f"{args.file} holds no device-timed cases")
    rows = [dict(e.info, median_s=e.median_s) for _, e in sorted(run.entries.items())]
    print(f"{run.path} ({run.gpu})")
    if run.command and run.command.get("line"):
        print(f"command: {run.command['line']}")
    print(format_table(rows))
    return 0


def cmd_targets(args) -> int:
    from .targets import judge, markdown_targets

    run = load_run(args.file)
    infos = [e.info for e in run.entries.values() if e.info.get("role") == "kernel"]
    if not infos:
        raise UnusableInput(f"{args.file} holds no device-timed kernel cases")
    print(f"{run.path} ({run.gpu})")
    print("\n".join(markdown_targets(infos)))
    missed = [r for r in judge(infos) if r[3] is False]
    return 1 if missed else 0


def cmd_table_markdown(args) -> int:
    from .report import markdown_command, markdown_results
    from .results import load_folder

    if args.file is not None:
        raise UnusableInput("table --markdown reads the committed runs of results/<gpu>/; give --gpu SLUG, not a file")
    if args.gpu:
        if not (RESULTS / args.gpu).is_dir():
            raise UnusableInput(f"no results folder {RESULTS / args.gpu}")
        slugs = [args.gpu]
    else:
        slugs = sorted(d.name for d in RESULTS.iterdir() if d.is_dir())
    if args.out and len(slugs) != 1:
        raise UnusableInput(f"--out names one file and results/ holds {len(slugs)} GPU folders: give --gpu too")
    differ = []
    for slug in slugs:
        runs = [r for r in load_folder(RESULTS / slug) if r.entries]
        if not runs:
            raise UnusableInput(f"{RESULTS / slug} holds no results file with device-timed cases")
        text = markdown_results(runs, slug)
        out = Path(args.out) if args.out else DOCS_RESULTS / f"{slug}.md"
        if args.check:
            if not out.is_file() or out.read_text() != text:
                differ.append(f"{out}: differs from `{markdown_command(slug)}`")
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            print(f"wrote {out} ({len(runs)} runs)")
    if args.check and not args.gpu and not args.out and DOCS_RESULTS.is_dir():
        differ += [f"{p}: no results/{p.stem}/ generates it" for p in sorted(DOCS_RESULTS.glob("*.md"))
                   if p.stem not in slugs]
    for d in differ:
        print(f"stale: {d}", file=sys.stderr)
    if args.check:
        print(f"table --check: {len(slugs)} GPU folder(s), {len(differ)} stale file(s)"
              + (": run python -m harness table --markdown" if differ else ""))
    return 1 if differ else 0


def cmd_store(args) -> int:
    from .machine import gpu_slug
    from .results import command_problem, parse_run, run_files, write_run

    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
        raise UnusableInput(f"{args.name!r}: NAME is letters, digits, '-' and '_' only")
    data = read_json(args.run)
    run = parse_run(Path(args.run), data)
    problem = command_problem(data)
    if problem:
        raise UnusableInput(f"{args.run}: {problem}: a committed run says what made it")
    if not run.gpu:
        raise UnusableInput(f"{args.run} names no GPU (machine_info.gpu.name): no results folder is its own")
    if not run.entries:
        raise UnusableInput(f"{args.run} holds no device-timed cases: nothing to store")
    folder = Path(args.results) / gpu_slug(run.gpu)
    for f in run_files(folder):  # a second copy would count one run twice in the history
        if read_json(f) == data:
            raise UnusableInput(f"{args.run} is already stored as {f}")
    numbers = [int(f.name[:4]) for f in folder.glob("*") if re.match(r"\d{4}_", f.name)]
    folder.mkdir(parents=True, exist_ok=True)
    print(write_run(folder / f"{max(numbers, default=0) + 1:04d}_{args.name}.json.gz", data))
    return 0


def cmd_ceilings(args) -> int:
    from .ceilings import get_ceilings

    print(json.dumps(get_ceilings(remeasure=args.remeasure), indent=1))
    return 0


def cmd_source(args) -> int:
    from .machine import code_hash, source_info

    info = source_info()
    told = code_hash()
    if info.get("dirty"):  # no copy of this tree is the commit: every run of it is marked dirty
        print(f"note: the tree differs from {info['id']}: runs of it will be marked dirty", file=sys.stderr)
        told += "-uncommitted"
    print(f"KERNEL_BENCH_COMMIT={info['id']} KERNEL_BENCH_CODE_HASH={told}")
    return 0


def cmd_report(args) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UnusableInput("the report draws with matplotlib, which does not import here: "
                            "pip install matplotlib (or the suite's [report] extra)") from None
    from .figures import build_report

    pages = build_report(args.paths, args.out, flag_regressions=not args.no_gate_marks)
    for page in pages:
        print(page)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["tune"]:  # its own parser: the options after it go on to pytest
        from .tune import main as tune_main

        return tune_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m harness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="per-case table of two runs")
    c.add_argument("a")
    c.add_argument("b")
    g = sub.add_parser("gate", help="fail on a same-run-ratio regression beyond noise and threshold")
    g.add_argument("base", help="results file, or a folder such as results/")
    g.add_argument("cand")
    g.add_argument("--threshold", type=float, default=0.10,
                   help="practical threshold on the change (default 0.10 = 10%%)")
    g.add_argument("--history", help="results folder whose runs give each baseline's stability "
                                     "(default: BASE if a folder, else the repo's results/)")
    k = sub.add_parser("gate-check", help="the gate's catch rate and false alarms on A/A pairs")
    k.add_argument("pairs", nargs="+", metavar="BASE.json:CAND.json")
    k.add_argument("--history", default=str(RESULTS))
    k.add_argument("--slowdown", type=float, default=1.15)
    k.add_argument("--threshold", type=float, default=0.10)
    k.add_argument("--target", type=float, default=0.95)
    t = sub.add_parser("table", help="one results file as the summary table, or the committed ones as markdown")
    t.add_argument("file", nargs="?")
    t.add_argument("--markdown", action="store_true",
                   help="the newest committed result per case of results/<gpu>/, as docs/results/<gpu>.md")
    t.add_argument("--gpu", metavar="SLUG", help="one folder of results/ (default: every one)")
    t.add_argument("--out", metavar="PATH", help="write here instead of docs/results/<gpu>.md")
    t.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file differs")
    r = sub.add_parser("targets", help="the suite's speed targets judged on one results file")
    r.add_argument("file")
    v = sub.add_parser("csv", help="one results file as CSV")
    v.add_argument("file")
    v.add_argument("-o", "--output")
    v.add_argument("--torchao", action="store_true",
                   help="the torchao-column rows of a python -m harness.microbench run")
    rp = sub.add_parser("report", help="figures and tables of results, one page per GPU model")
    rp.add_argument("paths", nargs="+", metavar="RESULTS", help="results files or folders (e.g. results/)")
    rp.add_argument("-o", "--out", required=True, help="the report's folder")
    rp.add_argument("--no-gate-marks", action="store_true", help="skip the gate between consecutive runs (faster)")
    pg = sub.add_parser("pr-gate", help="CI's pull-request gate: the reference and base-branch gates, "
                                        "the report and the job summary in one step")
    pg.add_argument("cand", help="the pull request's results file (make bench)")
    pg.add_argument("--results", default=str(RESULTS), help="the committed results folder (default: results/)")
    pg.add_argument("--base-run", help="a results file of the base branch, run on this machine in this job")
    pg.add_argument("--report-dir", help="write the report (figures, history) here")
    pg.add_argument("--summary", default=os.environ.get("GITHUB_STEP_SUMMARY"),
                    help="append the Markdown summary to this file (default: $GITHUB_STEP_SUMMARY)")
    pg.add_argument("--threshold", type=float, default=0.10)
    st = sub.add_parser("store", help="add a run to the committed results: DIR/<gpu>/NNNN_NAME.json.gz")
    st.add_argument("run", metavar="RUN.json")
    st.add_argument("name", metavar="NAME", help="letters, digits, '-' and '_'")
    st.add_argument("--results", metavar="DIR", default=str(RESULTS), help="the results folder (default: results/)")
    m = sub.add_parser("ceilings", help="measure and print this GPU's ceilings")
    m.add_argument("--remeasure", action="store_true")
    sub.add_parser("source", help="commit and code hash of this tree, for a run elsewhere")
    sub.add_parser("tune", help="search the kernels' launch spaces on this GPU (python -m harness tune -h)")
    args = p.parse_args(argv)
    try:
        return {"compare": cmd_compare, "gate": cmd_gate, "gate-check": cmd_gate_check, "table": cmd_table, "csv": cmd_csv,
                "targets": cmd_targets, "report": cmd_report, "pr-gate": cmd_pr_gate,
                "store": cmd_store, "ceilings": cmd_ceilings, "source": cmd_source}[args.cmd](args)
    except UnusableInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader stopped early (| head): no traceback, and nothing more to write at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
