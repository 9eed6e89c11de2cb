"""The newer kernels compile for Hopper (sm_90) at the specializations only a GPU run
reaches, checked on the CPU lane too (sm90_compile.py beside this file, in its own
process: it imports the kernels with the interpreter off). The interpreter forgives
type errors the compiler rejects (an int32 index pointer passed as float32 ran on the CPU
lane and failed to compile on an H100)."""
import os
import subprocess
import sys

import pytest

from harness.lanes import has_gpu

pytestmark = pytest.mark.correctness


ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
REFERENCE_TRITON = "3.6.0"  # the reference GPUs' (results/<gpu>/ runs' software.triton); tools/ensure-env unpacks it


@pytest.mark.skipif(has_gpu(), reason="the GPU lane compiles every kernel in its own tests")
@pytest.mark.parametrize("triton_from", ["installed", "reference"])
def test_kernels_compile_for_sm90(triton_from):
    """With the Triton installed here, and with the reference GPUs' Triton, which compiles
    some kernels differently (3.6 failed to pipeline a loop that 3.9 compiled, and the two
    lay the int4 one-row tile out differently)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if triton_from == "reference":
        site = os.path.join(ROOT, ".venv", f"triton-{REFERENCE_TRITON}")
        if not os.path.isdir(os.path.join(site, "triton")):
            pytest.skip(f"triton {REFERENCE_TRITON} is not unpacked at {os.path.normpath(site)} (tools/ensure-env)")
        env["PYTHONPATH"] = os.pathsep.join([site] + [p for p in [env.get("PYTHONPATH")] if p])
    try:
        subprocess.run([sys.executable, "-c", "from triton.backends.nvidia.compiler import CUDABackend"], env=env,
                       check=True, capture_output=True, timeout=120)  # ptxas ships with it
    except subprocess.CalledProcessError as e:
        pytest.skip(f"triton's CUDA backend is not importable here: {e.stderr.decode()[-300:]}")
    run = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "sm90_compile.py")], env=env,
                         capture_output=True, text=True, timeout=600)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith(("ok", "FAIL"))]
    if triton_from == "reference":
        assert f"triton {REFERENCE_TRITON}" in run.stdout, run.stdout[:500]  # it compiled with that one
    assert run.returncode == 0 and lines and all(ln.startswith("ok") for ln in lines), \
        "\n".join(lines) + "\n" + run.stderr[-2000:]
