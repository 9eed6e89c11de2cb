"""harness/microbench.py: torchao-style configs are read strictly, every shape set expands
as documented, and a run writes torchao's CSV columns (never over an earlier file)."""
import csv
import json
import re

import pytest
import torch

from harness.microbench import TORCHAO_COLUMNS, ConfigError, load_config, main, parse_config, shapes_of

pytestmark = pytest.mark.harness


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
    (dict(params={"high_precision_dtype": "torch.bfloat16", "device": "cpu"}), "bfloat16 dot is wrong"),
    (dict(params={"matrix_shapes": [{"name": "pow2_extended", "min_power": 0, "max_power": 2}]}), "min >= 1"),
    (dict(params={"high_precision_dtype": "torch.float32"}), "torch.float32 runs only the baseline recipe"),
])
def test_bad_config_names_the_key_and_the_allowed_values(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(config(**change))


def test_missing_keys():
    with pytest.raises(ConfigError, match="missing key 'model_params'"):
        parse_config({"quantization_config_recipe_names": ["baseline"]})
    with pytest.raises(ConfigError, match="missing key 'matrix_shapes'"):
        parse_config({"quantization_config_recipe_names": ["baseline"], "model_params": {"device": "cpu"}})


def test_shape_sets_expand_as_documented():
    assert [s for _, s in shapes_of({"name": "pow2", "min_power": 3, "max_power": 4}, "x")] == [[8] * 3, [16] * 3]
    assert [s[0] for _, s in shapes_of({"name": "pow2_extended", "min_power": 3, "max_power": 4}, "x")] == [8, 12, 16, 24]
    assert len(shapes_of({"name": "sweep", "min_power": 1, "max_power": 3}, "x")) == 27
    small = shapes_of({"name": "small_sweep", "min_power": 1, "max_power": 2}, "x")
    assert [s for _, s in small] == [[2, 2, 2], [2, 4, 4], [4, 2, 2], [4, 4, 4]]
    llama = shapes_of({"name": "llama"}, "x")
    assert [s for _, s in llama][0] == [16384, 8192, 1280] and len(llama) == 4
    assert len(shapes_of({"name": "pow2"}, "x")) == 5  # torchao's default powers 10 .. 14


def test_sample_config_loads():
    items = load_config("configs/microbench.yml")
    assert len(items) == 8 * 3 and {i.recipe for i in items} >= {"int4wo-128", "mixq-w8a8", "float8wo"}
    assert all(i.compile_mode == "default" and i.device == "cuda" for i in items)


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
    assert rows[3]["mixq_outlier_hit_rate"] != ""
    assert json.loads(csvs[0].with_suffix(".json").read_text())["results"][1]["quantization"] == "int8wo"


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
    assert "ERROR" not in run.stdout and "[1/1] int8wo" in run.stdout
