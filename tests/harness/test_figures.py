"""harness/figures.py (python -m harness report) on small synthetic results files: the pages
and figures exist and are PNG files, a regression between two runs is flagged in the
history, and missing fields or unreadable files are reported, not fatal."""
import pytest

from harness.__main__ import main
from harness.figures import PNG_MAGIC, build_report, collect, sweeps
from harness.report import newest_kernels
from synthetic import results_file

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.harness

CEILINGS = {"copy_gbps": 3000.0, "bf16_tflops": 750.0}


def _info(op, rows):
    return {"op": op, "shape": {"rows": rows, "hidden": 4096}, "flops": 4.0 * rows * 4096, "bytes": 4.0 * rows * 4096}


def _cases(slow=1.0):
    cases, info = {}, {}
    for rows in (8, 64, 512):
        case = f"rmsnorm/rows={rows},hidden=4096"
        cases[case] = {"triton": rows * 1e-7 * (slow if rows == 64 else 1.0), "eager": rows * 2e-7}
        info[case] = _info("rmsnorm", rows)
    return cases, info


@pytest.fixture
def results(tmp_path):
    d = tmp_path / "results"
    (d / "h100").mkdir(parents=True)
    (d / "h200").mkdir()
    cases, info = _cases()
    results_file(d / "h100" / "0001_a.json", cases, seed=1, info=info, ceilings=CEILINGS)
    slow_cases, _ = _cases(slow=1.3)  # rows=64's kernel 30% slower, its baseline unchanged
    results_file(d / "h100" / "0002_b.json", slow_cases, seed=2, info=info, ceilings=CEILINGS)
    results_file(d / "h200" / "0001_a.json", cases, gpu="NVIDIA H200", seed=3, info=info)
    return d


def test_one_page_per_gpu_with_png_figures(results, tmp_path):
    import matplotlib.pyplot as plt

    pages = build_report([results], tmp_path / "report")
    names = sorted(p.parent.name for p in pages[:-1])
    assert names == ["nvidia-h100-80gb-hbm3", "nvidia-h200"]
    h100 = (tmp_path / "report" / "nvidia-h100-80gb-hbm3")
    for fig in ("speedup_rmsnorm.png", "roofline.png", "sweep_rmsnorm_rows.png", "history_rmsnorm.png"):
        data = (h100 / fig).read_bytes()
        assert data.startswith(PNG_MAGIC) and plt.imread(h100 / fig).ndim == 3
        assert f"]({fig})" in (h100 / "index.md").read_text()
    assert "[nvidia-h200](nvidia-h200/index.md)" in pages[-1].read_text()


def test_the_history_flags_the_run_the_gate_flags(results, tmp_path):
    build_report([results], tmp_path / "report")
    rows = {line.split("|")[1].strip(" `"): line for line in
            (tmp_path / "report" / "nvidia-h100-80gb-hbm3" / "index.md").read_text().splitlines()
            if line.startswith("| `rmsnorm")}
    assert rows["rmsnorm/rows=64,hidden=4096"].rstrip(" |").endswith("0002_b.json")
    assert rows["rmsnorm/rows=8,hidden=4096"].rstrip(" |").endswith("-")
    assert "| 2 |" in rows["rmsnorm/rows=8,hidden=4096"]


def test_missing_fields_and_bad_files_are_reported(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    cases, _ = _cases()
    results_file(d / "0001_bare.json", cases)  # no op, shape, flops or bytes
    (d / "0002_broken.json").write_text("{not json")
    pages = build_report([d], tmp_path / "report")
    page = pages[0].read_text()
    assert "3 case(s) left out: no flops or bytes recorded." in page
    assert "0002_broken.json: not a readable JSON results file" in pages[-1].read_text()
    runs, problems = collect([d])
    assert not sweeps(newest_kernels(runs)) and len(problems) == 1  # no shape: no sweep


def test_nothing_to_report_a_file_for_a_folder_and_one_gpu_spelled_twice(results, tmp_path, capsys):
    """An empty folder or a missing path was a report of no page with exit 0; -o naming a
    file a traceback; two spellings of one GPU model one folder, the second page over the first."""
    (tmp_path / "empty").mkdir()
    for paths in ([tmp_path / "empty"], [tmp_path / "missing"]):
        assert main(["report", *map(str, paths), "-o", str(tmp_path / "r0")]) == 2
        assert "nothing to report" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["report", str(results), "-o", str(tmp_path / "afile"), "--no-gate-marks"]) == 2
    assert "is a file" in capsys.readouterr().err
    cases, info = _cases()
    two = tmp_path / "two"
    two.mkdir()
    results_file(two / "0001_a.json", cases, gpu="NVIDIA H100", seed=1, info=info)
    results_file(two / "0002_b.json", cases, gpu="nvidia h100", seed=2, info=info)
    pages = build_report([two], tmp_path / "r2")
    assert [p.parent.name for p in pages[:-1]] == ["nvidia-h100"]
    assert "2 runs" in pages[0].read_text()


def test_the_command_writes_the_report(results, tmp_path, capsys):
    assert main(["report", str(results / "h100"), "-o", str(tmp_path / "r"), "--no-gate-marks"]) == 0
    assert str(tmp_path / "r" / "index.md") in capsys.readouterr().out


def test_integer_work_is_drawn_under_its_own_roofline(tmp_path, monkeypatch):
    """An int8 GEMM's TOP/s belong under the int8 peak, not the bf16 one: each unit a case
    runs on gets its roofline, and runs without the field count as bf16."""
    import harness.figures as figures
    from harness.results import load_run

    cases = {"gemm/m=1": {"triton": 1e-4, "eager": 2e-4}, "w8a8/m=1": {"triton": 1e-4, "eager": 2e-4}}
    info = {"gemm/m=1": {"op": "gemm", "flops": 1e12, "bytes": 1e9},
            "w8a8/m=1": {"op": "w8a8", "flops": 1e12, "bytes": 1e9, "compute_ceiling": "int8_tops"}}
    path = results_file(tmp_path / "run.json", cases, info=info, ceilings={**CEILINGS, "int8_tops": 1500.0})
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, p: drawn.setdefault("fig", fig) and p)
    newest = newest_kernels([load_run(path)])
    figures.roofline_figure(newest, {**CEILINGS, "int8_tops": 1500.0}, tmp_path / "roofline.png")
    ax = drawn["fig"].axes[0]
    lines = {ln.get_label(): max(ln.get_ydata()) for ln in ax.get_lines()}
    assert lines == {"roofline: copy 3000 GB/s, bf16 750 TFLOP/s": 750.0,
                     "roofline: copy 3000 GB/s, int8 1500 TOP/s": 1500.0}
    labels = {c.get_label() for c in ax.collections}
    assert labels == {"gemm", "w8a8 (int8)"}


@pytest.mark.parametrize("info,unit", [
    ({"compute_ceiling": "int8_tops"}, "int8_tops"),
    ({"compute_ceiling": None, "tflops": 900.0, "roofline_fraction": 0.6, "roofline_bound": "compute"}, "bf16_tflops"),
    ({"tflops": 900.0, "roofline_fraction": 0.6, "roofline_bound": "compute"}, "int8_tops"),  # 1500: int8's peak
    ({"tflops": 700.0, "roofline_fraction": 0.9334, "roofline_bound": "compute"}, "bf16_tflops"),
    ({"tflops": 700.0, "roofline_fraction": 0.96, "roofline_bound": "compute"}, None),  # 729: 3% off bf16's
    ({"tflops": 100.0, "roofline_fraction": 0.9, "roofline_bound": "memory"}, "bf16_tflops"),
    ({"tflops": 300.0, "roofline_fraction": 0.25, "roofline_bound": "compute"}, None),  # 1200: no unit's peak
    ({"tflops": 1000.0, "roofline_fraction": 1.0, "roofline_bound": "compute", "fp8": True}, None),  # int8 = fp8
])
def test_the_unit_of_a_case_from_its_field_or_its_recorded_roofline(info, unit):
    """Runs recorded before compute_ceiling: the rate over the compute-bound fraction is the
    peak their roofline used (the run's own ceilings), which names the unit; a null field
    means bandwidth-bound work."""
    from harness.figures import compute_unit

    ceilings = {**CEILINGS, "int8_tops": 1500.0, **({"int8_tops": 1000.0, "fp8_tflops": 1000.0} if info.get("fp8") else {})}
    assert compute_unit(info, ceilings) == unit


def test_labels_keep_what_differs_and_the_title_what_is_shared():
    from harness.figures import short_labels

    labels, common = short_labels(["tree=flat,batch=512,prefix=1024,q_heads=8/bf16",
                                   "tree=flat,batch=1024,prefix=2048,q_heads=8/bf16"])
    assert labels == ["batch=512,prefix=1024", "batch=1024,prefix=2048"] and common == "tree=flat, q_heads=8, bf16"
    assert short_labels(["rows=8/bf16"]) == (["rows=8,bf16"], "")  # one case: nothing to cut
    assert short_labels(["n=1/bf16", "n=1/bf16"])[0] == ["n=1,bf16", "n=1,bf16"]  # identical: kept whole


def test_the_same_results_give_the_same_files(results, tmp_path):
    """A report is a pure function of its results: byte-identical under any string hash
    seed (the roofline's points were once drawn in a set's order, so the committed figures
    changed with every regeneration)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    outs = []
    out = tmp_path / "report"  # one path: the pages name the command that made them
    for seed in ("1", "2"):
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "harness", "report", str(results), "-o", str(out)], cwd=root, check=True,
                       capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed, "MPLBACKEND": "Agg"})
        outs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outs[0].keys() == outs[1].keys() and outs[0] == outs[1]


def test_the_newest_result_of_each_case_comes_in_case_order_under_any_hash_seed(tmp_path):
    """The report's figures draw the cases in newest_kernels' order; it came from a set of
    case names, whose order changes with the string hash seed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cases = {f"rmsnorm/rows={r},hidden=4096": {"triton": r * 1e-7, "eager": r * 2e-7} for r in range(1, 41)}
    results_file(tmp_path / "0001_a.json", cases, seed=1, info={c: _info("rmsnorm", 1) for c in cases},
                 ceilings=CEILINGS)
    code = ("import sys; from harness.figures import collect; from harness.report import newest_kernels; "
            "runs, _ = collect([sys.argv[1]]); print('\\n'.join(newest_kernels(runs)))")
    root = Path(__file__).resolve().parents[2]
    orders = [subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, check=True, capture_output=True,
                             text=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout.split()
              for seed in ("1", "2", "3")]
    assert orders[0] == orders[1] == orders[2] == sorted(cases)
