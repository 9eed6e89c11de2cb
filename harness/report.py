"""Plain-text tables of results (terminal summary and the CLI)."""
from __future__ import annotations


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(rows: list[dict]) -> str:
    """rows: extra_info dicts of one run (case, provider, median_s, gbps, ...)."""
    header = ("case", "provider", "median_us", "iqr_us", "TFLOP/s", "GB/s", "roofline", "speedup", "timing")
    lines = [header]
    for r in rows:
        speed = r.get("speedup_vs_best_baseline")
        sp = "-" if speed is None else f"{speed:.2f}x vs {r.get('best_baseline')}"
        lines.append((
            r["case"], r["provider"], _fmt(r["median_s"] * 1e6, ".2f"), _fmt(r["iqr_s"] * 1e6, ".2f"),
            _fmt(r.get("tflops"), ".2f"), _fmt(r.get("gbps"), ".0f"),
            _fmt(None if r.get("roofline_fraction") is None else 100 * r["roofline_fraction"], ".0f") + "%"
            if r.get("roofline_fraction") is not None else "-",
            sp if r.get("role") == "kernel" else "", r.get("timing", ""),
        ))
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)
