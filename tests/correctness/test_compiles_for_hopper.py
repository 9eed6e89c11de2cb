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


@pytest.mark.skipif(has_gpu(), reason="the GPU lane compiles every kernel in its own tests")
def test_kernels_compile_for_sm90():
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401 - ptxas ships with it
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"triton's CUDA backend is not importable here: {e}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "sm90_compile.py")], env=env,
                         capture_output=True, text=True, timeout=600)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith(("ok", "FAIL"))]
    assert run.returncode == 0 and lines and all(ln.startswith("ok") for ln in lines), \
        "\n".join(lines) + "\n" + run.stderr[-2000:]
