"""python -m harness report RESULTS... -o DIR: a self-contained report of results files (and
folders of them), one page per GPU model: DIR/<gpu>/index.md with PNG figures beside it.

- speedup: per operation, the kernel's same-run speedup over its best baseline, each case a
  bar (the newest run that timed the case);
- roofline: every kernel case as a point, achieved TFLOP/s against arithmetic intensity
  (flops per byte moved), under the run's measured copy bandwidth and the peak of the unit
  its arithmetic runs on (bf16, int8, fp8, ...);
- sweeps: per operation, kernel and best-baseline time over each shape dimension that varies
  while the others stay fixed (rows, KV length, prefix length, tokens, ...);
- history: per operation, each case's kernel time across the runs (oldest first: the order
  of their datetime), relative to its first, with the runs the gate flags against the
  previous run of the case marked, and a table of the same.

Files that cannot be read are listed on the page, not fatal; entries that lack what a figure
needs (flops, bytes, a shape) are left out of that figure and counted.
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

from .machine import gpu_slug
from .report import _natural, newest_kernels
from .results import Run, UnusableInput, load_run, run_files

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _op(entry) -> str:
    return str(entry.info.get("op") or entry.case.split("/")[0])


def _label(entry) -> str:
    op = _op(entry)
    return entry.case[len(op) + 1:] if entry.case.startswith(op + "/") else entry.case


def short_labels(labels: list[str]) -> tuple[list[str], str]:
    """Case labels ('k=v,k=v/dtype') cut to the parts that differ between them, and the parts
    they share (for the title): long shape strings otherwise crowd the axis out."""
    parsed = []
    for text in labels:
        shape, _, dtype = text.partition("/")
        parts = [p for p in shape.split(",") if p] + ([dtype] if dtype else [])
        parsed.append(parts)
    common = [p for p in parsed[0] if all(p in q for q in parsed[1:])] if len(parsed) > 1 else []
    short = [",".join(p for p in parts if p not in common) or ",".join(parts) for parts in parsed]
    return short, ", ".join(common)


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def collect(paths) -> tuple[list[Run], list[str]]:
    """The runs of the given files and folders (recursively), and the problems of those that
    could not be read."""
    runs, problems = [], []
    for p in map(Path, paths):
        files = run_files(p) if p.is_dir() else [p]
        for f in files:
            try:
                run = load_run(f)
            except UnusableInput as exc:
                problems.append(str(exc))
                continue
            if run.entries:
                runs.append(run)
            elif p.is_file():
                problems.append(f"{f}: no device-timed case in it")
    runs.sort(key=lambda r: (r.datetime or "", r.path))
    return runs, problems


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def speedup_figure(op: str, rows: list, path: Path) -> Path | None:
    rows = [(case, k) for case, (_, k) in rows if isinstance(k.info.get("speedup_vs_best_baseline"), (int, float))]
    if not rows:
        return None
    plt = _plt()
    rows.sort(key=lambda r: _natural(r[0]))
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.2))
    values = [k.info["speedup_vs_best_baseline"] for _, k in rows]
    ax.barh(range(len(rows)), values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
    labels, common = short_labels([_label(k) for _, k in rows])
    ax.set_yticks(range(len(rows)), [x[:60] for x in labels], fontsize=7)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("speedup over the best baseline (same run)")
    ax.set_title(f"{op}" + (f"\n{common}" if common else ""), fontsize=9)
    return _save(fig, path)


UNIT_NAMES = {"bf16_tflops": "bf16", "fp16_tflops": "fp16", "fp32_tflops": "fp32", "int8_tops": "int8",
              "fp8_tflops": "fp8"}
UNIT_MARKERS = {"bf16_tflops": "o", "fp16_tflops": "s", "fp32_tflops": "D", "int8_tops": "^", "fp8_tflops": "v"}
DEFAULT_UNIT = "bf16_tflops"  # runs recorded before compute_ceiling, and bandwidth-bound work


def compute_unit(info: dict, ceilings: dict) -> str | None:
    """The ceiling a case's arithmetic runs against: its compute_ceiling (bf16 where that is
    null: bandwidth-bound work). Runs recorded before the field: the one unit of the run's
    own ceilings whose peak the compute-bound roofline fraction implies (achieved rate /
    fraction, within 1%); bf16 for memory-bound cases; None where no single unit fits (work
    split over two units; on Hopper int8 and fp8 share one peak)."""
    if "compute_ceiling" in info:
        unit = info["compute_ceiling"]
        return unit if unit in UNIT_NAMES else DEFAULT_UNIT
    rate, fraction = info.get("tflops"), info.get("roofline_fraction")
    if info.get("roofline_bound") != "compute":
        return DEFAULT_UNIT
    if not (isinstance(rate, (int, float)) and isinstance(fraction, (int, float)) and fraction > 0):
        return None
    implied = rate / fraction
    near = [u for u in UNIT_NAMES if isinstance(ceilings.get(u), (int, float)) and abs(ceilings[u] / implied - 1) < 0.01]
    return near[0] if len(near) == 1 else None


def roofline_figure(newest: dict, ceilings: dict, path: Path) -> tuple[Path | None, int]:
    """(the figure, how many kernel entries lacked flops or bytes). Each case is drawn with
    the marker of the unit its arithmetic runs on (compute_ceiling: bf16, int8, fp8, ...),
    under that unit's roofline: the measured copy bandwidth up to the unit's measured peak."""
    points, skipped = [], 0
    for case, (run, k) in newest.items():
        flops, nbytes, t = k.info.get("flops"), k.info.get("bytes"), k.info.get("median_s") or k.median_s
        if not all(isinstance(x, (int, float)) and x > 0 for x in (flops, nbytes, t)):
            skipped += 1
            continue
        points.append((flops / nbytes, flops / t / 1e12, _op(k), compute_unit(k.info, run.ceilings or {})))
    if not points:
        return None, skipped
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = {op: f"C{i % 10}" for i, op in enumerate(sorted({p[2] for p in points}))}
    for op, color in colors.items():
        for unit in sorted({p[3] for p in points if p[2] == op}, key=str):
            mine = [p for p in points if p[2] == op and p[3] == unit]
            label = op if unit == DEFAULT_UNIT else f"{op} ({UNIT_NAMES[unit] if unit else 'unit not recorded'})"
            ax.scatter([p[0] for p in mine], [p[1] for p in mine], s=16, color=color,
                       marker=UNIT_MARKERS.get(unit, "x"), label=label)
    bw = ceilings.get("copy_gbps")
    lo, hi = min(p[0] for p in points) / 2, max(p[0] for p in points) * 2
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    units = {p[3] or DEFAULT_UNIT for p in points}  # a case of unknown unit is drawn against bf16's
    for i, unit in enumerate(sorted(units, key=list(UNIT_NAMES).index)):
        peak = ceilings.get(unit)
        if isinstance(bw, (int, float)) and isinstance(peak, (int, float)):
            rate = "TOP/s" if unit.endswith("tops") else "TFLOP/s"
            ax.plot(xs, [min(bw * x / 1e3, peak) for x in xs], color="black", lw=1, ls=["-", "--", ":", "-."][i % 4],
                    label=f"roofline: copy {bw:.0f} GB/s, {UNIT_NAMES[unit]} {peak:.0f} {rate}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (operations / byte)")
    ax.set_ylabel("achieved TFLOP/s (TOP/s for integer work)")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path), skipped


def sweeps(newest: dict) -> dict:
    """(op, dimension) -> {fixed other dims: [(value, kernel s, best baseline s)]}, for the
    dimensions that take at least 3 values with the others fixed."""
    by = defaultdict(lambda: defaultdict(list))
    for case, (run, k) in newest.items():
        shape = k.info.get("shape")
        if not isinstance(shape, dict):
            continue
        for dim, value in shape.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            rest = tuple(sorted((d, str(v)) for d, v in shape.items() if d != dim))
            t = k.info.get("median_s") or k.median_s
            speed = k.info.get("speedup_vs_best_baseline")
            by[(_op(k), dim)][rest].append((value, t, t * speed if isinstance(speed, (int, float)) else None))
    return {key: {rest: sorted(pts) for rest, pts in groups.items() if len(pts) >= 3}
            for key, groups in by.items() if any(len(pts) >= 3 for pts in groups.values())}


def sweep_figure(op: str, dim: str, groups: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (rest, pts) in enumerate(sorted(groups.items())[:6]):
        name = ", ".join(f"{d}={v}" for d, v in rest)[:60]
        line = ax.plot([p[0] for p in pts], [p[1] * 1e6 for p in pts], marker="o", label=f"kernel {name}")[0]
        base = [(p[0], p[2]) for p in pts if p[2] is not None]
        if base:
            ax.plot([b[0] for b in base], [b[1] * 1e6 for b in base], ls="--", color=line.get_color(),
                    label=f"best baseline {name}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(dim)
    ax.set_ylabel("time (us)")
    ax.set_title(f"{op} over {dim}")
    ax.legend(fontsize=6)
    return _save(fig, path)


def history(runs: list[Run], flag_regressions: bool = True) -> dict:
    """case -> [(run index, run, kernel seconds, speedup, flagged)], oldest first; flagged: the
    gate found a regression against the case's previous run."""
    from .gate import gate

    out = defaultdict(list)
    last = {}  # case -> the previous run that timed it
    for i, run in enumerate(runs):
        flagged = set()
        if flag_regressions:
            prev = {last[c] for c in run.cases() if c in last}
            for p in prev:
                try:
                    res = gate(runs[p], run)
                except UnusableInput:
                    continue
                flagged |= {v.case for v in res.regressions if last.get(v.case) == p}
        for case in run.cases():
            k = run.kernel_entry(case)
            if k is None:
                continue
            out[case].append((i, run, k.info.get("median_s") or k.median_s, k.info.get("speedup_vs_best_baseline"),
                              case in flagged))
            last[case] = i
    return out


def history_figure(op: str, cases: dict, path: Path) -> Path | None:
    series = {c: h for c, h in cases.items() if len(h) >= 2}
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    shown = sorted(series.items(), key=lambda x: _natural(x[0]))[:12]
    labels, common = short_labels([case.split("/", 1)[-1] for case, _ in shown])
    for (case, h), name in zip(shown, labels):
        first = h[0][2]
        line = ax.plot([p[0] for p in h], [p[2] / first for p in h], marker=".", label=name[:80])[0]
        bad = [p for p in h if p[4]]
        if bad:
            ax.scatter([p[0] for p in bad], [p[2] / first for p in bad], marker="x", s=60, color="red", zorder=3)
        line.set_linewidth(1)
    ax.set_xlabel("run (oldest first); x: flagged by the gate against the case's previous run")
    ax.set_ylabel("kernel time / its first run's")
    ax.set_title(f"{op}: history" + (f"\n{common}" if common else ""), fontsize=9)
    ax.legend(fontsize=6)
    return _save(fig, path)


def _link(path: Path | None, page: Path) -> str:
    return f"![{path.stem}]({path.relative_to(page.parent).as_posix()})" if path else ""


def build_report(paths, out_dir, flag_regressions: bool = True) -> list[Path]:
    """Write the report; returns the pages (one per GPU model, then DIR/index.md)."""
    runs, problems = collect(paths)
    for problem in problems:
        print(f"left out: {problem}", file=sys.stderr)
    if not runs:
        raise UnusableInput(f"no results file with device-timed cases in {' '.join(map(str, paths))}: "
                            "nothing to report")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UnusableInput(f"{out} is a file: -o names the report's folder")
    out.mkdir(parents=True, exist_ok=True)
    by_gpu = defaultdict(list)  # by folder name: one page a GPU model, however its name was spelled
    for run in runs:
        by_gpu[gpu_slug(run.gpu or "unknown GPU")].append(run)
    pages = []
    for slug, gruns in sorted(by_gpu.items()):
        gpu = gruns[-1].gpu
        d = out / slug
        d.mkdir(exist_ok=True)
        page = d / "index.md"
        newest = newest_kernels(gruns)
        by_op = defaultdict(list)
        for case, rk in newest.items():
            by_op[_op(rk[1])].append((case, rk))
        lines = [f"# {gpu or 'unknown GPU'}", "",
                 f"{len(gruns)} runs, {len(newest)} cases (the newest run of each). Generated by "
                 f"`python -m harness report {' '.join(str(p) for p in paths)} -o {out_dir}`; do not edit by hand.", ""]
        lines += ["## Speedup over the best baseline", ""]
        for op in sorted(by_op, key=_natural):
            fig = speedup_figure(op, by_op[op], d / f"speedup_{_file_name(op)}.png")
            if fig:
                lines += [_link(fig, page), ""]
        ceilings = next((r.ceilings for r in reversed(gruns) if r.ceilings), {})
        fig, skipped = roofline_figure(newest, ceilings, d / "roofline.png")
        lines += ["## Roofline", "", _link(fig, page) if fig else "No case records its flops and bytes.", ""]
        if skipped:
            lines += [f"{skipped} case(s) left out: no flops or bytes recorded.", ""]
        lines += ["## Sweeps", ""]
        for (op, dim), groups in sorted(sweeps(newest).items()):
            lines += [_link(sweep_figure(op, dim, groups, d / f"sweep_{_file_name(op)}_{_file_name(dim)}.png"), page), ""]
        hist = history(gruns, flag_regressions)
        lines += ["## History", "",
                  "| case | runs | first | newest | newest / first | speedup now | flagged runs |",
                  "|---|---|---|---|---|---|---|"]
        hist_by_op = defaultdict(dict)
        for case, h in hist.items():
            hist_by_op[case.split("/")[0]][case] = h
        for case, h in sorted(hist.items(), key=lambda x: _natural(x[0])):
            first, now = h[0][2], h[-1][2]
            flagged = ", ".join(Path(p[1].path).name for p in h if p[4]) or "-"
            speed = h[-1][3]
            lines.append(f"| `{case}` | {len(h)} | {first * 1e6:.2f} us | {now * 1e6:.2f} us | {now / first:.2f} | "
                         f"{f'{speed:.2f}x' if isinstance(speed, (int, float)) else '-'} | {flagged} |")
        lines.append("")
        for op in sorted(hist_by_op, key=_natural):
            fig = history_figure(op, hist_by_op[op], d / f"history_{_file_name(op)}.png")
            if fig:
                lines += [_link(fig, page), ""]
        page.write_text("\n".join(lines) + "\n")
        pages.append(page)
    index = out / "index.md"
    body = ["# Report", "", *(f"- [{p.parent.name}]({p.relative_to(out).as_posix()})" for p in pages), ""]
    if problems:
        body += ["## Files left out", "", *(f"- {x}" for x in problems), ""]
    index.write_text("\n".join(body))
    return [*pages, index]
