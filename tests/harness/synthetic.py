"""Synthetic results files, shaped like the suite's pytest-benchmark output, and an inner
pytest run of one test file under the suite's plugin."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def results_file(path, cases: dict, gpu="NVIDIA H100 80GB HBM3", seed=0, noise=0.02, n=200, software=None,
                 info=None, ceilings=None):
    """cases: case id -> {provider: true median seconds}; 'triton' is the kernel.
    Samples are lognormal around the median with relative spread `noise`. info: case id ->
    more extra_info fields of its entries (op, shape, flops, bytes); ceilings: the machine's."""
    rng = np.random.default_rng(seed)
    extra = info or {}
    benches = []
    for case, providers in cases.items():
        baselines = {p: t for p, t in providers.items() if p != "triton"}
        for provider, t in providers.items():
            samples = (t * np.exp(rng.normal(0.0, noise, n))).tolist()
            med = float(np.median(samples))
            info = {"case": case, "provider": provider, "role": "kernel" if provider == "triton" else "baseline",
                    "median_s": med, "iqr_s": 0.0, "timing": "events+cold_l2", **extra.get(case, {})}
            if provider == "triton":
                best = min(baselines, key=baselines.get)
                info.update(best_baseline=best, speedup_vs_best_baseline=baselines[best] / t,
                            speedups={b: bt / t for b, bt in baselines.items()})
            benches.append({"name": f"test[{case}-{provider}]", "extra_info": info,
                            "stats": {"median": med, "data": samples}})
    machine = {"gpu": {"name": gpu}, "software": software or {"torch": "2.11.0", "triton": "3.6.0"},
               **({"ceilings": ceilings} if ceilings else {})}
    path.write_text(json.dumps({"machine_info": machine, "datetime": f"2026-11-22T00:00:0{seed % 10}",
                                "benchmarks": benches}))
    return path


def plugin_run(tmp_path, source: str) -> subprocess.CompletedProcess:
    """Run `source` as one test file under harness.pytest_plugin with pytest's fd capture on
    (as a GPU run has it): what the plugin writes past the capture reaches stdout."""
    root = Path(__file__).resolve().parents[2]
    test = tmp_path / "test_inner.py"
    test.write_text(source)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "harness.pytest_plugin",
                           "--capture=fd", str(test)],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
