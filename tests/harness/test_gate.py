"""The regression gate (harness/gate.py, python -m harness gate) on synthetic samples."""
import json

import pytest

from harness.__main__ import main
from synthetic import results_file

pytestmark = pytest.mark.harness

CASES = {
    "rmsnorm/rows=4096,hidden=4096/bf16": {"triton": 20e-6, "eager": 150e-6, "compile": 24e-6},
    "rmsnorm/rows=1,hidden=4096/bf16": {"triton": 3e-6, "eager": 12e-6, "compile": 4e-6},
}


def scaled(cases, kernel=1.0, baselines=1.0):
    return {c: {p: t * (kernel if p == "triton" else baselines) for p, t in ps.items()} for c, ps in cases.items()}


def test_a_a_passes(tmp_path):
    base = results_file(tmp_path / "base.json", CASES, seed=1)
    cand = results_file(tmp_path / "cand.json", CASES, seed=2)
    assert main(["gate", str(base), str(cand)]) == 0


def test_kernel_alone_15_percent_slower_fails(tmp_path, capsys):
    base = results_file(tmp_path / "base.json", CASES, seed=1)
    cand = results_file(tmp_path / "cand.json", scaled(CASES, kernel=1.15), seed=2)
    assert main(["gate", str(base), str(cand)]) == 1
    assert "regression" in capsys.readouterr().out


def test_kernel_and_baselines_15_percent_slower_passes(tmp_path):
    """A slower machine slows everything alike: the same-run ratio does not move."""
    base = results_file(tmp_path / "base.json", CASES, seed=1)
    cand = results_file(tmp_path / "cand.json", scaled(CASES, kernel=1.15, baselines=1.15), seed=2)
    assert main(["gate", str(base), str(cand)]) == 0


def test_one_baseline_alone_moving_passes(tmp_path, capsys):
    """Seen on an H100: torch.compile's time jumped 1.6x between sessions (another Inductor
    configuration) while the kernel and the other baselines repeated within 1%."""
    faster_compile = {c: {p: t * (0.6 if p == "compile" else 1.0) for p, t in ps.items()} for c, ps in CASES.items()}
    base = results_file(tmp_path / "base.json", CASES, seed=1)
    cand = results_file(tmp_path / "cand.json", faster_compile, seed=2)
    assert main(["gate", str(base), str(cand)]) == 0
    assert "(kernel/eager)" in capsys.readouterr().out  # the baseline that did not move decides
    # ... but a kernel slower against every baseline still fails, whichever jumped.
    slower = {c: {p: t * (1.2 if p == "triton" else 0.6 if p == "compile" else 1.0) for p, t in ps.items()}
              for c, ps in CASES.items()}
    cand2 = results_file(tmp_path / "cand2.json", slower, seed=3)
    assert main(["gate", str(base), str(cand2)]) == 1


def test_slowdown_within_noise_passes(tmp_path):
    """15% apart but with 60% spread per sample and few samples: not beyond noise."""
    base = results_file(tmp_path / "base.json", CASES, seed=1, noise=0.6, n=8)
    cand = results_file(tmp_path / "cand.json", scaled(CASES, kernel=1.15), seed=2, noise=0.6, n=8)
    assert main(["gate", str(base), str(cand)]) == 0


def test_small_real_slowdown_below_threshold_passes_above_fails(tmp_path):
    base = results_file(tmp_path / "base.json", CASES, seed=1, noise=0.005)
    cand = results_file(tmp_path / "cand.json", scaled(CASES, kernel=1.05), seed=2, noise=0.005)
    assert main(["gate", str(base), str(cand)]) == 0  # real, but under the 10% threshold
    assert main(["gate", str(base), str(cand), "--threshold", "0.02"]) == 1


def test_no_overlapping_case_is_exit_2(tmp_path, capsys):
    base = results_file(tmp_path / "base.json", {"a/x=1/bf16": CASES["rmsnorm/rows=1,hidden=4096/bf16"]}, seed=1)
    cand = results_file(tmp_path / "cand.json", {"b/x=1/bf16": CASES["rmsnorm/rows=1,hidden=4096/bf16"]}, seed=2)
    assert main(["gate", str(base), str(cand)]) == 2
    assert "nothing to compare" in capsys.readouterr().err


def test_different_gpu_models_is_exit_2(tmp_path):
    base = results_file(tmp_path / "base.json", CASES, seed=1, gpu="NVIDIA H200")
    cand = results_file(tmp_path / "cand.json", CASES, seed=2)
    assert main(["gate", str(base), str(cand)]) == 2


def test_unreadable_input_is_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cand = results_file(tmp_path / "cand.json", CASES, seed=2)
    assert main(["gate", str(bad), str(cand)]) == 2
    assert main(["gate", str(tmp_path / "missing.json"), str(cand)]) == 2


def test_base_folder_takes_each_case_from_its_newest_file_of_the_same_gpu(tmp_path, capsys):
    store = tmp_path / "results"
    (store / "h100").mkdir(parents=True)
    (store / "h200").mkdir()
    results_file(store / "h100" / "0001_old.json", scaled(CASES, kernel=0.5), seed=1)   # older, both cases
    one_case = {"rmsnorm/rows=4096,hidden=4096/bf16": CASES["rmsnorm/rows=4096,hidden=4096/bf16"]}
    results_file(store / "h100" / "0002_new.json", one_case, seed=3)                      # newest, one case
    results_file(store / "h200" / "0001_other.json", CASES, seed=4, gpu="NVIDIA H200")
    cand = results_file(tmp_path / "cand.json", CASES, seed=5)
    # rows=4096 comes from 0002 (unchanged); rows=1 only from 0001, where the kernel was
    # twice as fast: a regression, so the older file's case still counts.
    assert main(["gate", str(store), str(cand)]) == 1
    out = capsys.readouterr().out
    assert "0001_old.json" in out and "0002_new.json" in out and "0001_other" not in out
    assert "unchanged   rmsnorm/rows=4096" in out and "regression  rmsnorm/rows=1," in out
    only_h200 = tmp_path / "only_h200"
    only_h200.mkdir()
    results_file(only_h200 / "x.json", CASES, seed=4, gpu="NVIDIA H200")
    assert main(["gate", str(only_h200), str(cand)]) == 2


def test_compare_and_csv(tmp_path, capsys):
    base = results_file(tmp_path / "base.json", CASES, seed=1)
    cand = results_file(tmp_path / "cand.json", scaled(CASES, kernel=2.0), seed=2)
    assert main(["compare", str(base), str(cand)]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if "rows=4096" in l and "triton" in l)
    assert float(line.split()[4]) == pytest.approx(2.0, rel=0.01)  # B/A of the kernel median
    csv_path = tmp_path / "out.csv"
    assert main(["csv", str(base), "-o", str(csv_path)]) == 0
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("case,op,provider") and len(rows) == 1 + 6
    assert main(["csv", str(base), "-o", str(csv_path)]) == 2  # never overwritten


def test_cases_timed_differently_are_not_compared(tmp_path, capsys):
    """A change of timing method (here the L2 flush) is not a kernel change: such cases are
    skipped with a note, and a gate left with nothing to compare exits 2."""
    import json

    base = results_file(tmp_path / "base.json", CASES, seed=1)
    cand = results_file(tmp_path / "cand.json", CASES, seed=2)
    data = json.loads(cand.read_text())
    for b in data["benchmarks"]:
        b["extra_info"]["l2_flush"] = "read"
    cand.write_text(json.dumps(data))
    assert main(["gate", str(base), str(cand)]) == 2
    assert "timed differently" in capsys.readouterr().err
