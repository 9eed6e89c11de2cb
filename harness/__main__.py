"""python -m harness {compare,gate,csv,ceilings}

  compare A B            per-case table: medians of A and B, their ratio, and the
                         kernel's same-run speedup in each run
  gate BASE CAND         exit 0 pass, 1 regression, 2 unusable input (nothing to compare,
                         different GPU models, unreadable files); BASE may be a folder
                         (e.g. results/): its newest file of CAND's GPU model is used
  table FILE             one results file as the summary table (median, GB/s, roofline, speedup)
  csv FILE [-o OUT]      one results file as CSV (stdout, or OUT, never overwritten)
  ceilings               measure this GPU's ceilings and print them
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from .gate import compare_rows, gate
from .results import UnusableInput, reference_for_gpu, load_run

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
    cand = load_run(args.cand)
    base = reference_for_gpu(args.base, cand.gpu) if Path(args.base).is_dir() else load_run(args.base)
    verdicts, notes = gate(base, cand, args.threshold)
    print(f"gate: {cand.path} against {base.path} ({cand.gpu}), threshold {args.threshold:.0%}, 95% CI")
    for v in verdicts:
        others = ", ".join(f"{b} {c[0]:.3f}" for b, c in sorted(v.changes.items()) if b != v.baseline)
        print(f"  {v.verdict:<11} {v.case}  (kernel/{v.baseline}) change {v.change:.3f} "
              f"[{v.ci_low:.3f}, {v.ci_high:.3f}]" + (f"; vs {others}" if others else ""))
    for n in notes:
        print(f"  skipped     {n}")
    bad = [v for v in verdicts if v.verdict == "regression"]
    print(f"gate: {'FAIL' if bad else 'pass'}: {len(bad)} regression(s) in {len(verdicts)} compared case(s)")
    return 1 if bad else 0


def cmd_csv(args) -> int:
    run = load_run(args.file)
    if not run.entries:
        raise UnusableInput(f"{args.file} holds no device-timed cases")
    buf = io.StringIO()
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

    run = load_run(args.file)
    if not run.entries:
        raise UnusableInput(f"{args.file} holds no device-timed cases")
    rows = [dict(e.info, median_s=e.median_s) for _, e in sorted(run.entries.items())]
    print(f"{run.path} ({run.gpu})")
    print(format_table(rows))
    return 0


def cmd_ceilings(args) -> int:
    from .ceilings import get_ceilings

    print(json.dumps(get_ceilings(remeasure=args.remeasure), indent=1))
    return 0


def main(argv=None) -> int:
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
                   help="practical threshold on the ratio change (default 0.10 = 10%%)")
    t = sub.add_parser("table", help="one results file as the summary table")
    t.add_argument("file")
    v = sub.add_parser("csv", help="one results file as CSV")
    v.add_argument("file")
    v.add_argument("-o", "--output")
    m = sub.add_parser("ceilings", help="measure and print this GPU's ceilings")
    m.add_argument("--remeasure", action="store_true")
    args = p.parse_args(argv)
    try:
        return {"compare": cmd_compare, "gate": cmd_gate, "table": cmd_table, "csv": cmd_csv,
                "ceilings": cmd_ceilings}[args.cmd](args)
    except UnusableInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
