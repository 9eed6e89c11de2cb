"""Device samples become pytest-benchmark's own statistics, so --benchmark-save,
--benchmark-compare and --benchmark-compare-fail work on them (harness.perfcase)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.harness

REPO = Path(__file__).resolve().parents[2]

INNER = '''
import os
from harness.perfcase import record_into_benchmark

def test_case(benchmark):
    scale = float(os.environ["SCALE"])
    samples = [s * scale for s in (1e-6, 2e-6, 3e-6, 4e-6, 100e-6)]
    record_into_benchmark(benchmark, samples, {"case": "op/n=1/fp32", "provider": "triton"})
'''


def run_inner(tmp_path, scale, *args, env=None):
    env = dict(os.environ, SCALE=str(scale), PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--benchmark-storage", f"file://{tmp_path}/store", "--benchmark-save-data", *args, str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def test_samples_are_the_benchmark_stats_and_compare_fail_works(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    first = run_inner(tmp_path, 1.0, "--benchmark-save=first", f"--benchmark-json={tmp_path}/a.json")
    assert first.returncode == 0, first.stdout + first.stderr
    bench = json.loads((tmp_path / "a.json").read_text())["benchmarks"][0]
    assert bench["stats"]["median"] == pytest.approx(3e-6)
    assert bench["stats"]["min"] == pytest.approx(1e-6)
    assert bench["stats"]["rounds"] == 5
    assert bench["stats"]["data"] == pytest.approx([1e-6, 2e-6, 3e-6, 4e-6, 100e-6])
    assert bench["extra_info"]["provider"] == "triton"

    same = run_inner(tmp_path, 1.0, "--benchmark-compare", "--benchmark-compare-fail=median:10%", "--benchmark-save=second")
    assert same.returncode == 0, same.stdout + same.stderr
    slower = run_inner(tmp_path, 1.5, "--benchmark-compare=0001", "--benchmark-compare-fail=median:10%")
    assert slower.returncode != 0 and "Performance has regressed" in slower.stdout + slower.stderr

    saved = sorted(p.name for p in (tmp_path / "store").rglob("*.json"))
    assert saved == ["0001_first.json", "0002_second.json"]  # a later run never overwrites


GRAPH_INNER = '''
from harness.perfcase import record_into_benchmark

def test_case(benchmark):
    record_into_benchmark(benchmark, [1e-6, 1.1e-6, 0.9e-6],
                          {"case": "op/n=1/fp32", "provider": "triton", "calls_per_sample": 64, "timing": "graph+cold_l2"})
'''


def test_graph_samples_record_their_calls_the_timer_and_the_code_that_ran(tmp_path):
    (tmp_path / "test_inner.py").write_text(GRAPH_INNER)
    from harness.machine import code_hash

    r = run_inner(tmp_path, 1.0, "-p", "harness.pytest_plugin", f"--benchmark-json={tmp_path}/g.json",
                  env={"KERNEL_BENCH_COMMIT": "abc123", "KERNEL_BENCH_CODE_HASH": code_hash()})
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((tmp_path / "g.json").read_text())
    bench = data["benchmarks"][0]
    assert bench["stats"]["iterations"] == 64  # calls per sample: one replay's
    assert bench["stats"]["data"] == pytest.approx([1e-6, 1.1e-6, 0.9e-6])  # still the time of one call
    assert bench["stats"]["median"] == pytest.approx(1e-6)
    assert "CUDA-graph replay" in bench["options"]["timer"]
    assert data["commit_info"]["id"] == "abc123" and data["commit_info"]["dirty"] is False
    told_other = run_inner(tmp_path, 1.0, "-p", "harness.pytest_plugin", f"--benchmark-json={tmp_path}/h.json",
                           env={"KERNEL_BENCH_COMMIT": "abc123", "KERNEL_BENCH_CODE_HASH": "0" * 16})
    assert json.loads((tmp_path / "h.json").read_text())["commit_info"]["dirty"] is True


@pytest.mark.skipif(os.environ.get("KERNEL_BENCH_INNER") == "1", reason="inner run")
def test_cpu_lane_skips_perf_with_one_reason_and_saves_nothing(tmp_path):
    from harness import lanes

    if lanes.has_gpu():
        pytest.skip("checks the CPU lane")
    env = dict(os.environ, KERNEL_BENCH_INNER="1")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "perf", "-q", "-rs", "-p", "no:cacheprovider",
         f"--benchmark-storage=file://{tmp_path}/store", "--benchmark-save=x", "tests/perf"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert lanes.NO_GPU_PERF_REASON in r.stdout
    assert " passed" not in r.stdout and "skipped" in r.stdout
    assert not list((tmp_path / "store").rglob("*.json")) if (tmp_path / "store").exists() else True


def test_pdl_setting_is_scoped_to_one_case(monkeypatch):
    """A perf case sets KERNELS_PDL (the name kernels/launch.py reads) for its own run only,
    and puts back what was there."""
    from harness import perfcase
    from kernels import launch

    assert perfcase.PDL_ENV == launch.PDL_ENV
    monkeypatch.setenv(launch.PDL_ENV, "7")
    with perfcase._pdl_setting(False):
        assert os.environ[launch.PDL_ENV] == "0"
    assert os.environ[launch.PDL_ENV] == "7"
    monkeypatch.delenv(launch.PDL_ENV)
    with perfcase._pdl_setting(True):
        assert os.environ[launch.PDL_ENV] == "1"
    assert launch.PDL_ENV not in os.environ


def test_a_saved_run_carries_its_command_and_pytest_benchmark_still_compares_it(tmp_path):
    """The plugin writes the command into the file (tools/bench's KERNEL_BENCH_COMMAND, else
    pytest's own arguments); --benchmark-compare and the suite's loader read such files."""
    from harness.results import load_run

    (tmp_path / "test_inner.py").write_text(INNER)
    typed = 'NAME=first make bench ARGS="tests/perf/quant -k m2048"'
    first = run_inner(tmp_path, 1.0, "-p", "harness.pytest_plugin", "--benchmark-save=first", "-k", "test_case",
                      env={"KERNEL_BENCH_COMMAND": typed, "KERNELS_PDL": "0"})
    assert first.returncode == 0, first.stdout + first.stderr
    saved = next((tmp_path / "store").rglob("0001_first.json"))
    command = json.loads(saved.read_text())["command"]
    assert command["line"] == typed and command["recorded_by"] == "tools/bench"
    assert "--benchmark-save=first" in command["argv"] and command["env"]["KERNELS_PDL"] == "0"
    assert load_run(saved).command == command

    env = {"KERNEL_BENCH_COMMAND": ""}  # not through tools/bench: the pytest call itself
    second = run_inner(tmp_path, 1.0, "-p", "harness.pytest_plugin", "--benchmark-save=second",
                       "--benchmark-compare=0001", "--benchmark-compare-fail=median:10%", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    line = json.loads(next((tmp_path / "store").rglob("0002_second.json")).read_text())["command"]["line"]
    assert line.startswith("python -m pytest -q -p no:cacheprovider") and "--benchmark-save=second" in line
    slower = run_inner(tmp_path, 1.5, "-p", "harness.pytest_plugin", "--benchmark-compare=0001",
                       "--benchmark-compare-fail=median:10%", env=env)
    assert slower.returncode != 0 and "Performance has regressed" in slower.stdout + slower.stderr
