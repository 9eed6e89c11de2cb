"""The suite's speed targets, judged on recorded runs: which cases each target covers, the
number it reads from the kernel's record, and the bar. `python -m harness targets RUN.json`
prints them for one run; docs/results/<gpu>.md carries them for the committed runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MIRAGE_BATCHES = (1, 8, 16)
FUSED_OPS = ("rmsnorm", "add_rmsnorm", "ngpt_update", "rmsnorm_linear", "gated_mlp", "lora_linear")
DECODE_OPS = ("gqa_decode", "qk_norm_decode")


@dataclass(frozen=True)
class Target:
    name: str
    covers: Callable[[dict], bool]       # the kernel record's extra_info -> is the case judged here
    metric: str                          # the extra_info field read
    bar: float                           # met when the field is at least this
    what: str                            # the number's meaning, for the table

    def judge(self, info: dict) -> tuple[float | None, bool | None]:
        v = info.get(self.metric)
        return (None, None) if not isinstance(v, (int, float)) else (float(v), v >= self.bar)


def _rows(info) -> int | None:
    s = info.get("shape", {})
    return s.get("rows", s.get("m", s.get("batch")))


def _one_row_wo(bits: str):
    return lambda i: i.get("op", "").startswith(f"wo_matmul_{bits}") and _rows(i) == 1


TARGETS = [
    Target("fused kernels at batch 1, 8, 16: at least the best baseline",
           lambda i: i.get("op") in FUSED_OPS and _rows(i) in MIRAGE_BATCHES,
           "speedup_vs_best_baseline", 1.0, "speedup"),
    Target("decode attention at batch 1, 8, 16: at least the best baseline",
           lambda i: i.get("op") in DECODE_OPS and _rows(i) in MIRAGE_BATCHES,
           "speedup_vs_best_baseline", 1.0, "speedup"),
    Target("GQA decode, batch 1, KV 32K: at least 85% of the copy bandwidth",
           lambda i: i.get("op") == "gqa_decode" and _rows(i) == 1 and i.get("shape", {}).get("kv_len") == 32768,
           "roofline_fraction", 0.85, "of copy bandwidth"),
    Target("decoder layers at batch 1 and 16: at least torch.compile",
           lambda i: i.get("op") == "decoder_layer" and _rows(i) in (1, 16),
           "speedup_vs_compile", 1.0, "speedup vs compile"),
    Target("W4A16 one row: at least the best baseline", _one_row_wo("int4"), "speedup_vs_best_baseline", 1.0,
           "speedup"),
    Target("W4A16 one row: at least 75% of the pure read of its bytes", _one_row_wo("int4"),
           "read_bound_fraction", 0.75, "of pure read"),
    Target("W8A16 one row: at least the best baseline", _one_row_wo("int8"), "speedup_vs_best_baseline", 1.0,
           "speedup"),
    Target("W8A16 one row: at least 75% of the pure read of its bytes", _one_row_wo("int8"),
           "read_bound_fraction", 0.75, "of pure read"),
]


def with_compile_speedup(info: dict) -> dict:
    """speedup_vs_compile from the record's per-baseline speedups, where compile ran."""
    sp = (info.get("speedups") or {}).get("compile")
    return {**info, "speedup_vs_compile": sp} if sp is not None else info


def judge(kernel_infos: list[dict]) -> list[tuple[Target, dict, float | None, bool | None]]:
    """(target, record, value, met) for every kernel record a target covers, in target order."""
    out = []
    for t in TARGETS:
        for info in sorted((with_compile_speedup(i) for i in kernel_infos if t.covers(i)), key=lambda i: i["case"]):
            value, met = t.judge(info)
            out.append((t, info, value, met))
    return out


def _value_text(target: Target, value: float | None) -> str:
    if value is None:
        return "not recorded"
    # enough digits that a miss never reads as the bar itself (0.998x, 84.8%)
    return f"{value:.3f}x" if target.bar == 1.0 else f"{100 * value:.1f}%"


def markdown_targets(kernel_infos: list[dict]) -> list[str]:
    """The targets as markdown: a line per target (met in how many cases), then each case
    that misses."""
    rows = judge(kernel_infos)
    lines = ["| target | cases | met | misses |", "|---|---|---|---|"]
    for t in TARGETS:
        mine = [r for r in rows if r[0] is t]
        met = sum(1 for r in mine if r[3])
        misses = [f"`{r[1]['case']}` {_value_text(t, r[2])}" for r in mine if not r[3]]
        lines.append(f"| {t.name} | {len(mine)} | {met} | {'; '.join(misses).replace('|', '/') or '-'} |")
    return lines
