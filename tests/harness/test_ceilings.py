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
