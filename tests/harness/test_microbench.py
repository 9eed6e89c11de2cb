"""harness/microbench.py: torchao-style configs are read strictly, every shape set expands
as torchao defines it, every model type and recipe runs with its output checked, the MixQ
items exercise the outlier path, and a run writes torchao's CSV columns and a results JSON
that the suite's table and gate read (never over an earlier file)."""
import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.microbench import (EXTRA_COLUMNS, HIT_RATE_CALLS, RECIPE_RTOL, SEED_INPUT, TORCHAO_COLUMNS, ConfigError,
                                build_case, load_config, main, make_activations, make_model, new_path,
                                outlier_channels, parse_config, run_item, shapes_of)

pytestmark = pytest.mark.harness

REPO = Path(__file__).resolve().parents[2]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def config(**over):
    # the GPU where there is one (on a GPU machine Triton runs no kernel on CPU tensors)
    params = {"matrix_shapes": [{"name": "custom", "shapes": [[2, 128, 64]]}], "device": DEVICE,
              "high_precision_dtype": "torch.float16", "model_type": "linear"}
    params.update(over.pop("params", {}))
    return {"quantization_config_recipe_names": ["baseline", "int8wo"], "model_params": [params], **over}


@pytest.mark.parametrize("change,message", [
    (dict(quantization_config_recipe_names=["int3wo"]), "unknown recipe 'int3wo'; allowed: baseline, int8wo"),
    (dict(quantization_config_recipe_names=["int4wo-100"]), "has group 100; groups: (32, 64, 128, 256)"),
    (dict(params={"matrix_shapes": [{"name": "custom", "shapes": [[1, 2]]}]}), "shapes[0]: [1, 2] is malformed"),
    (dict(params={"matrix_shapes": [{"name": "custom", "shapes": [[1, 0, 4]]}]}), "must be an integer >= 1"),
    (dict(params={"matrix_shapes": [{"name": "squares"}]}), "unknown shape set 'squares'; allowed: custom, llama"),
    (dict(params={"matrix_shapes": [{"name": "pow2", "shapes": [[1, 1, 1]]}]}), "unknown key 'shapes' for shape set 'pow2'"),
    (dict(params={"model_type": "ln_linear_swish"}), "model_type: 'ln_linear_swish'; allowed: linear, transformer_block"),
    (dict(params={"high_precision_dtype": "torch.float8"}), "high_precision_dtype: 'torch.float8'; allowed"),
    (dict(params={"device": "mps"}), "device: 'mps'; allowed: cuda, cpu"),
    (dict(params={"torch_compile_mode": "fast"}), "torch_compile_mode: 'fast'; allowed: default"),
    (dict(params={"batch": 4}), "unknown key 'batch'; allowed: device, enable_memory_profiler"),
    (dict(params={"sparsity": "2:4"}), "sparsity: '2:4' is not supported here"),
    (dict(outputdir="x"), "unknown top-level key 'outputdir'"),
    (dict(quantization_config_recipe_names=["int4wo-256"]), "divisible by its group; got shape custom [2, 128, 64]"),
    (dict(quantization_config_recipe_names=["int4wo-128"], params={"model_type": "transformer_block"}),
     "(and n, the MLP width, for transformer_block) divisible by its group; got shape custom [2, 128, 64]"),
    (dict(params={"matrix_shapes": [{"name": "pow2_extended", "min_power": 0, "max_power": 2}]}), "min >= 1"),
    (dict(params={"name": 5}), "model_params[0].name: 5 must be a non-empty string"),
    (dict(params={"name": ["run"]}), "model_params[0].name: ['run'] must be a non-empty string"),
    (dict(params={"matrix_shapes": [{"name": "custom", "shapes": [[10**9, 10**9, 10**9]]}]}),  # ran and failed per item
     "model_params[0].matrix_shapes[0].shapes[0]: custom [1000000000, 1000000000, 1000000000] needs at least"),
])
def test_bad_config_names_the_key_and_the_allowed_values(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(config(**change))


BASE_YAML = """\
quantization_config_recipe_names: [baseline, int8wo]
output_dir: {tmp}/out
model_params:
  - name: first
    matrix_shapes: [{name: custom, shapes: [[2, 128, 64]]}]
    high_precision_dtype: torch.float16
    device: cpu
    model_type: linear
  - matrix_shapes: [{name: custom, shapes: [[4, 128, 64]]}]
    high_precision_dtype: torch.float16
    device: cpu
"""


def _edit(old, new):
    assert old in BASE_YAML
    return BASE_YAML.replace(old, new, 1)


# (config file content, or a dict of top-level replacements; what the message must contain:
# the key's path first, then the allowed values or type). Every one must exit 2, not 1.
BAD_CONFIGS = {
    "dtype is a list": (_edit("high_precision_dtype: torch.float16\n    device: cpu\n    model_type",
                              "high_precision_dtype: [torch.float16]\n    device: cpu\n    model_type"),
                        ["model_params[0].high_precision_dtype: ['torch.float16']",
                         "allowed: torch.bfloat16, torch.float16, torch.float32"]),
    "model_type is a number": (_edit("model_type: linear", "model_type: 5"),
                               ["model_params[0].model_type: 5", "allowed: linear, transformer_block"]),
    "output_dir is a file": (_edit("{tmp}/out", "{tmp}/afile"), ["output_dir", "afile", "a directory"]),
    "output_dir below a file": (_edit("{tmp}/out", "{tmp}/afile/sub"), ["output_dir", "a directory"]),
    "output_dir empty": (_edit("{tmp}/out", "''"), ["output_dir: ''", "non-empty path"]),
    "output_dir a list": (_edit("{tmp}/out", "[a, b]"), ["output_dir: ['a', 'b']", "path string"]),
    "binary config": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", ["is not UTF-8 text"]),
    "control characters": ("quantization_config_recipe_names: [baseline]\x00\x01\n", ["is not valid YAML"]),
    "top level a list": ("- baseline\n- int8wo\n", ["the config must be a mapping"]),
    "top level a string": ("hello\n", ["the config must be a mapping"]),
    "empty file": ("", ["the config must be a mapping"]),
    "two documents": (BASE_YAML + "---\n" + BASE_YAML, ["is not valid YAML", "single document"]),
    "duplicated top-level key": ("quantization_config_recipe_names: [int8wo]\n" + BASE_YAML,
                                 ["quantization_config_recipe_names: duplicated key (lines 1 and 2)"]),
    "duplicated nested key": (BASE_YAML + "    device: cuda\n",
                              ["model_params[1].device: duplicated key (lines 11 and 12)"]),
    "duplicated shape key": (_edit("[{name: custom, shapes", "[{name: custom, name: pow2, shapes"),
                             ["model_params[0].matrix_shapes[0].name: duplicated key"]),
    "recipe a number": (_edit("[baseline, int8wo]", "[baseline, 8]"),
                        ["quantization_config_recipe_names[1]: 8 is not a string", "allowed: baseline"]),
    "recipe listed twice": (_edit("[baseline, int8wo]", "[int8wo, baseline, int8wo]"),
                            ["quantization_config_recipe_names[2]: 'int8wo' is listed twice"]),
    "recipes a string": (_edit("[baseline, int8wo]", "int8wo"),
                         ["quantization_config_recipe_names: 'int8wo'", "non-empty list"]),
    "recipes a recursive list": (_edit("[baseline, int8wo]", "&r [baseline, *r]"),
                                 ["quantization_config_recipe_names[1]:", "is not a string"]),
    "sparsity list a number": ("sparsity_config_recipe_names: 5\n" + BASE_YAML,
                               ["sparsity_config_recipe_names: 5", "a list of null"]),
    "sparsity list item": ("sparsity_config_recipe_names: [null, semi]\n" + BASE_YAML,
                           ["sparsity_config_recipe_names[1]: 'semi'", "allowed: null"]),
    "benchmark_mode a list": ("benchmark_mode: [inference]\n" + BASE_YAML,
                              ["benchmark_mode: ['inference']", "allowed: inference"]),
    "model_params a number": (BASE_YAML.split("model_params:")[0] + "model_params: 5\n",
                              ["model_params: 5", "a mapping, or a non-empty list of mappings"]),
    "model_params item a list": (_edit("  - matrix_shapes:", "  - [1, 2]\n  - matrix_shapes:"),
                                 ["model_params[1]: [1, 2]", "must be a mapping"]),
    "shape set name a list": (_edit("[{name: custom, shapes", "[{name: [custom], shapes"),
                              ["model_params[0].matrix_shapes[0].name: unknown shape set ['custom']", "allowed: custom, llama"]),
    "matrix_shapes a mapping": (_edit("[{name: custom, shapes: [[2, 128, 64]]}]", "{name: llama}"),
                                ["model_params[0].matrix_shapes: {'name': 'llama'}", "non-empty list"]),
    "shape entry a list": (_edit("[{name: custom, shapes: [[2, 128, 64]]}]", "[[2, 128, 64]]"),
                           ["model_params[0].matrix_shapes[0]: [2, 128, 64]", "a mapping with a 'name'"]),
    "shapes a string": (_edit("shapes: [[2, 128, 64]]", "shapes: '2, 128, 64'"),
                        ["model_params[0].matrix_shapes[0].shapes: '2, 128, 64'", "[m, k, n]"]),
    "shape value a float": (_edit("[[2, 128, 64]]", "[[2.5, 128, 64]]"),
                            ["model_params[0].matrix_shapes[0].shapes[0][0]: 2.5", "integer >= 1"]),
    "min_power a string": (_edit("[{name: custom, shapes: [[2, 128, 64]]}]", "[{name: pow2, min_power: '10'}]"),
                           ["model_params[0].matrix_shapes[0].min_power: '10'", "integer >= 0"]),
    "use_torch_compile a string": (_edit("model_type: linear", "model_type: linear\n    use_torch_compile: 'yes'"),
                                   ["model_params[0].use_torch_compile: 'yes'", "true or false"]),
    "compile mode a list": (_edit("model_type: linear", "model_type: linear\n    torch_compile_mode: [default]"),
                            ["model_params[0].torch_compile_mode: ['default']", "allowed: default"]),
    "device a list": (_edit("device: cpu\n    model_type", "device: [cpu]\n    model_type"),
                      ["model_params[0].device: ['cpu']", "allowed: cuda, cpu"]),
    "device null": (_edit("device: cpu\n    model_type", "device: null\n    model_type"),
                    ["model_params[0].device: None", "allowed: cuda, cpu"]),
    "profiler 0": (_edit("model_type: linear", "model_type: linear\n    enable_profiler: 0"),
                   ["model_params[0].enable_profiler: 0", "allowed: false"]),
    "name empty": (_edit("name: first", "name: ''"), ["model_params[0].name: ''", "non-empty string"]),
    "sparsity a list": (_edit("model_type: linear", "model_type: linear\n    sparsity: [semi]"),
                        ["model_params[0].sparsity: ['semi']", "allowed: null"]),
    "output_dir a huge list": (_edit("{tmp}/out", "[" + ", ".join(["x" * 50] * 10000) + "]"),
                               ["output_dir: ['xxxxxxxx", "...", "must be a path string"]),
    "nested too deeply": ("quantization_config_recipe_names: " + "[" * 5000 + "]" * 5000 + "\n",
                          ["nested too deeply"]),
    # one case twice: its two results would share a case id in the JSON, one hiding the other
    "a shape listed twice": (_edit("[[2, 128, 64]]", "[[2, 128, 64], [2, 128, 64]]"),
                             ["model_params[0].matrix_shapes[0].shapes[1]: custom [2, 128, 64]",
                              "repeats model_params[0].matrix_shapes[0].shapes[0]"]),
    "one case on two devices": (_edit("model_type: linear", "model_type: linear\n  - matrix_shapes: "
                                      "[{name: custom, shapes: [[2, 128, 64]]}]\n    high_precision_dtype: "
                                      "torch.float16\n    device: cuda"),
                                ["model_params[1].matrix_shapes[0].shapes[0]: custom [2, 128, 64]",
                                 "repeats model_params[0].matrix_shapes[0].shapes[0]"]),
}


@pytest.mark.parametrize("content,fragments", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_file_exits_2_naming_the_key(tmp_path, capsys, content, fragments):
    (tmp_path / "afile").write_text("not a folder")
    path = tmp_path / "cfg.yml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content.replace("{tmp}", str(tmp_path)))
    assert main(["--config", str(path)]) == 2  # an exception here is the traceback the user would see
    err = capsys.readouterr().err
    assert err.startswith("config error: ") and len(err.strip().splitlines()) == 1 and len(err) < 1000, err
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.parametrize("make,message", [
    (lambda tmp: tmp, "is a directory"),
    (lambda tmp: tmp / "missing.yml", "does not exist"),
])
def test_unreadable_config_path_exits_2(tmp_path, capsys, make, message):
    assert main(["--config", str(make(tmp_path))]) == 2
    assert message in capsys.readouterr().err


def test_output_dir_option_on_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    path = tmp_path / "cfg.yml"
    path.write_text(BASE_YAML.replace("{tmp}", str(tmp_path)))
    assert main(["--config", str(path), "--output-dir", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert "--output-dir" in err and "a directory" in err


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "fast"])
def test_rep_ms_must_be_a_positive_number(tmp_path, capsys, value):
    path = tmp_path / "cfg.yml"
    path.write_text(BASE_YAML.replace("{tmp}", str(tmp_path)))
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(path), "--rep-ms", value])
    assert exc.value.code == 2 and "--rep-ms" in capsys.readouterr().err


def test_missing_keys():
    with pytest.raises(ConfigError, match="missing key 'model_params'"):
        parse_config({"quantization_config_recipe_names": ["baseline"]})
    with pytest.raises(ConfigError, match="missing key 'matrix_shapes'"):
        parse_config({"quantization_config_recipe_names": ["baseline"], "model_params": {"device": "cpu"}})


def test_shape_sets_expand_as_documented():
    assert [s for _, s in shapes_of({"name": "pow2", "min_power": 3, "max_power": 4}, "x")] == [[8] * 3, [16] * 3]
    assert [s[0] for _, s in shapes_of({"name": "pow2_extended", "min_power": 3, "max_power": 4}, "x")] == [8, 12, 16, 24]
    assert len(shapes_of({"name": "sweep", "min_power": 1, "max_power": 3}, "x")) == 27
    # small_sweep: torchao's sweep kept to m <= k <= n, in its order (m, then k, then n)
    small = shapes_of({"name": "small_sweep", "min_power": 1, "max_power": 2}, "x")
    assert [s for _, s in small] == [[2, 2, 2], [2, 2, 4], [2, 4, 4], [4, 4, 4]]
    default = [s for _, s in shapes_of({"name": "small_sweep"}, "x")]
    assert len(default) == 35 == math.comb(5 + 2, 3)  # torchao's default powers 10 .. 14
    assert default[0] == [1024] * 3 and default[-1] == [16384] * 3 and all(m <= k <= n for m, k, n in default)
    assert len(shapes_of({"name": "sweep"}, "x")) == 8**3  # 2^8 .. 2^15
    llama = shapes_of({"name": "llama"}, "x")
    assert [s for _, s in llama][0] == [16384, 8192, 1280] and len(llama) == 4
    assert len(shapes_of({"name": "pow2"}, "x")) == 5  # torchao's default powers 10 .. 14


def test_sample_config_loads():
    items = load_config("configs/microbench.yml")
    assert len(items) == 8 * 3 and {i.recipe for i in items} >= {"int4wo-128", "mixq-w8a8", "float8wo"}
    assert all(i.compile_mode == "default" and i.device == "cuda" for i in items)
    cpu = load_config("configs/microbench_cpu.yml")  # the CPU lane's: float16 and float32 items
    assert len(cpu) == 8 * 3 and all(i.device == "cpu" for i in cpu)
    assert sorted(i.recipe for i in cpu if i.skip) == ["int8dq", "mixq-w4a4", "mixq-w8a8"]


def test_a_torchao_config_is_accepted():
    """torchao's own test config (benchmarks/microbenchmarks/test/benchmark_config.yml),
    with its sparsity set to none: every key it uses is known."""
    items = parse_config({
        "quantization_config_recipe_names": ["baseline", "int8dq", "int4wo-128"],
        "output_dir": "benchmarks/microbenchmarks/test/results",
        "model_params": {"matrix_shapes": [{"name": "custom", "shapes": [[1024, 1024, 1024], [2048, 4096, 1024]]}],
                         "high_precision_dtype": "torch.bfloat16", "use_torch_compile": True,
                         "torch_compile_mode": "max-autotune", "device": "cuda", "model_type": "linear",
                         "sparsity": None}})
    assert len(items) == 6 and items[0].compile_mode == "max-autotune"


def test_a_name_is_claimed_when_it_is_chosen(tmp_path):
    """Two runs in the same second chose names by looking, then opened them for writing: the
    second could take the first's name. Now choosing a name creates the file."""
    first = new_path(str(tmp_path), "results_x", "csv")
    second = new_path(str(tmp_path), "results_x", "csv")  # before the first wrote anything
    assert first != second and Path(first).is_file() and Path(second).is_file()


def test_run_writes_torchao_csv_and_never_overwrites(tmp_path, capsys):
    import yaml

    cfg = config(output_dir=str(tmp_path / "out"),
                 quantization_config_recipe_names=["baseline", "int8wo", "int4wo-64-hqq", "mixq-w8a8"])
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path)]) == 0
    assert main(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[4/4] mixq-w8a8 linear custom m=2 k=128 n=64" in out  # progress, item by item
    csvs = sorted((tmp_path / "out").glob("*.csv"))
    assert len(csvs) == 2, "the second run overwrote the first"
    with open(csvs[0]) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:len(TORCHAO_COLUMNS)] == TORCHAO_COLUMNS
    assert [r["quantization"] for r in rows] == ["baseline", "int8wo", "int4wo-64-hqq", "mixq-w8a8"]
    for r in rows:
        assert not r["error"]
        speedup = float(r["baseline_model_eager_inference_time_in_ms"]) / float(r["quantized_model_eager_inference_time_in_ms"])
        assert float(r["eager speedup on baseline"]) == pytest.approx(speedup)
        assert float(r["quantized_sqnr_db"]) > 20
        assert r["torch_compile_mode"] == ""  # not compiled: torchao writes None, an empty cell
    assert 0 <= float(rows[3]["mixq_outlier_hit_rate"]) <= 1 and int(rows[3]["mixq_outlier_channels"]) >= 2
    run = json.loads(csvs[0].with_suffix(".json").read_text())
    assert run["microbench"]["rows"][1]["quantization"] == "int8wo"
    assert run["command"]["line"] == f"python -m harness.microbench --config {path}"  # the file says what made it


def test_results_json_is_read_by_table_and_gate(tmp_path, capsys):
    """The JSON is a pytest-benchmark results file: harness.results.load_run finds every
    timed implementation with its samples, and `python -m harness table` / `gate` run on it."""
    import yaml

    from harness.__main__ import main as harness_main
    from harness.results import load_run

    cfg = config(output_dir=str(tmp_path / "out"), quantization_config_recipe_names=["baseline", "int8wo", "mixq-w8a8"])
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path)]) == 0
    assert main(["--config", str(path)]) == 0
    first, second = sorted((tmp_path / "out").glob("*.json"))
    run = load_run(first)
    assert len(run.entries) == 1 + 2 + 2  # baseline alone; each recipe with its baseline
    cases = sorted(run.cases())
    assert cases == ["microbench/linear/recipe=baseline,shape=custom,m=2,k=128,n=64,compile=none/fp16",
                     "microbench/linear/recipe=int8wo,shape=custom,m=2,k=128,n=64,compile=none/fp16",
                     "microbench/linear/recipe=mixq-w8a8,shape=custom,m=2,k=128,n=64,compile=none/fp16"]
    kernel = run.kernel_entry(cases[2])
    assert kernel.provider == "mixq-w8a8" and kernel.role == "kernel" and len(kernel.samples_s) >= 10
    assert kernel.median_s == pytest.approx(sorted(kernel.samples_s)[len(kernel.samples_s) // 2], rel=0.5)
    assert kernel.info["best_baseline"] == "baseline" and kernel.info["speedup_vs_best_baseline"] > 0
    assert 0 <= kernel.info["mixq_outlier_hit_rate"] <= 1 and kernel.info["mixq_hit_rate_calls"] == HIT_RATE_CALLS
    data = json.loads(first.read_text())
    assert {"machine_info", "commit_info", "datetime", "version"} <= set(data)
    assert data["benchmarks"][0]["stats"]["rounds"] == len(data["benchmarks"][0]["stats"]["data"])
    capsys.readouterr()
    assert harness_main(["table", str(first)]) == 0
    table = capsys.readouterr().out
    assert "median_us" in table and "x vs baseline" in table and "mixq-w8a8" in table
    # host times: judged, not unusable; the baseline item has no baseline to judge it by (exit 3 unless a regression)
    assert harness_main(["gate", str(first), str(second)]) in (1, 3)
    out = capsys.readouterr().out
    assert "2 judged case(s), 1 not judged" in out and "no baseline timed the same way in both runs" in out


def test_limit_zero_is_refused_and_limit_n_runs_n(tmp_path, capsys):
    import yaml

    cfg = config(output_dir=str(tmp_path / "out"))
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(path), "--limit", "0"])
    assert exc.value.code == 2 and "--limit: 0 would run no item" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["--config", str(path), "--limit", "1"]) == 0
    assert "1 items;" in capsys.readouterr().out
    with open(next((tmp_path / "out").glob("*.csv"))) as f:
        assert [r["quantization"] for r in csv.DictReader(f)] == ["baseline"]


def test_cpu_item_reports_true_host_time():
    """A tiny F.linear on the CPU (3 x 128 -> 96 in float16: 37k multiply-adds) takes 15-50 us
    called directly on the 2-core CPU lane; the runner reported about 8 ms for it, the wait of
    torch's second intra-op thread for a core (it now times as torchao does, one thread). The
    bound, 1 ms: 20x the direct call, 8x under what was reported. The median is of many calls:
    a budget of rep_ms, not a fixed handful."""
    item = parse_config(config(quantization_config_recipe_names=["baseline"], params={
        "device": "cpu", "matrix_shapes": [{"name": "custom", "shapes": [[3, 128, 96]]}]}))[0]
    row, entries = run_item(item)
    assert not row["error"], row["error"]
    assert row["baseline_model_eager_inference_time_in_ms"] < 1.0, row
    assert len(entries[0]["stats"]["data"]) >= 100
    assert row["timing"] == "host wall clock (cpu, 1 thread)"


def _timing():
    if DEVICE != "cuda":
        return None
    from harness.timing import TimingConfig

    return TimingConfig(warmup_ms=2, rep_ms=5)


RECIPES = ["baseline", "int8wo", "int4wo-32", "int4wo-32-hqq", "int8dq", "float8wo", "mixq-w8a8", "mixq-w4a4"]


def test_bfloat16_runs_on_the_cpu_lane_too():
    """The interpreter's bf16 arithmetic is done right by the kernels (kernels.interpreter):
    a bf16 config on the CPU runs every 16-bit recipe and clears each recipe's SQNR floor."""
    recipes = ["int8wo", "int4wo-32", "int8dq", "mixq-w8a8"]
    items = parse_config(config(quantization_config_recipe_names=recipes,
                                params={"high_precision_dtype": "torch.bfloat16", "model_type": "linear",
                                        "matrix_shapes": [{"name": "custom", "shapes": [[2, 64, 64]]}]}))
    for item in items:
        row, _ = run_item(item, _timing())
        assert not row["error"], f"{item.label}: {row['error']}"
        floor = -20 * math.log10(RECIPE_RTOL["int4wo" if item.recipe.startswith("int4wo") else item.recipe])
        assert row["quantized_sqnr_db"] > floor, f"{item.label}: {row['quantized_sqnr_db']} dB <= {floor:.1f}"


@pytest.mark.parametrize("model_type", ["linear", "ln_linear_relu", "ln_linear_gelu", "transformer_block"])
def test_every_recipe_runs_each_model_type_checked(model_type):
    """Every recipe on a tiny item of each model type (the CPU lane: Triton's interpreter,
    float16): the output is checked against the float32 model before anything is timed, the
    SQNR clears the recipe's floor, and the row has torchao's columns filled. float8wo runs
    on the CPU (PyTorch's float8_e4m3fn casts), so it is not skipped."""
    items = parse_config(config(quantization_config_recipe_names=RECIPES,
                                params={"model_type": model_type, "matrix_shapes": [
                                    {"name": "custom", "shapes": [[2, 64, 64]]}]}))
    rows = {}
    for item in items:
        row, entries = run_item(item, _timing())
        assert not row["error"], f"{item.label}: {row['error']}"
        assert list(row) == TORCHAO_COLUMNS + EXTRA_COLUMNS
        floor = -20 * math.log10(RECIPE_RTOL["int4wo" if item.recipe.startswith("int4wo") else item.recipe])
        assert row["quantized_sqnr_db"] > floor, f"{item.label}: {row['quantized_sqnr_db']} dB <= {floor:.1f}"
        assert row["quantization"] == item.recipe and row["model_type"] == model_type and row["m"] == 2
        assert row["baseline_model_eager_inference_time_in_ms"] > 0 and row["eager speedup on baseline"] > 0
        assert row["torch_compile_mode"] is None and row["baseline_model_compiled_inference_time_in_ms"] is None
        assert [e["extra_info"]["provider"] for e in entries] == ["baseline"] + ([item.recipe] if item.recipe != "baseline" else [])
        rows[item.recipe] = row
    assert rows["baseline"]["quantized_sqnr_db"] > 50  # float16 against float32
    # The outlier path: W8A8 keeps the planted channels in 16 bits, int8dq rounds them with
    # their token (the same inputs and weights: about 10 dB apart at this size).
    assert rows["mixq-w8a8"]["quantized_sqnr_db"] > rows["int8dq"]["quantized_sqnr_db"] + 6
    assert 0.5 <= rows["mixq-w8a8"]["mixq_outlier_hit_rate"] <= 1
    assert rows["mixq-w4a4"]["mixq_outlier_hit_rate"] is None  # fixed offline: nothing predicted
    assert rows["int8dq"]["mixq_outlier_hit_rate"] is None and rows["int8dq"]["mixq_outlier_channels"] is None


def test_float32_runs_as_torchao_runs_it_never_cast():
    """high_precision_dtype: torch.float32 (torchao's configs use it): baseline and float8wo
    run in float32; the weight-only recipes run as torchao runs them in float32 (the weight
    dequantized, F.linear in float32), since the Triton kernels take float16/bfloat16; the
    W8A8 recipes, whose kernels quantize 16-bit activations only, are skipped with the reason.
    No item casts: outputs are float32 and match the float32 product of the stored weight to
    float32 accuracy (a float16 pass would be off by about 1e-3)."""
    from kernels.quant import dequantize

    items = parse_config(config(quantization_config_recipe_names=RECIPES, params={
        "high_precision_dtype": "torch.float32", "matrix_shapes": [{"name": "custom", "shapes": [[3, 128, 64]]}]}))
    skipped = {i.recipe: i.skip for i in items if i.skip}
    assert sorted(skipped) == ["int8dq", "mixq-w4a4", "mixq-w8a8"]
    assert all("float16/bfloat16" in why and "float32" in why for why in skipped.values())
    for item in items:
        row, entries = run_item(item, _timing())
        assert row["high_precision_dtype"] == "torch.float32"
        if item.skip:
            assert row["skipped"] == item.skip and not row["error"] and entries == []
            assert row["quantized_model_eager_inference_time_in_ms"] is None
            continue
        assert not row["error"] and not row["skipped"], f"{item.label}: {row['error']}"
        floor = -20 * math.log10(RECIPE_RTOL["int4wo" if item.recipe.startswith("int4wo") else item.recipe])
        assert row["quantized_sqnr_db"] > floor
        assert all(e["extra_info"]["dtype"] == "fp32" for e in entries)
        case, quant = build_case(item)
        x = case.make_inputs()[0]
        with torch.no_grad():
            y = quant(x)
        assert x.dtype == y.dtype == torch.float32, item.label
        if item.recipe.startswith(("int8wo", "int4wo")):
            assert "float32" in row["implementation"] and "dequantized" in row["implementation"]
            exact = x.double() @ dequantize(quant[0].qw).double().t()
            assert ((y.double() - exact).norm() / exact.norm()).item() < 1e-5, item.label


def test_float32_config_exits_0_with_skipped_rows(tmp_path, capsys):
    import yaml

    cfg = config(output_dir=str(tmp_path / "out"), quantization_config_recipe_names=["int8wo", "int8dq"],
                 params={"high_precision_dtype": "torch.float32"})
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path)]) == 0  # a skipped item is not a failed one
    assert "[2/2] int8dq linear custom m=2 k=128 n=64 torch.float32 ... SKIPPED" in capsys.readouterr().out
    with open(next((tmp_path / "out").glob("*.csv"))) as f:
        rows = list(csv.DictReader(f))
    assert [bool(r["skipped"]) for r in rows] == [False, True] and not any(r["error"] for r in rows)


@pytest.mark.parametrize("dtype,ceiling", [("torch.float16", "fp16_tflops"), ("torch.float32", "fp32_tflops")])
def test_compute_heavy_items_name_their_ceiling(dtype, ceiling):
    """m = 16 on a 256 x 256 Linear is 13 flops a byte: harness.metrics.Cost refuses such a
    cost unless it names the compute ceiling (the baseline's: its dtype's matmul rate)."""
    item = parse_config(config(quantization_config_recipe_names=["baseline"], params={
        "device": DEVICE, "high_precision_dtype": dtype, "matrix_shapes": [{"name": "custom", "shapes": [[16, 256, 256]]}]}))[0]
    case, _ = build_case(item)
    assert case.cost.flops_ceiling == ceiling
    row, _ = run_item(item, _timing())
    assert not row["error"], row["error"]


def test_mixq_items_see_the_planted_outliers_and_check_the_cache_every_call():
    """The same x and weights for every recipe of a model and shape; the planted channels
    exceed MixQ's threshold; W8A8's cache predicts exactly them; the hit rate counts
    HIT_RATE_CALLS checks per layer, not one."""
    items = parse_config(config(quantization_config_recipe_names=["int8dq", "mixq-w8a8", "mixq-w4a4"],
                                params={"matrix_shapes": [{"name": "custom", "shapes": [[4, 256, 64]]}]}))
    xs = [make_activations(i, SEED_INPUT, i.dtype) for i in items]
    assert all(torch.equal(xs[0], x) for x in xs[1:])
    assert all(torch.equal(make_model(items[0]).state_dict()["0.weight"], make_model(i).state_dict()["0.weight"])
               for i in items[1:])
    planted = outlier_channels(256)
    assert planted.numel() == 2 and (xs[0].float().abs().amax(dim=0) > 6).nonzero().flatten().tolist() == planted.tolist()
    case, quant = build_case(items[1])
    cache = quant[0].mixq.cache
    assert cache.idx.tolist() == planted.tolist()
    assert cache.checks == HIT_RATE_CALLS and case.kernel_info["mixq_outlier_hit_rate"] == cache.hits / cache.checks
    ln = make_model(parse_config(config(params={"model_type": "ln_linear_silu"}))[0])
    assert ln.ln.weight[outlier_channels(128)].eq(20).all() and ln.ln.weight.eq(20).sum() == 2


def _collect(tmp_path, cfg):
    import yaml

    path = tmp_path / "quant.yml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/perf/quant/test_microbench.py", "-m", "perf", "--quant-config",
         str(path), "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=300)


def test_quant_config_option_collects_the_config_items(tmp_path):
    """`pytest -m perf --quant-config FILE` (the suite's own conftest and plugin): one case
    per item and implementation; a bad config fails collection naming the key."""
    cfg = config(quantization_config_recipe_names=["baseline", "int8wo", "mixq-w8a8"],
                 params={"device": "cpu", "use_torch_compile": True,
                         "matrix_shapes": [{"name": "custom", "shapes": [[2, 128, 64], [4, 128, 64]]}]})
    good = _collect(tmp_path, cfg)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    ids = [line for line in good.stdout.splitlines() if "::test_microbench[" in line]
    # per shape: baseline (eager, compiled) and each recipe with its baseline, eager and compiled
    assert len(ids) == 2 * (2 + 4 + 4), good.stdout[-3000:]
    assert any(i.endswith("[mixq-w8a8-linear-m4-k128-n64-mixq-w8a8_compiled]") for i in ids)
    cfg["model_params"][0]["batch"] = 4
    bad = _collect(tmp_path, cfg)
    assert bad.returncode != 0
    assert "unknown key 'batch'; allowed:" in bad.stdout + bad.stderr


def test_bad_config_exits_2_with_the_message(tmp_path, capsys):
    path = tmp_path / "bad.yml"
    path.write_text("quantization_config_recipe_names: [int2wo]\nmodel_params: {matrix_shapes: []}\n")
    assert main(["--config", str(path)]) == 2
    assert "unknown recipe 'int2wo'" in capsys.readouterr().err


def test_command_runs_kernels_on_a_machine_without_a_gpu(tmp_path):
    """`python -m harness.microbench` as a user runs it (no TRITON_INTERPRET set, no pytest
    plugin): with device: cpu it must reach the kernels through the interpreter."""
    import os
    import subprocess
    import sys

    import yaml

    from harness.lanes import has_gpu

    if has_gpu():
        pytest.skip("needs a machine without a CUDA GPU")
    cfg = config(output_dir=str(tmp_path / "out"), quantization_config_recipe_names=["int8wo"])
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "harness.microbench", "--config", str(path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "ERROR" not in run.stdout and "[1/1] int8wo" in run.stdout and "progress: 1/1 items" in run.stdout
