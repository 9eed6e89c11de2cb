"""harness/ceilings.py: ceilings are measured on a CUDA GPU; without one, `python -m harness
ceilings` exits 2 with a one-line message instead of a traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ceilings
from harness.results import UnusableInput

pytestmark = pytest.mark.harness

REPO = Path(__file__).resolve().parents[2]


def test_get_ceilings_without_cuda_raises_a_named_error(monkeypatch):
    monkeypatch.setattr(ceilings.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ceilings.NoCudaGpu, match="measured on a CUDA GPU") as exc:
        ceilings.get_ceilings()
    assert isinstance(exc.value, UnusableInput)  # what `python -m harness` turns into exit 2


def test_ceilings_command_without_cuda_exits_2_with_one_line():
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this runs the same on both lanes
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, "-m", "harness", "ceilings"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "ceilings are measured on a CUDA GPU" in lines[0], run.stderr


def test_a_gemm_rate_is_the_best_of_its_rounds(monkeypatch):
    # A slow first reading of each shape (a slow spell, a clock dip) must not become the
    # ceiling: a ceiling is what the GPU reached, so readings can only err low.
    seconds = iter([4.0, 8.0] + [1.0, 2.0] * (ceilings.GEMM_ROUNDS - 1))
    calls = []

    class Timed:
        def __init__(self, s):
            self.median_s = s

    def fake_time_providers(providers, make_inputs, config):
        calls.append(config.mode)
        return {name: Timed(next(seconds)) for name in providers}

    monkeypatch.setattr(ceilings, "time_providers", fake_time_providers)
    monkeypatch.setattr(ceilings, "GEMM_SHAPES", ((10, 20, 30), (40, 50, 60)))
    best, readings = ceilings._best_rate(lambda m, k, n: (lambda: None))
    assert len(calls) == 2 * ceilings.GEMM_ROUNDS and set(calls) == {"events"}
    ops = (2.0 * 10 * 20 * 30, 2.0 * 40 * 50 * 60)
    assert readings[:2] == [ops[0] / 4.0 / 1e12, ops[1] / 8.0 / 1e12]  # shapes alternate
    assert best == max(ops[0] / 1.0, ops[1] / 2.0) / 1e12
