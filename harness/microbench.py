"""A microbenchmark runner that accepts torchao's YAML configs (benchmarks/microbenchmarks),
runs the suite's quantized kernels on them, and writes torchao's CSV columns plus the
suite's JSON.

    python -m harness.microbench --config configs/microbench.yml [--output-dir DIR] [--limit N >= 1]
    pytest -m perf --quant-config configs/microbench.yml     (the same cases as perf tests)

Config (torchao's keys; anything else, a value of another type, or a key given twice, is
a config error, exit 2, that names the key's path and what is allowed):

    quantization_config_recipe_names: [baseline, int8wo, int4wo-128, int4wo-128-hqq, ...]
    sparsity_config_recipe_names: [null]          # optional; sparsity is not supported
    output_dir: results/microbench                # optional
    benchmark_mode: inference                     # optional; the only mode
    model_params:                                 # one mapping, or a list of them
      - name: my_run                              # optional string; null: torchao's default
        matrix_shapes:                            # one or more shape sets, [m, k, n] each
          - {name: custom, shapes: [[1, 4096, 14336], [16, 4096, 4096]]}
          - {name: pow2, min_power: 10, max_power: 12}
        high_precision_dtype: torch.bfloat16      # bfloat16, float16 or float32 (Recipes, float32)
        use_torch_compile: true
        torch_compile_mode: max-autotune
        device: cuda                              # cuda or cpu
        model_type: linear                        # linear, ln_linear_<act>, transformer_block
        enable_profiler: false                    # accepted for compatibility; must be false
        enable_memory_profiler: false

Recipes, each the suite's own implementation (kernels/quant):
    baseline         the model in high_precision_dtype (F.linear: cuBLAS on the GPU)
    int8wo           int8 weight-only, per output channel          (Triton W8A16)
    int4wo-<g>       int4 weight-only, asymmetric, group g          (Triton W4A16)
    int4wo-<g>-hqq   the same with HQQ's zero-points
    int8dq           int8 weights per channel, int8 activations per token (Triton W8A8)
    float8wo         float8 e4m3 weights per output channel, dequantized in PyTorch
    mixq-w8a8        MixQ W8A8O16, outliers (|x| > 6) predicted by a locality cache
    mixq-w4a4        MixQ W4A4O16, 128 outlier channels (at most k / 16) calibrated offline
float32 (high_precision_dtype: torch.float32), as torchao runs it: the model and inputs in
float32, never cast. baseline and float8wo run in float32; int8wo and int4wo-* run the
quantized weight dequantized to float32, then F.linear (torchao's float32 path: its int8
weight-only linear and its int4 fallback do the same; the Triton kernels take float16 or
bfloat16); int8dq and mixq-*, whose kernels quantize 16-bit activations only, are skipped
with the reason (the `skipped` column; exit 0). The `implementation` column says which ran.
Shape sets ([m, k, n], as torchao's benchmark_runner.get_shapes_for_config): custom
(shapes); llama (LLaMA-2-70B single-node weights at m = 4 x 4096 tokens); pow2 (2^p cubed,
p from min_power to max_power, default 10..14); pow2_extended (2^p and 1.5 x 2^p cubed,
default 10..14); sweep (every m, k, n over 2^p, default 8..15: 512 shapes); small_sweep
(every m <= k <= n over 2^p, default 10..14: 35 shapes, ordered by m, then k, then n).
Model types: linear (one Linear k -> n); ln_linear_<act> (LayerNorm, Linear, activation);
transformer_block (pre-norm block of hidden k, 8 heads, causal attention over the m
tokens, MLP k -> n -> k; every Linear quantized).

Activations. LLM activations carry a few input channels far larger than the rest, which is
what MixQ is built for, so every item (every recipe, not only MixQ's: the items of one
model and shape then see identical inputs and weights, and their SQNR and times compare)
plants them: max(2, k / 128) fixed channels (the same for every item of that k) are 20x the
others, |x| = 20 |z| with z ~ N(0, 1), above MixQ's threshold 6 for about 3 tokens in 4.
In `linear` they are in the input; in ln_linear_<act> and transformer_block the norm's
weight carries them (gain 20 on those channels), as LLMs' norms do, since the norm would
scale input outliers back down. Inputs are seeded per model and shape, not per recipe.
mixq-w8a8's cache learns from one calibration call (at least CALIB_TOKENS tokens, as is
mixq-w4a4's offline set), then runs HIT_RATE_CALLS more calls
on fresh draws, each checked: the hit rate (mixq_outlier_hit_rate) is the fraction of
those (layer, call) checks whose prediction held. int8dq quantizes the outliers with their
token, so its SQNR is far below mixq-w8a8's on these inputs: the outlier path shows.

Timing. device: cuda items are timed as the perf cases are (harness/timing.py). device: cpu
items are timed on the host: the median of single calls timed with time.perf_counter, at
least CPU_MIN_CALLS and as many more as --rep-ms allows, on one intra-op thread as torchao's
runner times them (two threads on a busy 2-core machine made a 30 us F.linear take 8 ms).

Output, under output_dir (or --output-dir), new names, nothing overwritten:
    results_<date>_<time>.csv   torchao's CSV columns in its order (torch_compile_mode is
                                empty when not compiled, as torchao writes None), then the
                                suite's: shape_name, quantized_sqnr_db, timing, gpu,
                                mixq_outlier_hit_rate, mixq_outlier_channels,
                                implementation, skipped, error
    results_<date>_<time>.json  a pytest-benchmark results file, as the perf tests save:
                                machine_info (gpu, software, lane), commit_info, datetime,
                                and one 'benchmarks' entry per timed implementation of an
                                item (baseline, the recipe, and their _compiled versions),
                                its samples in stats.data and the suite's extra_info (case,
                                provider, role, median_s, tflops, gbps, roofline_fraction,
                                speedups, ...); 'microbench' holds the config and the CSV
                                rows. `python -m harness table FILE` and `python -m harness
                                gate OLD NEW` read it like any results file.
"""
from __future__ import annotations

from harness.lanes import configure_interpreter

configure_interpreter()  # before torch._dynamo loads triton.language (torch.compiler.disable below)

import argparse
import csv
import json
import os
import re
import reprlib
import shlex
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from harness.progress import Progress

RECIPE_FIXED = ("baseline", "int8wo", "int8dq", "float8wo", "mixq-w8a8", "mixq-w4a4")
RECIPE_PATTERNS = ("int4wo-<group>", "int4wo-<group>-hqq")
GROUPS = (32, 64, 128, 256)
SHAPE_SETS = {"custom": ("shapes",), "llama": (), "pow2": ("min_power", "max_power"),
              "pow2_extended": ("min_power", "max_power"), "sweep": ("min_power", "max_power"),
              "small_sweep": ("min_power", "max_power")}
POWER_DEFAULTS = {"pow2": (10, 14), "pow2_extended": (10, 14), "sweep": (8, 15), "small_sweep": (10, 14)}
ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh,
               "leakyrelu": F.leaky_relu, "relu6": F.relu6, "hardswish": F.hardswish, "elu": F.elu, "mish": F.mish}
DTYPES = {"torch.bfloat16": torch.bfloat16, "torch.float16": torch.float16, "torch.float32": torch.float32}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DEVICES = ("cuda", "cpu")
MODEL_TYPES = ("linear", "transformer_block", *(f"ln_linear_{a}" for a in ACTIVATIONS))
TOP_KEYS = {"quantization_config_recipe_names", "sparsity_config_recipe_names", "output_dir", "model_params",
            "benchmark_mode"}
PARAM_KEYS = {"name", "matrix_shapes", "high_precision_dtype", "use_torch_compile", "torch_compile_mode", "device",
              "model_type", "sparsity", "enable_profiler", "enable_memory_profiler"}
# Each recipe's output against the unquantized float32 model may differ by this relative
# norm before the case is called wrong (from the SQNR floors of tests/correctness/quant,
# with room for LayerNorm and attention around the linears). int8dq quantizes the planted
# outlier channels with their token: 25 dB at k = 4096 (32 channels), about 24 at 14336.
RECIPE_RTOL = {"baseline": 2e-2, "int8wo": 3e-2, "int8dq": 0.1, "float8wo": 8e-2, "mixq-w8a8": 5e-2,
               "mixq-w4a4": 0.35, "int4wo": 0.2}
# torchao's CSV columns, in its order (benchmarks/microbenchmarks/utils.py), then ours.
TORCHAO_COLUMNS = ["name", "quantization", "sparsity", "m", "k", "n", "high_precision_dtype", "torch_compile_mode",
                   "device", "model_type", "output_dir", "enable_profiler", "enable_memory_profiler",
                   "baseline_model_eager_inference_time_in_ms", "quantized_model_eager_inference_time_in_ms",
                   "baseline_model_compiled_inference_time_in_ms", "quantized_model_compiled_inference_time_in_ms",
                   "eager speedup on baseline", "compile speedup on baseline", "eager vs compile speedup",
                   "profiler_json_path", "memory_profile_path", "memory_visualization_path", "memory_stats"]
EXTRA_COLUMNS = ["shape_name", "quantized_sqnr_db", "timing", "gpu", "mixq_outlier_hit_rate", "mixq_outlier_channels",
                 "implementation", "skipped", "error"]
# What runs each recipe's quantized linears (the `implementation` column).
IMPLEMENTATIONS = {"baseline": "PyTorch: the unquantized model", "int8wo": "Triton W8A16 (kernels.quant.wo_matmul)",
                   "int4wo": "Triton W4A16 (kernels.quant.wo_matmul)",
                   "int8dq": "Triton W8A8 (kernels.quant.mixq_linear, no outlier channels)",
                   "float8wo": "PyTorch: e4m3 weight dequantized, then F.linear",
                   "mixq-w8a8": "Triton MixQ W8A8O16 (kernels.quant.mixq_linear)",
                   "mixq-w4a4": "Triton MixQ W4A4O16 (kernels.quant.mixq_linear)"}
# float32 activations: the Triton kernels take float16/bfloat16. The weight-only recipes run
# as torchao runs them in float32 (its int8 path and its int4 fallback dequantize the weight);
# the W8A8 ones quantize 16-bit activations only and are skipped: a cast would not be float32.
FP32_WEIGHT_ONLY = ("PyTorch: the quantized weight dequantized to float32, then F.linear (torchao's float32 path; "
                    "the Triton kernel takes float16/bfloat16)")
FP32_UNSUPPORTED = ("int8dq", "mixq-w8a8", "mixq-w4a4")
# The baseline's arithmetic runs on its dtype's matmul units: the ceiling (harness/ceilings.py)
# an item's roofline is drawn against (Cost requires one for compute-heavy shapes).
MATMUL_CEILINGS = {torch.bfloat16: "bf16_tflops", torch.float16: "fp16_tflops", torch.float32: "fp32_tflops"}
OUTLIER_GAIN = 20.0    # planted channels: 20x the others (module doc, Activations)
OUTLIER_SEED = 6       # which channels: one fixed draw per k
HIT_RATE_CALLS = 8     # checked calls of mixq-w8a8's cache after its calibration call
CALIB_TOKENS = 256     # at least this many tokens in the calibration call
W4A4_OUTLIERS = 128    # MixQ W4A4O16's offline outlier channels (at most k / 16)
CPU_TIMING = "host wall clock (cpu, 1 thread)"
CPU_MIN_CALLS = 10       # host timing: at least this many calls ...
CPU_MAX_CALLS = 100_000  # ... and at most this many, within the --rep-ms budget
CPU_REP_MS = 100.0       # that budget where run_item gets no TimingConfig


class ConfigError(ValueError):
    """A bad microbenchmark config: names the key, the value and what is allowed."""


@dataclass
class BenchItem:
    recipe: str
    model_type: str
    shape_name: str
    m: int
    k: int
    n: int
    dtype: torch.dtype
    dtype_name: str
    compile_mode: str | None   # None: use_torch_compile is false
    device: str
    output_dir: str
    name: str
    skip: str | None = None    # why the item is not run (a float32 recipe without a float32 path)
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return (f"{self.recipe} {self.model_type} {self.shape_name} m={self.m} k={self.k} n={self.n} {self.dtype_name}"
                + (f" compile={self.compile_mode}" if self.compile_mode else ""))


def recipe_kind(recipe: str) -> str:
    """The recipe without its int4 group: the key of RECIPE_RTOL and IMPLEMENTATIONS."""
    return "int4wo" if recipe.startswith("int4wo") else recipe


def implementation(item) -> str:
    """What runs the item's quantized linears (FP32_WEIGHT_ONLY for float32 weight-only)."""
    if item.dtype == torch.float32 and recipe_kind(item.recipe) in ("int8wo", "int4wo"):
        return FP32_WEIGHT_ONLY
    return IMPLEMENTATIONS[recipe_kind(item.recipe)]


def check_recipe(recipe, where: str = "quantization_config_recipe_names") -> str:
    allowed = f"allowed: {', '.join(RECIPE_FIXED + RECIPE_PATTERNS)} (group in {GROUPS})"
    if not isinstance(recipe, str):
        raise ConfigError(f"{where}: {_show(recipe)} is not a string; {allowed}")
    if recipe in RECIPE_FIXED:
        return recipe
    m = re.fullmatch(r"int4wo-(\d+)(-hqq)?", recipe)
    if m and int(m.group(1)) in GROUPS:
        return recipe
    if m:
        raise ConfigError(f"{where}: {_show(recipe)} has group {m.group(1)}; groups: {GROUPS}")
    raise ConfigError(f"{where}: unknown recipe {_show(recipe)}; {allowed}")


_REPR = reprlib.Repr()  # Python 3.11's takes no arguments
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel = 80, 80, 4


def _show(v) -> str:
    """A config value in a message: its repr, cut short (a value may be a huge or deep list)."""
    return _REPR.repr(v)


def _choice(where, v, allowed):
    """v, one of the strings in allowed; anything else (another type too) names where."""
    if not isinstance(v, str) or v not in allowed:
        raise ConfigError(f"{where}: {_show(v)}; allowed: {', '.join(allowed)}")
    return v


def _int(where, v, lo=1):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{where}: {_show(v)} must be an integer >= {lo}")
    return v


def _unsupported_null(where, v, what):
    """torchao's optional features this runner lacks: only null (or 'none') is accepted."""
    if not (v is None or (isinstance(v, str) and v in ("none", "None"))):
        raise ConfigError(f"{where}: {_show(v)} is not supported here ({what}); allowed: null")


def shapes_of(spec: dict, where: str) -> list[tuple[str, list[int]]]:
    """[(shape name, [m, k, n])] of one matrix_shapes entry."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"{where}: {_show(spec)} must be a mapping with a 'name' (one of {', '.join(SHAPE_SETS)})")
    name = spec["name"]
    if not isinstance(name, str) or name not in SHAPE_SETS:
        raise ConfigError(f"{where}.name: unknown shape set {_show(name)}; allowed: {', '.join(SHAPE_SETS)}")
    allowed = {"name", *SHAPE_SETS[name]}
    for key in spec:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {_show(key)} for shape set {_show(name)}; allowed: {', '.join(sorted(allowed))}")
    if name == "custom":
        shapes = spec.get("shapes")
        if not isinstance(shapes, list) or not shapes:
            raise ConfigError(f"{where}.shapes: {_show(shapes)}; a non-empty list of [m, k, n] is required for 'custom'")
        out = []
        for i, s in enumerate(shapes):
            if not isinstance(s, list) or len(s) != 3:
                raise ConfigError(f"{where}.shapes[{i}]: {_show(s)} is malformed; expected [m, k, n] of positive integers")
            out.append(("custom", [_int(f"{where}.shapes[{i}][{j}]", v) for j, v in enumerate(s)]))
        return out
    if name == "llama":  # LLaMA-2-70B on one node: fused wqkv and w13, batch 4 x 4096 tokens
        m = 4 * 4096
        return [(f"llama.{layer}", [m, k, n]) for layer, (k, n) in
                {"attn.wqkv": (8192, 1280), "attn.w0": (1024, 8192), "ffn.w13": (8192, 7168),
                 "ffn.w2": (3584, 8192)}.items()]
    lo, hi = POWER_DEFAULTS[name]
    lo = _int(f"{where}.min_power", spec.get("min_power", lo), 0)
    hi = _int(f"{where}.max_power", spec.get("max_power", hi), 0)
    if lo > hi or hi > 16 or (name == "pow2_extended" and lo < 1):
        raise ConfigError(f"{where}: min_power {lo} .. max_power {hi} must satisfy min <= max <= 16"
                          + (" and min >= 1 (1.5 x 2^p must be an integer)" if name == "pow2_extended" else ""))
    ps = range(lo, hi + 1)
    if name == "pow2":
        return [(name, [2**p] * 3) for p in ps]
    if name == "pow2_extended":
        return [(name, [v] * 3) for p in ps for v in (2**p, 2**p + 2 ** (p - 1))]
    if name == "sweep":
        return [(name, [2**a, 2**b, 2**c]) for a in ps for b in ps for c in ps]
    # small_sweep: torchao's sweep kept to m <= k <= n (fewer shapes, a heatmap's worth)
    return [(name, [2**a, 2**b, 2**c]) for a in ps for b in ps for c in ps if a <= b <= c]


def _refuse_duplicate_keys(node, where: str = "", seen=None) -> None:
    """PyYAML keeps the last of two equal keys without a word: refuse them, naming the path."""
    import yaml

    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias met again (possibly a recursive one)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines = {}
        for key, value in node.value:
            label = key.value if isinstance(key, yaml.ScalarNode) else None
            path = f"{where}.{label}" if where else str(label)
            if label is not None:
                ident = (key.tag, label)
                if ident in lines:
                    raise ConfigError(f"{path}: duplicated key (lines {lines[ident]} and {key.start_mark.line + 1}); "
                                      "give each key once")
                lines[ident] = key.start_mark.line + 1
            _refuse_duplicate_keys(value, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _refuse_duplicate_keys(value, f"{where}[{i}]", seen)


def load_config(path: str) -> list[BenchItem]:
    """Every (recipe, model params, shape) of a torchao-style YAML config, validated."""
    import yaml

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path!r} is a directory; give a YAML file") from None
    except OSError as e:
        raise ConfigError(f"config file {path!r} cannot be read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path!r} is not UTF-8 text (byte {e.start}); give a YAML file") from None
    try:
        loader = yaml.SafeLoader(text)
        loader.name = path  # YAML errors point at the file, not "<unicode string>"
        try:
            node = loader.get_single_node()
            if node is not None:
                _refuse_duplicate_keys(node)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"config file {path!r} is nested too deeply to read") from None
    return parse_config(data)


def parse_config(data) -> list[BenchItem]:
    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a mapping with keys: {', '.join(sorted(TOP_KEYS))}; got "
                          f"{type(data).__name__ if data is not None else 'an empty file'}")
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"unknown top-level key {_show(key)}; allowed: {', '.join(sorted(TOP_KEYS))}")
    for key in ("quantization_config_recipe_names", "model_params"):
        if key not in data:
            raise ConfigError(f"missing key {_show(key)}")
    recipes = data["quantization_config_recipe_names"]
    if not isinstance(recipes, list) or not recipes:
        raise ConfigError(f"quantization_config_recipe_names: {_show(recipes)}; a non-empty list of recipe names is required")
    for i, r in enumerate(recipes):
        check_recipe(r, f"quantization_config_recipe_names[{i}]")
        if r in recipes[:i]:  # the same items twice would be two results of one case
            raise ConfigError(f"quantization_config_recipe_names[{i}]: {_show(r)} is listed twice; list each recipe once")
    sparsity_names = data.get("sparsity_config_recipe_names")
    if sparsity_names is not None and not isinstance(sparsity_names, list):
        raise ConfigError(f"sparsity_config_recipe_names: {_show(sparsity_names)} must be a list of null "
                          "(sparsity is not supported here)")
    for j, s in enumerate(sparsity_names or []):
        _unsupported_null(f"sparsity_config_recipe_names[{j}]", s, "sparsity")
    _choice("benchmark_mode", data.get("benchmark_mode", "inference"), ("inference",))
    output_dir = data.get("output_dir", "results/microbench")
    if not isinstance(output_dir, str):
        raise ConfigError(f"output_dir: {_show(output_dir)} must be a path string")
    if not output_dir.strip():
        raise ConfigError(f"output_dir: {_show(output_dir)}; give a non-empty path (a directory, created if missing)")
    params_list = data["model_params"]
    params_list = [params_list] if isinstance(params_list, dict) else params_list
    if not isinstance(params_list, list) or not params_list:
        raise ConfigError(f"model_params: {_show(params_list)}; a mapping, or a non-empty list of mappings, is required")
    items, cases = [], {}
    for i, params in enumerate(params_list):
        where = f"model_params[{i}]"
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: {_show(params)} must be a mapping")
        for key in params:
            if key not in PARAM_KEYS:
                raise ConfigError(f"{where}: unknown key {_show(key)}; allowed: {', '.join(sorted(PARAM_KEYS))}")
        if "matrix_shapes" not in params:
            raise ConfigError(f"{where}: missing key 'matrix_shapes'")
        run_name = params.get("name")
        if run_name is not None and (not isinstance(run_name, str) or not run_name.strip()):
            raise ConfigError(f"{where}.name: {_show(run_name)} must be a non-empty string (the rows' name), "
                              "or null for torchao's default benchmark_<recipe>_<model>_m<m>_k<k>_n<n>")
        dname = _choice(f"{where}.high_precision_dtype", params.get("high_precision_dtype", "torch.bfloat16"),
                        tuple(DTYPES))
        use_compile = params.get("use_torch_compile", False)
        if not isinstance(use_compile, bool):
            raise ConfigError(f"{where}.use_torch_compile: {_show(use_compile)} must be true or false")
        mode = _choice(f"{where}.torch_compile_mode", params.get("torch_compile_mode", "default"), COMPILE_MODES)
        device = _choice(f"{where}.device", params.get("device", "cuda"), DEVICES)
        model_type = _choice(f"{where}.model_type", params.get("model_type", "linear"), MODEL_TYPES)
        _unsupported_null(f"{where}.sparsity", params.get("sparsity"), "sparsity")
        for key in ("enable_profiler", "enable_memory_profiler"):
            v = params.get(key)
            if v is not None and v is not False:  # 0 == False, but is not a boolean
                raise ConfigError(f"{where}.{key}: {_show(v)}; profiling is not supported here; allowed: false")
        shapes_cfg = params["matrix_shapes"]
        if not isinstance(shapes_cfg, list) or not shapes_cfg:
            raise ConfigError(f"{where}.matrix_shapes: {_show(shapes_cfg)}; a non-empty list of shape sets is required")
        shapes = []
        have = _device_bytes(device)
        for j, spec in enumerate(shapes_cfg):
            entry = f"{where}.matrix_shapes[{j}]"
            for i, (shape_name, mkn) in enumerate(shapes_of(spec, entry)):
                path = f"{entry}.shapes[{i}]" if shape_name == "custom" else entry
                # what names a case in the JSON (not the device): a repeat would hide the other's result
                case = (model_type, shape_name, *mkn, dname, mode if use_compile else None)
                if case in cases:
                    raise ConfigError(f"{path}: {shape_name} {mkn} repeats {cases[case]} (the same model type, dtype "
                                      "and compile mode; the device is not part of a case's name): list a case once")
                cases[case] = path
                m, k, n = mkn
                need = (m * k + k * n + m * n) * DTYPES[dname].itemsize  # x, the weight and y, at the least
                if have is not None and need > have:
                    raise ConfigError(f"{path}: {shape_name} {mkn} needs at least {need / 2**30:.3g} GiB for x, the "
                                      f"weight and y in {dname}; the {device} device has {have / 2**30:.3g} GiB")
                shapes.append((shape_name, mkn))
        dtype = DTYPES[dname]
        for recipe in recipes:
            skip = None
            if dtype == torch.float32 and recipe in FP32_UNSUPPORTED:
                skip = (f"{recipe} has no float32 path: its Triton kernel quantizes float16/bfloat16 activations, "
                        "and a cast would time float16 work as float32")
            for shape_name, (m, k, n) in shapes:
                if model_type == "transformer_block" and k % 8:
                    raise ConfigError(f"{where}: transformer_block needs k divisible by its 8 heads; got k={k}")
                group = int(recipe.split("-")[1]) if recipe.startswith("int4wo") else 1
                if k % group or (model_type == "transformer_block" and n % group):
                    raise ConfigError(f"{where}: recipe {_show(recipe)} needs k (and n, the MLP width, for transformer_block) "
                                      f"divisible by its group; got shape {shape_name} [{m}, {k}, {n}]")
                name = run_name or f"benchmark_{recipe}_{model_type}_m{m}_k{k}_n{n}" + (
                    "_compile" if use_compile else "")
                items.append(BenchItem(recipe, model_type, shape_name, m, k, n, dtype, dname,
                                       mode if use_compile else None, device, output_dir, name, skip))
    return items


# ---- models (torchao's toy models) and their quantized versions ----

class LNLinearAct(nn.Module):
    def __init__(self, k, n, act):
        super().__init__()
        self.ln, self.fc, self.act = nn.LayerNorm(k), nn.Linear(k, n, bias=False), ACTIVATIONS[act]

    def forward(self, x):
        return self.act(self.fc(self.ln(x)))


class TransformerBlock(nn.Module):
    """Pre-norm: x + Wo Attn(causal, 8 heads), then + W2 GELU(W1 .); hidden k, MLP n."""

    def __init__(self, k, n, heads=8):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.RMSNorm(k), nn.RMSNorm(k)
        self.qkv, self.proj = nn.Linear(k, 3 * k, bias=False), nn.Linear(k, k, bias=False)
        self.fc1, self.fc2 = nn.Linear(k, n, bias=False), nn.Linear(n, k, bias=False)

    def forward(self, x):  # x (m, k): one sequence of m tokens
        m, k = x.shape
        q, kk, v = self.qkv(self.norm1(x)).view(m, 3, self.heads, k // self.heads).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(0, 1), kk.transpose(0, 1), v.transpose(0, 1), is_causal=True)
        x = x + self.proj(a.transpose(0, 1).reshape(m, k))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


SEED_CALIB, SEED_INPUT, SEED_HIT_RATE = 0, 1, 2  # activations: calibration, the timed input, the checked calls


def outlier_channels(k: int) -> torch.Tensor:
    """The planted outlier channels of k input channels: max(2, k / 128) of them, one fixed
    draw per k, so every item of that k has the same (module doc, Activations)."""
    g = torch.Generator().manual_seed(OUTLIER_SEED)
    return torch.randperm(k, generator=g)[:min(k, max(2, k // 128))].sort().values


def make_model(item: BenchItem, seed: int = 0) -> nn.Module:
    """The float32 model of an item: the same weights for every recipe of a model and shape.
    The norms in front of the Linears carry the planted outlier channels."""
    torch.manual_seed(seed)
    k, n = item.k, item.n
    if item.model_type == "linear":
        model = nn.Sequential(nn.Linear(k, n, bias=False))
    elif item.model_type == "transformer_block":
        model = TransformerBlock(k, n)
    else:
        model = LNLinearAct(k, n, item.model_type[len("ln_linear_"):])
    norms = [m for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.RMSNorm))]
    with torch.no_grad():
        for norm in norms:
            norm.weight[outlier_channels(k)] = OUTLIER_GAIN
    return model.eval()


def make_activations(item: BenchItem, seed: int, dtype=torch.float32, rows=None) -> torch.Tensor:
    """x (rows, k) of an item (default m rows), N(0, 1) drawn from seed alone (identical for
    every recipe), with the planted outlier channels 20x for `linear` (the others' norms
    plant them)."""
    g = torch.Generator(device=item.device).manual_seed(seed)
    x = torch.randn(rows or item.m, item.k, generator=g, device=item.device)
    if item.model_type == "linear":
        x[:, outlier_channels(item.k).to(item.device)] *= OUTLIER_GAIN
    return x.to(dtype)


class QuantLinear(nn.Module):
    """One nn.Linear run by a recipe's kernel (see the module doc)."""

    def __init__(self, linear: nn.Linear, recipe: str, dtype, calib: torch.Tensor):
        super().__init__()
        from kernels.quant import (MixQLinear, quantize_int4_weight, quantize_int4_weight_hqq, quantize_int8_weight)

        w = linear.weight.detach()
        self.recipe, self.bias = recipe, linear.bias
        if recipe == "int8wo":
            self.qw = quantize_int8_weight(w, dtype)
        elif recipe.startswith("int4wo"):
            group = int(recipe.split("-")[1])
            self.qw = (quantize_int4_weight_hqq if recipe.endswith("hqq") else quantize_int4_weight)(w, group, dtype)
        elif recipe == "float8wo":
            scale = (w.float().abs().amax(dim=1) / torch.finfo(torch.float8_e4m3fn).max).clamp_min(1e-12)
            self.w8, self.s8 = (w.float() / scale[:, None]).to(torch.float8_e4m3fn), scale.to(dtype)
        elif recipe == "int8dq":  # W8A8, per-token activations, no outlier channels
            self.mixq = MixQLinear(w, threshold=float("inf"), dtype=dtype)
            self.mixq.track = False
        elif recipe == "mixq-w8a8":  # the cache learns the outliers from one calibration call
            self.mixq = MixQLinear(w, dtype=dtype)
            self.mixq(calib.to(dtype))
            self.mixq.cache.update()
            self.mixq.cache.hits = self.mixq.cache.checks = 0  # the hit rate counts later calls
        elif recipe == "mixq-w4a4":
            # At most k / 16: on a small layer 128 would keep every channel in 16 bits.
            self.mixq = MixQLinear(w, dtype=dtype, bits=4)
            self.mixq.calibrate(calib.to(dtype), min(W4A4_OUTLIERS, max(1, w.shape[1] // 16)))
        else:
            raise ConfigError(f"recipe {recipe!r} has no kernel")

    @torch.compiler.disable  # the suite's kernels run as they are inside a compiled model
    def forward(self, x):
        from kernels.quant import mixq_linear, wo_matmul
        from kernels.quant.baselines import dequant_linear

        if self.recipe == "float8wo":
            y = F.linear(x, self.w8.to(x.dtype) * self.s8[:, None])
        elif hasattr(self, "qw") and x.dtype == torch.float32:  # FP32_WEIGHT_ONLY
            qw = self.qw
            y = dequant_linear(x, qw.qweight, qw.scale, qw.zero, qw.group, qw.bits)
        elif hasattr(self, "qw"):
            y = wo_matmul(x, self.qw)
        else:
            y = mixq_linear(x, self.mixq)
        return y + self.bias if self.bias is not None else y


def quantize_model(model: nn.Module, recipe: str, dtype, x: torch.Tensor) -> nn.Module:
    """A copy of model (in dtype) with every nn.Linear replaced by the recipe's QuantLinear,
    calibrated on the inputs each Linear sees for x."""
    import copy

    model = copy.deepcopy(model).to(dtype)
    if recipe == "baseline":
        return model
    seen = {}
    hooks = [mod.register_forward_pre_hook(lambda mod, args, name=name: seen.__setitem__(name, args[0].detach()))
             for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    with torch.no_grad():
        model(x.to(dtype))
    for h in hooks:
        h.remove()
    for name in list(seen):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantLinear(getattr(parent, child), recipe, dtype, seen[name]))
    return model


def _mixq_layers(model: nn.Module) -> list:
    return [m.mixq for m in model.modules() if isinstance(m, QuantLinear) and m.recipe.startswith("mixq")]


def measure_hit_rate(model: nn.Module, item: BenchItem, calls: int = HIT_RATE_CALLS):
    """mixq-w8a8: `calls` calls on fresh draws of the item's activations, every layer's cache
    checked after each (one sync per layer and call). The fraction of those checks whose
    prediction held, or None where no layer predicts (other recipes)."""
    caches = [layer.cache for layer in _mixq_layers(model) if layer.track]
    if not caches:
        return None
    for c in caches:
        c.hits = c.checks = 0
    with torch.no_grad():
        for i in range(calls):
            model(make_activations(item, SEED_HIT_RATE + i, item.dtype))
            for c in caches:
                c.update()
    return sum(c.hits for c in caches) / sum(c.checks for c in caches)


def outlier_set_size(model: nn.Module):
    """Outlier channels the MixQ layers hold in 16 bits, summed over the layers (None for
    other recipes)."""
    layers = _mixq_layers(model)
    return sum(int(layer.cache.idx.numel()) for layer in layers) if layers else None


# ---- a case: the suite's PerfCase for the GPU; host timing on the CPU ----

def build_case(item: BenchItem):
    """The PerfCase of one item: baseline and quantized model, eager and (if asked)
    compiled, checked against the float32 model on the same input. For MixQ the cache's hit
    rate over HIT_RATE_CALLS checked calls, and the outlier set, go into the kernel's
    extra_info (here and in the perf tests' results)."""
    from harness.metrics import Cost
    from harness.perfcase import PerfCase
    from kernels.providers import compiled

    device = item.device
    base32 = make_model(item).to(device)
    # Calibration (MixQ's offline outlier set, the W8A8 cache's first call) sees at least
    # CALIB_TOKENS tokens, not the item's m: calibrated on one token, W4A4O16 missed the
    # planted channels that token happened to hold small (44% error on a GPU run at m = 1).
    x0 = make_activations(item, SEED_CALIB, rows=max(item.m, CALIB_TOKENS))
    baseline = quantize_model(base32, "baseline", item.dtype, x0)
    quant = quantize_model(base32, item.recipe, item.dtype, x0)
    info = {"planted_outlier_channels": int(outlier_channels(item.k).numel()), "outlier_gain": OUTLIER_GAIN,
            "implementation": implementation(item)}
    if item.recipe.startswith("mixq"):
        info["mixq_outlier_hit_rate"] = measure_hit_rate(quant, item)
        info["mixq_hit_rate_calls"] = HIT_RATE_CALLS if info["mixq_outlier_hit_rate"] is not None else 0
        info["mixq_outlier_channels"] = outlier_set_size(quant)
    providers = {"baseline": lambda x: baseline(x)}
    if item.recipe != "baseline":
        providers[item.recipe] = lambda x: quant(x)
    if item.compile_mode:
        mode = None if item.compile_mode == "default" else item.compile_mode
        base_c = torch.compile(baseline, mode=mode, dynamic=False) if mode else compiled(baseline)
        providers["baseline_compiled"] = lambda x: base_c(x)
        if item.recipe != "baseline":
            quant_c = torch.compile(quant, mode=mode, dynamic=False) if mode else compiled(quant)
            providers[f"{item.recipe}_compiled"] = lambda x: quant_c(x)
    weights = sum(m.weight.numel() for m in base32.modules() if isinstance(m, nn.Linear))
    elt = torch.finfo(item.dtype).bits // 8
    rtol = RECIPE_RTOL[recipe_kind(item.recipe)]
    case = PerfCase(
        op=f"microbench/{item.model_type}", dtype=item.dtype,
        # the compile mode too: two model_params differing only in it are two cases
        shape={"recipe": item.recipe, "shape": item.shape_name, "m": item.m, "k": item.k, "n": item.n,
               "compile": item.compile_mode or "none"},
        # seeded: every call, and every recipe of this model and shape, gets the same x
        make_inputs=lambda: (make_activations(item, SEED_INPUT, item.dtype),),
        providers=providers,
        # The linears' flops and their weights read once (the baseline's bytes: what a
        # quantized recipe saves shows as a roofline fraction above the baseline's).
        cost=Cost(flops=2 * item.m * weights, bytes=weights * elt + 2 * item.m * (item.k + item.n) * elt,
                  flops_ceiling=MATMUL_CEILINGS[item.dtype]),
        reference=lambda x: base32(x.float()),
        rtol=rtol, kernel=item.recipe, kernel_info=info,
        # the models hold their weights; the smallest recipe (int4) reads about weights / 2
        # bytes, and where that fits in L2 the case is timed with a flush per call (perfcase)
        held_bytes=weights // 2)
    return case, quant


def _host_samples_s(fn, x, budget_s: float, min_calls: int = CPU_MIN_CALLS) -> list[float]:
    """Host seconds of single calls, timed with perf_counter, after one untimed call: at
    least min_calls of them, and more until budget_s is spent (thousands for a fast call).
    One intra-op thread, as torchao's microbenchmarks time (torch.utils.benchmark.Timer,
    num_threads=1): with two, a tiny F.linear took 8 ms a call on the 2-core CPU lane,
    waiting for a core the scheduler had given to another process, instead of 20-50 us."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn(x)
        ts, start = [], time.perf_counter()
        while len(ts) < min_calls or (time.perf_counter() - start < budget_s and len(ts) < CPU_MAX_CALLS):
            t0 = time.perf_counter()
            fn(x)
            ts.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return ts


def run_item(item: BenchItem, timing=None, ceilings=None) -> tuple[dict, list[dict]]:
    """Time one item. Returns its CSV row (torchao's columns, then the suite's) and its
    pytest-benchmark entries, one per timed implementation (none when the item failed)."""
    from harness.perfcase import build_records, check_providers, run_case
    from harness.timing import Measurement
    from kernels.quant import sqnr_db

    row = {c: None for c in TORCHAO_COLUMNS + EXTRA_COLUMNS}
    # torch_compile_mode None when not compiled: torchao's to_dict has None, its CSV an empty cell
    row.update(name=item.name, quantization=item.recipe, sparsity=None, m=item.m, k=item.k, n=item.n,
               high_precision_dtype=item.dtype_name, torch_compile_mode=item.compile_mode,
               device=item.device, model_type=item.model_type, output_dir=item.output_dir, enable_profiler=False,
               enable_memory_profiler=False, shape_name=item.shape_name, implementation=implementation(item))
    if item.skip:
        row["skipped"] = item.skip
        return row, []
    try:
        case, _ = build_case(item)
        row["mixq_outlier_hit_rate"] = case.kernel_info.get("mixq_outlier_hit_rate")
        row["mixq_outlier_channels"] = case.kernel_info.get("mixq_outlier_channels")
        x = case.make_inputs()[0]
        with torch.no_grad():
            ref, got = case.reference(x), case.providers[case.kernel](x)
            row["quantized_sqnr_db"] = round(sqnr_db(ref, got), 2)
            case.kernel_info.update(microbench_name=item.name, quantized_sqnr_db=row["quantized_sqnr_db"])
            if item.device == "cuda":
                result = run_case(case, timing, ceilings)
                problems = {**result.errors, **result.unavailable}
                if problems:  # a provider that failed or refused is an error of the row, never a stand-in
                    raise RuntimeError("; ".join(f"{p}: {e}" for p, e in problems.items()))
                measurements, records = result.measurements, result.records
                row["gpu"] = torch.cuda.get_device_name()
            else:
                errors, refused, first_s = check_providers(case, (x,))
                if errors or refused:
                    raise RuntimeError("; ".join(f"{p}: {e}" for p, e in {**errors, **refused}.items()))
                budget_s = (timing.rep_ms if timing else CPU_REP_MS) / 1e3
                measurements = {p: Measurement(_host_samples_s(fn, x, budget_s), mode="host", cold_l2=False, calls_per_sample=1,
                                               compile_time_s=first_s[p])
                                for p, fn in case.providers.items()}
                records = build_records(case, measurements, None, {})
                for info in records.values():
                    info["timing"] = CPU_TIMING
        row["timing"] = records[case.kernel]["timing"]
        ms = {p: m.median_s * 1e3 for p, m in measurements.items()}
        q = item.recipe
        row["baseline_model_eager_inference_time_in_ms"] = ms["baseline"]
        row["quantized_model_eager_inference_time_in_ms"] = ms[q]
        if item.compile_mode:
            row["baseline_model_compiled_inference_time_in_ms"] = ms["baseline_compiled"]
            row["quantized_model_compiled_inference_time_in_ms"] = ms[f"{q}_compiled"]
            row["compile speedup on baseline"] = row["baseline_model_compiled_inference_time_in_ms"] / row[
                "quantized_model_compiled_inference_time_in_ms"]
            row["eager vs compile speedup"] = row["quantized_model_eager_inference_time_in_ms"] / row[
                "quantized_model_compiled_inference_time_in_ms"]
        row["eager speedup on baseline"] = row["baseline_model_eager_inference_time_in_ms"] / row[
            "quantized_model_eager_inference_time_in_ms"]
        entries = [benchmark_entry(item, p, measurements[p].samples_s, records[p]) for p in measurements]
    except Exception as e:  # noqa: BLE001 - one failing item is reported, the run goes on
        row["error"] = f"{type(e).__name__}: {e}"
        entries = []
    return row, entries


def benchmark_entry(item: BenchItem, provider: str, samples_s: list[float], info: dict) -> dict:
    """One implementation of an item as pytest-benchmark writes a test's result: its own
    statistics of the samples (stats.data holds them, for the gate's bootstrap) and the
    suite's extra_info (harness/perfcase.py build_records)."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for s in samples_s:
        stats.update(s)
    param = (f"{item.recipe}-{item.model_type}-m{item.m}-k{item.k}-n{item.n}-{item.dtype_name[6:]}"
             f"-{item.compile_mode or 'nocompile'}-{provider}")
    return {"group": None, "name": f"microbench[{param}]", "fullname": f"harness/microbench.py::{item.name}[{param}]",
            "params": {"item": item.label, "provider": provider}, "param": param, "extra_info": info,
            "options": {"timer": info["timing"], "min_rounds": len(samples_s)},
            "stats": {**stats.as_dict(), "data": list(samples_s), "iterations": 1}}


def new_path(directory: str, stem: str, ext: str) -> str:
    """A file name in directory that did not exist, claimed by creating it empty (exclusive:
    two runs at once never pick the same name): results are never overwritten."""
    os.makedirs(directory, exist_ok=True)
    i = 0
    while True:
        path = os.path.join(directory, f"{stem}.{ext}" if i == 0 else f"{stem}_{i}.{ext}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return path
        except FileExistsError:
            i += 1


def _device_bytes(device: str) -> int | None:
    """The memory of the device a config names (None where it cannot be read)."""
    if device == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None


class CsvWriter:
    """The run's CSV, a row written (and flushed) as each item finishes: a run that is cut
    short keeps what it measured. The file name is new: nothing earlier is overwritten."""

    def __init__(self, output_dir: str):
        self.path = new_path(output_dir, time.strftime("results_%Y%m%d_%H%M%S"), "csv")
        self._f = open(self.path, "w", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=TORCHAO_COLUMNS + EXTRA_COLUMNS)
        self._w.writeheader()
        self._f.flush()

    def write(self, row: dict) -> None:
        self._w.writerow(row)
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def commit_info() -> dict:
    """The checkout's commit, as pytest-benchmark records it, read by git commands that
    never write the index (pytest-benchmark's `git describe --dirty` refreshes it, which can
    collide with a commit made meanwhile). dirty compares the files' stat data too."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)

    info = {"id": "unknown", "time": None, "author_time": None, "dirty": None, "project": os.path.basename(root),
            "branch": "(unknown)"}
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return dict(info, error=head.stderr.strip()[:200])
        info.update(id=head.stdout.strip(), time=git("show", "-s", "--pretty=format:%cI", "HEAD").stdout.strip(),
                    author_time=git("show", "-s", "--pretty=format:%aI", "HEAD").stdout.strip(),
                    dirty=git("diff-index", "--quiet", "HEAD", "--").returncode != 0,
                    branch=git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip())
    except (OSError, subprocess.SubprocessError) as e:
        info["error"] = repr(e)
    return info


def write_json(rows: list[dict], entries: list[dict], csv_path: str, config_path: str, ceilings: dict | None = None,
               clocks: tuple = (None, None), argv: list | None = None) -> str:
    """The run as a pytest-benchmark results file (module doc, Output), beside the CSV."""
    from datetime import datetime, timezone

    from pytest_benchmark import __version__
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

    from harness import lanes
    from harness.machine import gpu_info, software_versions
    from harness.results import COMMAND_KEY, command_record

    machine = pytest_benchmark_generate_machine_info()
    machine.update(lane=lanes.describe_lane() if lanes.has_gpu() else
                   "CPU, Triton interpreter (TRITON_INTERPRET=1); host wall-clock times",
                   gpu=gpu_info(), software=software_versions(), clocks_start=clocks[0], clocks_end=clocks[1])
    if ceilings:
        machine["ceilings"] = ceilings
    json_path = new_path(os.path.dirname(csv_path), os.path.basename(csv_path)[:-4], "json")
    command = command_record(sys.argv[1:] if argv is None else argv)
    if command["recorded_by"] != "tools/bench":  # run as python -m harness.microbench, not through pytest
        command.update(line=shlex.join(["python", "-m", "harness.microbench", *command["argv"]]),
                       recorded_by="harness.microbench")
    with open(json_path, "w") as f:
        json.dump({"machine_info": machine, "commit_info": commit_info(), "benchmarks": entries, COMMAND_KEY: command,
                   "datetime": datetime.now(timezone.utc).isoformat(), "version": __version__,
                   "microbench": {"config": os.path.abspath(config_path), "rows": rows}}, f, indent=1, default=str)
    return json_path


def _fmt(v):
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} would run no item; give N >= 1, or leave --limit out to run every item")
    return n


def _rep_ms(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 < v < float("inf")):  # nan fails this too
        raise argparse.ArgumentTypeError(f"{text} is no time budget; give milliseconds > 0")
    return v


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.microbench", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="torchao-style YAML config")
    p.add_argument("--output-dir", help="override the config's output_dir")
    p.add_argument("--limit", type=_limit, help="run only the first N >= 1 items (a quick look)")
    p.add_argument("--rep-ms", type=_rep_ms, default=100.0, help="timed budget per implementation, in ms (GPU and CPU)")
    args = p.parse_args(argv)
    try:
        items = load_config(args.config)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.limit is not None:
        items = items[:args.limit]
    need_gpu = any(i.device == "cuda" for i in items)
    if need_gpu and not torch.cuda.is_available():
        print("config error: device 'cuda' was asked for but no CUDA GPU is visible; set device: cpu", file=sys.stderr)
        return 2
    key = "--output-dir" if args.output_dir is not None else "output_dir"
    output_dir = args.output_dir if args.output_dir is not None else items[0].output_dir
    try:  # before anything runs: a folder that cannot be made is a config error, not a failed item
        out = CsvWriter(output_dir)
    except OSError as e:
        print(f"config error: {key}: cannot write results in {output_dir!r} ({e.strerror or e}); "
              "give a directory (created if missing)", file=sys.stderr)
        return 2
    from harness.timing import TimingConfig

    timing, ceilings, clocks_start = TimingConfig(rep_ms=args.rep_ms), None, None  # rep_ms: the CPU's budget too
    if need_gpu:
        from harness.ceilings import get_ceilings
        from harness.machine import gpu_clocks

        ceilings, clocks_start = get_ceilings(), gpu_clocks()
    print(f"{len(items)} items; rows go to {out.path} as they finish", flush=True)
    rows, entries = [], []
    progress = Progress(len(items), "items")
    for i, item in enumerate(items, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(items)}] {item.label} ...", end=" ", flush=True)
        row, item_entries = run_item(item, timing, ceilings)
        rows.append(row)
        entries += item_entries
        out.write(row)
        if row["error"]:
            print(f"ERROR {row['error']}", flush=True)
        elif row["skipped"]:
            print(f"SKIPPED {row['skipped']}", flush=True)
        else:
            hit = row["mixq_outlier_hit_rate"]
            print(f"baseline {_fmt(row['baseline_model_eager_inference_time_in_ms'])} ms, quantized "
                  f"{_fmt(row['quantized_model_eager_inference_time_in_ms'])} ms "
                  f"({row['eager speedup on baseline']:.2f}x eager"
                  + (f", {row['compile speedup on baseline']:.2f}x compiled" if item.compile_mode else "")
                  + f"), SQNR {row['quantized_sqnr_db']:.1f} dB"
                  + (f", outlier hit rate {hit:.2f}" if hit is not None else "")
                  + f" [{time.perf_counter() - t0:.1f} s]", flush=True)
        print(f"progress: {progress.step()}", flush=True)
    out.close()
    clocks_end = None
    if need_gpu:
        from harness.machine import gpu_clocks

        clocks_end = gpu_clocks()
    json_path = write_json(rows, entries, out.path, args.config, ceilings, (clocks_start, clocks_end),
                           sys.argv[1:] if argv is None else argv)
    print(f"wrote {out.path} and {json_path} (python -m harness table {json_path})")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
