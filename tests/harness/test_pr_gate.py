"""harness/pr_gate.py, the logic of CI's pull-request gate, on synthetic results: the
verdicts against the committed reference and the base-branch run, the exit status that
fails the check, the job summary, and the report beside them."""
import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.__main__ import main
from tests.harness.synthetic import results_file

CASES = {"op/n=1": {"triton": 10e-6, "eager": 20e-6, "other": 30e-6},
         "op/n=2": {"triton": 40e-6, "eager": 80e-6, "other": 90e-6}}


def _slower(cases, case, factor):
    return {c: {p: t * factor if (c == case and p == "triton") else t for p, t in prov.items()}
            for c, prov in cases.items()}


@pytest.fixture
def committed(tmp_path):
    """results/<gpu>/ with three runs of unchanged code (the reference and its history)."""
    folder = tmp_path / "results" / "nvidia-h100-80gb-hbm3"
    folder.mkdir(parents=True)
    for seed in range(3):
        results_file(folder / f"000{seed}_ref.json", CASES, seed=seed)
    return tmp_path / "results"


def _pr_gate(tmp_path, committed, cand, *extra):
    summary = tmp_path / "summary.md"
    code = main(["pr-gate", str(cand), "--results", str(committed), "--summary", str(summary), *extra])
    return code, summary.read_text()


def test_an_unchanged_kernel_passes_and_the_summary_says_so(tmp_path, committed, capsys):
    cand = results_file(tmp_path / "cand.json", CASES, seed=7)
    code, text = _pr_gate(tmp_path, committed, cand)
    assert code == 0
    assert text.startswith("# GPU gate: pass") and "0 regression(s) in 2 judged case(s)" in text
    assert "| unchanged | `op/n=1` |" in text and "No report was asked for" in text
    assert text in capsys.readouterr().out  # the log shows what the summary shows


def test_a_slower_kernel_fails_the_check_and_leads_the_table(tmp_path, committed):
    cand = results_file(tmp_path / "cand.json", _slower(CASES, "op/n=2", 1.3), seed=7)
    code, text = _pr_gate(tmp_path, committed, cand)
    assert code == 1
    assert text.startswith("# GPU gate: FAIL")
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "`op/" in ln]
    assert rows[0].startswith("| **regression** | `op/n=2` |") and "unchanged" in rows[1]


def test_the_base_branch_run_is_a_second_gate(tmp_path, committed):
    """Against the committed reference the candidate is unchanged; the base branch, run in
    the same job, was faster: the second gate flags it and the check fails."""
    base = results_file(tmp_path / "base.json", _slower(CASES, "op/n=1", 1 / 1.3), seed=8)
    cand = results_file(tmp_path / "cand.json", CASES, seed=7)
    code, text = _pr_gate(tmp_path, committed, cand, "--base-run", str(base))
    assert code == 1
    assert "## Against the committed reference (results/): pass" in text
    assert "## Against the base branch, run on this machine in this job: FAIL" in text


def test_the_report_is_written_beside_the_verdict(tmp_path, committed):
    pytest.importorskip("matplotlib")
    cand = results_file(tmp_path / "cand.json", CASES, seed=7)
    code, text = _pr_gate(tmp_path, committed, cand, "--report-dir", str(tmp_path / "report"))
    assert code == 0
    page = tmp_path / "report" / "nvidia-h100-80gb-hbm3" / "index.md"
    assert page.exists() and f"`{page}`" in text
    pngs = list(page.parent.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_summaries_append_and_never_replace(tmp_path, committed):
    """GitHub's step summary file collects every step's text: the gate appends to it."""
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    cand = results_file(tmp_path / "cand.json", CASES, seed=7)
    main(["pr-gate", str(cand), "--results", str(committed), "--summary", str(summary)])
    assert summary.read_text().startswith("earlier step\n# GPU gate: pass")


def test_no_reference_for_the_gpu_model_is_a_named_error_not_a_pass(tmp_path, committed):
    cand = results_file(tmp_path / "cand.json", CASES, gpu="NVIDIA H200", seed=7)
    code, text = _pr_gate(tmp_path, committed, cand)
    assert code == 2 and text.startswith("# GPU gate: cannot judge") and "H200" in text


def test_a_case_the_gate_cannot_judge_leaves_the_check_incomplete(tmp_path, committed):
    """A case timed another way than its reference is not comparable: neither pass nor fail."""
    cand = results_file(tmp_path / "cand.json", CASES, seed=7, info={"op/n=1": {"timing": "graph+warm_l2"}})
    code, text = _pr_gate(tmp_path, committed, cand)
    assert code == 3 and text.startswith("# GPU gate: INCOMPLETE")
    assert "Not judged:" in text and "op/n=1" in text.split("Not judged:")[1]


REPO = Path(__file__).resolve().parents[2]


def _script(*args, env=None, cwd=REPO):
    return subprocess.run([str(REPO / "tools" / "pr-gate"), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_the_ci_script_judges_given_runs_and_writes_the_job_summary(tmp_path, committed):
    summary = tmp_path / "step_summary.md"
    cand = results_file(tmp_path / "cand.json", _slower(CASES, "op/n=1", 1.3), seed=7)
    run = _script("--candidate", str(cand), "--results", str(committed), "--report-dir", str(tmp_path / "report"),
                  env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert run.returncode == 1, run.stdout + run.stderr  # the check fails on the regression
    assert summary.read_text().startswith("# GPU gate: FAIL") and "| **regression** | `op/n=1` |" in summary.read_text()


def test_the_ci_script_refuses_an_unknown_argument():
    run = _script("--bogus")
    assert run.returncode == 2 and "unknown argument --bogus" in run.stderr


def test_the_workflow_runs_the_script_with_arguments_it_takes():
    yaml = pytest.importorskip("yaml")
    flow = yaml.safe_load((REPO / ".github" / "workflows" / "gpu-gate.yml").read_text())
    job = flow["jobs"]["gate"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert len(runs) == 1 and runs[0].startswith("tools/pr-gate ")
    taken = set(re.findall(r"^\s+(--[a-z-]+)\)", (REPO / "tools" / "pr-gate").read_text(), flags=re.M))
    used = set(re.findall(r"(--[a-z-]+)", runs[0]))
    assert used and used <= taken, f"the workflow passes {used - taken}, which tools/pr-gate does not take"
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "gate-report/" in upload["with"]["path"] and upload["if"] == "always()"
