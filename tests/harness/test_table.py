"""python -m harness table --markdown: docs/results/<gpu>.md generated from the committed
runs, the newest run per case, byte for byte the same each time, and checked for drift."""
import json
import os
from pathlib import Path

import pytest

import harness.__main__ as harness_main
from harness.__main__ import main
from harness.report import markdown_command
from synthetic import results_file

pytestmark = pytest.mark.harness

REPO = Path(__file__).resolve().parents[2]


def test_committed_tables_match_the_committed_runs(capsys):
    """docs/results/*.md are what the command writes now: edit the runs, not the tables."""
    code = main(["table", "--markdown", "--check"])
    assert code == 0, capsys.readouterr().err + "\nregenerate with: python -m harness table --markdown"
    slugs = sorted(d.name for d in (REPO / "results").iterdir() if d.is_dir())
    assert sorted(p.stem for p in (REPO / "docs" / "results").glob("*.md")) == slugs


def _with_command(path, line, when):
    data = json.loads(path.read_text())
    data.update(command={"line": line}, datetime=when)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A results/ of one GPU folder with two runs: 0002 newer, re-timing one case of 0001."""
    gpu = tmp_path / "results" / "h100"
    gpu.mkdir(parents=True)
    _with_command(results_file(gpu / "0001_a.json", {"norm/rows=2/bf16": {"triton": 2e-6, "eager": 4e-6},
                                                     "norm/rows=16/bf16": {"triton": 3e-6, "eager": 3.3e-6},
                                                     "mm/m=1/bf16": {"triton": 40e-6, "cublas": 50e-6}}),
                  "make bench ARGS=\"tests/perf/norm\"", "2026-11-01T00:00:00")
    _with_command(results_file(gpu / "0002_b.json", {"norm/rows=16/bf16": {"triton": 1e-6, "eager": 2e-6}}, seed=3),
                  "pytest -m perf -k 'rows=16 | x'", "2026-11-02T00:00:00")
    monkeypatch.setattr(harness_main, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(harness_main, "DOCS_RESULTS", tmp_path / "docs" / "results")
    return tmp_path


def test_newest_run_per_case_with_its_file_and_command(store):
    assert main(["table", "--markdown"]) == 0
    text = (store / "docs" / "results" / "h100.md").read_text()
    lines = text.splitlines()
    assert markdown_command("h100") in lines[0] and "do not edit by hand" in lines[0]
    row = {ln.split(" | ")[0][3:-1]: ln for ln in lines if ln.startswith("| `")}
    assert "0002_b.json" in row["rows=16/bf16"] and "2.00x" in row["rows=16/bf16"]  # the newer run wins
    assert "0001_a.json" in row["rows=2/bf16"] and "| eager |" in row["rows=2/bf16"]
    assert "0001_a.json" in row["m=1/bf16"] and "| cublas |" in row["m=1/bf16"]
    assert text.index("## mm (1 case)") < text.index("## norm (2 cases)")
    assert text.index("`rows=2/bf16`") < text.index("`rows=16/bf16`")  # numbers sort as numbers
    assert "`pytest -m perf -k 'rows=16 \\| x'`" in text  # each run's command, safe in a table cell


def test_generation_is_deterministic(store):
    out_a, out_b = store / "a.md", store / "b.md"
    assert main(["table", "--markdown", "--gpu", "h100", "--out", str(out_a)]) == 0
    for p in (store / "results" / "h100").iterdir():  # file times say nothing about which run is newer
        os.utime(p, (0, 0))
    assert main(["table", "--markdown", "--gpu", "h100", "--out", str(out_b)]) == 0
    assert out_a.read_bytes() == out_b.read_bytes()


def test_check_fails_on_a_hand_edit_a_new_run_or_a_stale_file(store, capsys):
    assert main(["table", "--markdown", "--check"]) == 1  # nothing generated yet
    assert main(["table", "--markdown"]) == 0
    assert main(["table", "--markdown", "--check"]) == 0
    md = store / "docs" / "results" / "h100.md"
    md.write_text(md.read_text().replace("2.00x", "2.10x"))
    assert main(["table", "--markdown", "--check"]) == 1
    assert main(["table", "--markdown"]) == 0
    _with_command(results_file(store / "results" / "h100" / "0003_c.json", {"mm/m=1/bf16": {"triton": 30e-6, "cublas": 50e-6}}),
                  "make bench", "2026-11-03T00:00:00")
    assert main(["table", "--markdown", "--check"]) == 1
    assert main(["table", "--markdown"]) == 0
    (store / "docs" / "results" / "a100.md").write_text("old\n")  # no results/a100/ makes it
    capsys.readouterr()
    assert main(["table", "--markdown", "--check"]) == 1
    assert "a100.md" in capsys.readouterr().err


def test_bad_requests_are_unusable_input(store):
    assert main(["table", "--markdown", "--gpu", "nope"]) == 2
    assert main(["table", "--markdown", str(store / "results" / "h100" / "0001_a.json")]) == 2
    assert main(["table"]) == 2
    (store / "results" / "h100" / "broken.json").write_text("{")
    assert main(["table", "--markdown"]) == 2  # a committed file that does not load is an error here


def test_each_table_names_the_baselines_that_did_not_run(tmp_path, monkeypatch):
    """A row's best baseline is the fastest of those that ran: the table says which did not,
    why, and in how many rows (H100 runs 0061-0065 lost the norm's eager and compile
    baselines to a NameError without a word in the tables)."""
    gpu = tmp_path / "results" / "h100"
    gpu.mkdir(parents=True)
    why = "raised NameError: name 'torch' is not defined"
    info = {"norm/rows=2/bf16": {"unavailable_baselines": {"compile": why, "eager": why}},
            "norm/rows=16/bf16": {"unavailable_baselines": {"compile": why}},
            "mm/m=1/bf16": {}}
    _with_command(results_file(gpu / "0001_a.json", {"norm/rows=2/bf16": {"triton": 2e-6, "torch": 4e-6},
                                                     "norm/rows=16/bf16": {"triton": 3e-6, "torch": 3.3e-6},
                                                     "mm/m=1/bf16": {"triton": 40e-6, "cublas": 50e-6}}, info=info),
                  "make bench", "2026-11-01T00:00:00")
    monkeypatch.setattr(harness_main, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(harness_main, "DOCS_RESULTS", tmp_path / "docs" / "results")
    assert main(["table", "--markdown"]) == 0
    text = (tmp_path / "docs" / "results" / "h100.md").read_text()
    norm = text[text.index("## norm"):]
    assert f"- compile, in 2 of the 2 rows: {why}" in norm and f"- eager, in 1 of the 2 rows: {why}" in norm
    assert "did not run" not in text[text.index("## mm"):text.index("## norm")]  # every mm baseline ran



def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`python -m harness table RUN | head`: the pipe closes before the table is written;
    the command ends quietly (exit 1, as Python's docs advise), not with a BrokenPipeError
    traceback on the terminal."""
    import subprocess
    import sys

    run = results_file(tmp_path / "run.json", {"norm/rows=2/bf16": {"triton": 2e-6, "eager": 4e-6}})
    p = subprocess.Popen([sys.executable, "-m", "harness", "table", str(run)], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # no reader before the command has printed anything
    _, err = p.communicate(timeout=120)
    assert "Traceback" not in err.decode() and p.returncode == 1, err.decode()
