"""The suite's speed targets, judged on recorded runs: which cases each target covers, the
number it reads from the kernel's record, and the bar. `python -m harness targets RUN.json`
prints them for one run; docs/results/<gpu>.md carries them for the committed runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MIRAGE_BATCHES = (1, 8, 16)
FUSED_OPS = ("rmsnorm", "add_rmsnorm", "ngpt_update", "rmsnorm_linear", "gated_mlp", "lora_linear")
DECODE_OPS = ("gqa_decode", "qk_norm_decode")
# the sparse prefill's dense baselines (its FlexAttention baseline computes the sparse function)
DENSE_PREFILL = ("dense_triton", "sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "flash_attn", "flash_attn_4")
# a baseline's reason in `unavailable_baselines` when the session did not select its test
NOT_SELECTED = "not selected: its test was deselected in this session (pytest -k, a shard)"
# the metrics that are a best over baselines, and which baselines (None: all of them)
BEST_OF = {"speedup_vs_best_baseline": None, "speedup_vs_best_dense": DENSE_PREFILL}


@dataclass(frozen=True)
class Target:
    name: str
    covers: Callable[[dict], bool]       # the kernel record's extra_info -> is the case judged here
    metric: str                          # the extra_info field read
    bar: float                           # met when the field is at least this (at most, with at_most)
    what: str                            # the number's meaning, for the table
    at_most: bool = False
    ceiling: str | None = None           # a derived field: the most the case allows (shown beside a miss)

    def judge(self, info: dict) -> tuple[float | None, bool | None]:
        """(value, met); met is None where the value is missing, or passes as a best over
        baselines some of which the run did not select (more baselines can only lower a
        speedup over the best of them: a miss stands)."""
        v = info.get(self.metric)
        if not isinstance(v, (int, float)):
            return None, None
        met = v <= self.bar if self.at_most else v >= self.bar
        return float(v), (None if met and self.left_out(info) else met)

    def left_out(self, info: dict) -> list[str]:
        """The baselines this target's best-of metric needs that the record's run did not select."""
        if self.metric not in BEST_OF:
            return []
        among = BEST_OF[self.metric]
        return sorted(n for n, why in (info.get("unavailable_baselines") or {}).items()
                      if why == NOT_SELECTED and (among is None or n in among))


def _rows(info) -> int | None:
    s = info.get("shape", {})
    return s.get("rows", s.get("m", s.get("batch")))


def _one_row_wo(bits: str):
    return lambda i: i.get("op", "").startswith(f"wo_matmul_{bits}") and _rows(i) == 1


def _shape(i, name):
    return i.get("shape", {}).get(name)


def _llama3(op: str, **shape):
    return lambda i: (i.get("op") == op and _shape(i, "model") == "llama3-8b"
                      and all(_shape(i, k) == v for k, v in shape.items()))


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
    Target("dense causal prefill from 8K tokens: at least 0.85x the best baseline",
           lambda i: i.get("op") == "prefill_attention" and (_shape(i, "tokens") or 0) >= 8192,
           "speedup_vs_best_baseline", 0.85, "speedup"),
    Target("whole model, LLaMA-3-8B decode at batch 1: at least 1.1x torch.compile",
           _llama3("model_decode", batch=1), "speedup_vs_compile", 1.1, "speedup vs compile"),
    Target("whole model, LLaMA-3-8B decode at batch 1: at least 85% of the read bound",
           _llama3("model_decode", batch=1), "roofline_fraction", 0.85, "of read bound"),
    Target("whole model, LLaMA-3-8B prefill: at least the best of eager and torch.compile",
           _llama3("model_prefill"), "speedup_vs_eager_and_compile", 1.0, "speedup"),
    Target("shared-prefix decode: at least the best baseline at every grid point",
           lambda i: i.get("op") == "shared_prefix_decode", "speedup_vs_best_baseline", 1.0, "speedup"),
    Target("shared-prefix decode, prefix >= 2K, suffix <= 128: at least half the floor-based ideal "
           "(the time at most twice the product's at peak)",
           lambda i: (i.get("op") == "shared_prefix_decode" and (_shape(i, "prefix") or 0) >= 2048
                      and (_shape(i, "suffix") or 1 << 30) <= 128),
           "roofline_fraction", 0.5, "of the floor"),
    Target("shared-prefix decode, suffix 16, prefix >= 2K: the prefix product at least 60% of the bf16 peak "
           "(its kernel's time in the call, by the CUDA profiler; in runs before that, the whole op's rate, a lower bound)",
           lambda i: (i.get("op") == "shared_prefix_decode" and (_shape(i, "prefix") or 0) >= 2048
                      and _shape(i, "suffix") == 16),
           "prefix_product_fraction", 0.6, "of bf16 peak"),
    Target("shared-prefix generation, prefix 8K, batch 256: at least 5x no sharing",
           _llama3("shared_prefix_generation", prefix=8192, batch=256), "speedup_vs_no_sharing", 5.0,
           "speedup vs no sharing", ceiling="no_sharing_ceiling"),
    Target("shared-prefix generation, prefix 8K, batch 256: within 80% of the no-attention bound",
           _llama3("shared_prefix_generation", prefix=8192, batch=256), "speedup_vs_no_attention", 0.8,
           "of no attention"),
    Target("sparse prefill, vertical-slash (1000, 6096) at 128K tokens: at least 3x the best dense prefill",
           lambda i: (i.get("op") == "sparse_prefill" and _shape(i, "pattern") == "vs-1000-6096"
                      and _shape(i, "tokens") == 131072), "speedup_vs_best_dense", 3.0, "speedup vs dense"),
    Target("sparse prefill, vertical-slash (1000, 6096) at 1M tokens: at least 10x the best dense prefill",
           lambda i: (i.get("op") == "sparse_prefill" and _shape(i, "pattern") == "vs-1000-6096"
                      and _shape(i, "tokens") == 1048576), "speedup_vs_best_dense", 10.0, "speedup vs dense"),
    Target("sparse prefill, vertical-slash from 64K tokens: estimate and index at most 5% of the time",
           lambda i: (i.get("op") == "sparse_prefill" and str(_shape(i, "pattern")).startswith("vs-")
                      and (_shape(i, "tokens") or 0) >= 65536), "estimate_index_share", 0.05,
           "of the prefill", at_most=True),
    Target("sparse prefill, A-shape (contiguous ranges): its tiles at least 70% of the dense kernel's rate",
           lambda i: i.get("op") == "sparse_prefill" and _shape(i, "pattern") == "a-shape",
           "tile_rate_vs_dense", 0.7, "of dense rate"),
]


def with_derived_fields(info: dict) -> dict:
    """The numbers targets read that a record holds only in parts: speedup_vs_<baseline> for
    each per-baseline speedup; speedup_vs_eager_and_compile (the smaller of the two) where
    both ran, or the one that ran where it already misses; for shared-prefix decode without
    a profiled prefix product, the op's roofline fraction as the product's (a lower bound);
    for shared-prefix generation, no_sharing_ceiling (no sharing's time over no attention's:
    the speedup over no sharing if attention cost nothing);
    for a sparse prefill, speedup_vs_best_dense, the estimate and index's share of its
    time, and its attention's rate on the pairs it computes over the dense kernel's."""
    sp = info.get("speedups") or {}
    out = {**info, **{f"speedup_vs_{name}": v for name, v in sp.items()}}
    both = [sp[k] for k in ("eager", "compile") if k in sp]
    if len(both) == 2 or (both and both[0] < 1.0):  # one alone can show a miss, never a pass
        out["speedup_vs_eager_and_compile"] = min(both)
    if info.get("op") == "shared_prefix_generation" and sp.get("no_attention") and sp.get("no_sharing"):
        # attention at no cost: the most any sharing can gain over no sharing at this shape
        out["no_sharing_ceiling"] = sp["no_sharing"] / sp["no_attention"]
    if info.get("op") == "shared_prefix_decode" and "prefix_product_fraction" not in info:
        out["prefix_product_fraction"] = info.get("roofline_fraction")  # the op's rate: the product's is higher
    if info.get("op") == "sparse_prefill":
        dense = [v for k, v in sp.items() if k in DENSE_PREFILL]
        if dense:
            out["speedup_vs_best_dense"] = min(dense)
        t = info.get("median_s")
        if t and isinstance(info.get("estimate_s"), (int, float)) and isinstance(info.get("index_s"), (int, float)):
            out["estimate_index_share"] = (info["estimate_s"] + info["index_s"]) / t
        shape, attn = info.get("shape", {}), info.get("attention_s")
        if "dense_triton" in sp and attn and t and info.get("flops") and shape.get("tokens"):
            T = shape["tokens"]
            dense_flops = 4 * shape["q_heads"] * shape["head_dim"] * T * (T + 1) / 2
            out["tile_rate_vs_dense"] = (info["flops"] / attn) / (dense_flops / (sp["dense_triton"] * t))
    return out


def judge(kernel_infos: list[dict]) -> list[tuple[Target, dict, float | None, bool | None]]:
    """(target, record, value, met) for every kernel record a target covers, in target order."""
    out = []
    for t in TARGETS:
        for info in sorted((with_derived_fields(i) for i in kernel_infos if t.covers(i)), key=lambda i: i["case"]):
            value, met = t.judge(info)
            out.append((t, info, value, met))
    return out


def _value_text(target: Target, value: float | None) -> str:
    if value is None:
        return "not recorded"
    # enough digits that a miss never reads as the bar itself (0.998x, 84.8%)
    return f"{value:.3f}x" if target.what.startswith("speedup") else f"{100 * value:.1f}%"


def _ceiling_text(target: Target, info: dict) -> str:
    c = info.get(target.ceiling) if target.ceiling else None
    if not isinstance(c, (int, float)):
        return ""
    return f" (at most {_value_text(target, c)} at this shape{': the bar is out of reach' if c < target.bar else ''})"


def _left_out_text(target: Target, info: dict, met: bool | None) -> str:
    names = target.left_out(info)
    return f" (not judged: its run did not select {', '.join(names)})" if names and met is None else ""


def markdown_targets(kernel_infos: list[dict]) -> list[str]:
    """The targets as markdown: a line per target (met in how many cases), then each case
    that misses."""
    rows = judge(kernel_infos)
    lines = ["| target | cases | met | misses |", "|---|---|---|---|"]
    for t in TARGETS:
        mine = [r for r in rows if r[0] is t]
        met = sum(1 for r in mine if r[3])
        misses = [f"`{r[1]['case']}` {_value_text(t, r[2])}{_ceiling_text(t, r[1])}{_left_out_text(t, r[1], r[3])}"
                  for r in mine if not r[3]]
        lines.append(f"| {t.name} | {len(mine)} | {met} | {'; '.join(misses).replace('|', '/') or '-'} |")
    return lines
