"""The committed results: pytest-benchmark runs only, each saying in the file what command
made it; the CSVs they no longer sit beside are rebuilt from them by python -m harness csv."""
import csv
import dataclasses
import gzip
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.__main__ import CSV_FIELDS, main
from harness.results import (COMMAND_ENV, COMMAND_KEY, UnusableInput, command_problem, command_record, load_run,
                             load_folder, load_history, read_json, write_run)
from synthetic import plugin_run, results_file

pytestmark = pytest.mark.harness

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"
COMMITTED = sorted(RESULTS.rglob("*.json.gz"))


def test_gpu_folders_hold_only_pytest_benchmark_runs():
    assert COMMITTED, "no committed runs under results/"
    others = [p.relative_to(REPO).as_posix() for d in RESULTS.iterdir() if d.is_dir()
              for p in d.rglob("*") if p.is_file() and not p.name.endswith(".json.gz")]
    assert others == [], ("results/<gpu>/ holds gzip-compressed runs only (python -m harness store RUN.json NAME); "
                          "a plain JSON bloats the tree, a CSV comes from python -m harness csv RUN.json.gz")


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.relative_to(RESULTS).as_posix())
def test_every_committed_run_says_what_made_it(path):
    data = read_json(path)
    assert isinstance(data.get("benchmarks"), list) and "machine_info" in data and "commit_info" in data
    assert command_problem(data) is None, f"{path.name}: {command_problem(data)}"
    assert load_run(path).command == data[COMMAND_KEY]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.relative_to(RESULTS).as_posix())
def test_stats_hold_the_time_of_one_call(path):
    """pytest-benchmark's stats and the suite's extra_info agree on the median time of one
    call, also where a sample averages several calls (graph replays, iterations > 1)."""
    run = read_json(path)
    wrong = [b["name"] for b in run["benchmarks"] if "median_s" in b.get("extra_info", {})
             and abs(b["stats"]["median"] / b["extra_info"]["median_s"] - 1) > 1e-6]
    assert not wrong, f"{len(wrong)} entries whose stats.median is not extra_info.median_s, e.g. {wrong[:3]}"


def test_a_run_without_a_command_fails_the_check():
    assert command_problem({"benchmarks": []}) == "no 'command' object"
    assert command_problem({COMMAND_KEY: {"line": ""}}) is not None
    assert command_problem({COMMAND_KEY: {"line": None}}) is not None  # null needs a note saying why
    assert command_problem({COMMAND_KEY: {"line": None, "note": "not recorded"}}) is None
    assert command_problem({COMMAND_KEY: {"line": "make bench"}}) is None


def test_command_record_prefers_the_users_command_and_keeps_the_settings_that_matter():
    env = {COMMAND_ENV: 'NAME=x make bench ARGS="tests/perf/quant -k m2048"', "KERNEL_BENCH_COMMIT": "abc",
           "KERNELS_PDL": "0", "HOME": "/root", "PATH": "/bin"}
    rec = command_record(["-m", "perf", "tests/perf/quant", "-k", "m2048"], env)
    assert rec["line"] == env[COMMAND_ENV] and rec["recorded_by"] == "tools/bench"
    assert rec["argv"] == ["-m", "perf", "tests/perf/quant", "-k", "m2048"]
    assert rec["env"] == {"KERNEL_BENCH_COMMIT": "abc", "KERNELS_PDL": "0"}
    plain = command_record(["-m", "perf", "-k", "a and b"], {})
    assert plain["line"] == "python -m pytest -m perf -k 'a and b'" and plain["recorded_by"] == "harness.pytest_plugin"
    assert "not_in_line" not in rec and "not_in_line" not in plain


def test_a_told_command_that_selects_other_cases_is_flagged():
    """A told line that does not hold the run's -k expression or test paths (a script that
    exported one command and ran another) is kept, flagged with what it lacks."""
    env = {COMMAND_ENV: "pytest -m perf tests/e2e/test_model_perf.py -k 'llama3-8b-p8192'"}
    rec = command_record(["-m", "perf", "tests/e2e/test_model_perf.py", "tests/perf/attention/test_prefill.py",
                          "-k", "t8192 or t32768", "--benchmark-save=x"], env)
    assert rec["line"] == env[COMMAND_ENV]
    assert rec["not_in_line"] == ["tests/perf/attention/test_prefill.py", "t8192 or t32768"]
    same = command_record(["-m", "perf", "tests/e2e/test_model_perf.py", "-k", "llama3-8b-p8192"], env)
    assert "not_in_line" not in same
    assert "not_in_line" not in command_record(["-m", "perf", "--perf-shard", "0/2"], {COMMAND_ENV: "make bench"})


FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then exit 0; fi
printf '%s\\n' "$KERNEL_BENCH_COMMAND" >> "$FAKE_LOG"
"""


@pytest.mark.parametrize("how", ["make", "script"])
def test_make_bench_exports_the_command_as_typed(tmp_path, how):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k not in ("ARGS", "NAME")}
    env.update(KERNEL_BENCH_PYTHON=str(fake), FAKE_LOG=str(log), NAME="my-run")
    if how == "make":
        cmd = ["make", "--no-print-directory", "bench", "ARGS=tests/perf/quant -k 'm2048 and \"x\"'"]
        want = 'NAME=my-run make bench ARGS="tests/perf/quant -k \'m2048 and \\"x\\"\'"'
    else:
        cmd = [str(REPO / "tools" / "bench"), "tests/perf", "-k", "m1 and b"]
        want = "NAME=my-run tools/bench tests/perf -k m1\\ and\\ b"
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert log.read_text().splitlines() == [want]


def _csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_rebuilds_from_a_run_and_round_trips(tmp_path, capsys):
    f = results_file(tmp_path / "run.json", {"op/n=1/fp32": {"triton": 2e-6, "eager": 3e-6},
                                             "op/n=2/fp32": {"triton": 4e-6, "compile": 5e-6}})
    assert main(["csv", str(f), "-o", str(tmp_path / "run.csv")]) == 0
    rows = _csv_rows((tmp_path / "run.csv").read_text())
    run = load_run(f)
    assert [r["case"] for r in rows] == sorted(c for c, _ in run.entries)
    assert list(rows[0]) == CSV_FIELDS
    for r in rows:
        e = run.entries[(r["case"], r["provider"])]
        assert float(r["median_us"]) == e.median_s * 1e6 and r["role"] == e.role
        assert int(r["rounds"]) == len(e.samples_s)
    assert main(["csv", str(f)]) == 0  # stdout: the same bytes
    assert capsys.readouterr().out == (tmp_path / "run.csv").read_bytes().decode()
    assert main(["csv", str(f), "-o", str(tmp_path / "run.csv")]) == 2  # never overwritten


def test_csv_of_a_committed_run_carries_every_entry(capsys):
    path = RESULTS / "nvidia-h100-80gb-hbm3" / "0007_layer-llama3-b1.json.gz"
    assert main(["csv", str(path)]) == 0
    rows = _csv_rows(capsys.readouterr().out)
    run = load_run(path)
    assert {(r["case"], r["provider"]) for r in rows} == set(run.entries)


def test_torchao_csv_comes_back_from_the_runners_json(tmp_path, capsys):
    rows = [{"name": "a", "quantization": "int8wo", "m": 1, "error": ""},
            {"name": "b", "quantization": "baseline", "m": 16, "error": "x, \"y\""}]
    f = tmp_path / "results_1.json"
    f.write_text(json.dumps({"benchmarks": [], "microbench": {"config": "c.yml", "rows": rows}}))
    assert main(["csv", str(f), "--torchao"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "name,quantization,m,error"  # the runner's column order
    assert _csv_rows(out) == [{k: str(v) for k, v in r.items()} for r in rows]
    plain = results_file(tmp_path / "plain.json", {"op/n=1/fp32": {"triton": 1e-6, "eager": 2e-6}})
    assert main(["csv", str(plain), "--torchao"]) == 2  # not a runner's file


def test_the_committed_runner_json_gives_its_torchao_csv(capsys):
    runs = [p for p in COMMITTED if "microbench" in read_json(p)]
    assert runs, "results/<gpu>/microbench/ holds a python -m harness.microbench run"
    for path in runs:
        assert main(["csv", str(path), "--torchao"]) == 0
        header = capsys.readouterr().out.splitlines()[0].split(",")
        assert header[:4] == ["name", "quantization", "sparsity", "m"]


CASE = {"op/n=1/fp32": {"triton": 2e-6, "eager": 3e-6}}
H100 = "nvidia-h100-80gb-hbm3"  # gpu_slug of synthetic.results_file's GPU


def _run(path, seed=0, command=True, gpu="NVIDIA H100 80GB HBM3"):
    """A synthetic plain-JSON run, as a GPU session hands it over (pretty-printed, not compact)."""
    data = json.loads(results_file(path, CASE, seed=seed, gpu=gpu).read_text())
    if command:
        data[COMMAND_KEY] = {"line": f"make bench NAME=s{seed}"}
    path.write_text(json.dumps(data, indent=4))
    return path


def test_a_gzip_run_loads_as_its_plain_json(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = _run(tmp_path / "a" / "0001_x.json")
    gz = write_run(tmp_path / "b" / "0001_x.json.gz", read_json(plain))
    assert gzip.decompress(gz.read_bytes()) == json.dumps(read_json(plain), separators=(",", ":")).encode()
    assert dataclasses.replace(load_run(gz), path=str(plain)) == load_run(plain)
    assert [r.name for r in load_folder(tmp_path)] == ["a/0001_x.json", "b/0001_x.json.gz"]  # both kinds, full names
    assert len(load_history(tmp_path, "NVIDIA H100 80GB HBM3")) == 2


@pytest.mark.parametrize("content", [b"{}", gzip.compress(b'{"benchmarks": []}')[:15], b"\x1f\x8b\x08\x00" + bytes(20),
                                     gzip.compress(b'{"benchmarks": [')], ids=["not-gzip", "cut", "corrupt", "bad-json"])
def test_a_corrupt_gzip_run_is_unusable_input_naming_the_file(tmp_path, capsys, content):
    bad = tmp_path / H100 / "0001_bad.json.gz"
    bad.parent.mkdir()
    bad.write_bytes(content)
    with pytest.raises(UnusableInput, match="0001_bad.json.gz"):
        load_run(bad)
    with pytest.raises(UnusableInput, match="0001_bad.json.gz"):
        load_folder(tmp_path)  # the committed runs: an error, not skipped
    assert load_history(tmp_path, None) == []
    assert main(["table", str(bad)]) == 2 and "0001_bad.json.gz" in capsys.readouterr().err


def test_store_numbers_past_the_highest_and_round_trips(tmp_path, capsys):
    results = tmp_path / "results"
    (results / H100).mkdir(parents=True)
    write_run(results / H100 / "0002_a.json.gz", read_json(_run(tmp_path / "a.json", seed=1)))
    write_run(results / H100 / "0007_b.json.gz", read_json(_run(tmp_path / "b.json", seed=2)))
    cand = _run(tmp_path / "cand.json", seed=3)
    assert main(["store", str(cand), "new-run_2", "--results", str(results)]) == 0
    out = results / H100 / "0008_new-run_2.json.gz"
    assert capsys.readouterr().out.strip() == str(out)
    assert read_json(out) == json.loads(cand.read_text())
    assert gzip.decompress(out.read_bytes()) == json.dumps(read_json(out), separators=(",", ":")).encode()
    assert out.read_bytes()[4:8] == bytes(4)  # gzip mtime 0: the same run gives the same bytes
    other = _run(tmp_path / "h200.json", seed=4, gpu="NVIDIA H200")
    assert main(["store", str(other), "x", "--results", str(results)]) == 0  # a new GPU folder starts at 0001
    assert (results / "nvidia-h200" / "0001_x.json.gz").is_file()


def test_store_refuses_a_copy_an_overwrite_a_bad_name_and_a_run_that_cannot_be_committed(tmp_path, capsys):
    results = tmp_path / "results"
    cand = _run(tmp_path / "cand.json", seed=3)
    assert main(["store", str(cand), "first", "--results", str(results)]) == 0
    stored = results / H100 / "0001_first.json.gz"
    before = sorted((results / H100).iterdir())
    capsys.readouterr()
    assert main(["store", str(cand), "again", "--results", str(results)]) == 2  # the same run twice
    assert "already stored" in capsys.readouterr().err
    for name in ("", "a b", "../up", "x.json", "dé"):
        assert main(["store", str(cand), name, "--results", str(results)]) == 2
    for bad, why in ((_run(tmp_path / "nocmd.json", seed=5, command=False), "command"),
                     (_run(tmp_path / "nogpu.json", seed=6, gpu=None), "GPU"),
                     (tmp_path / "missing.json", "no such file")):
        assert main(["store", str(bad), "x", "--results", str(results)]) == 2
        assert why in capsys.readouterr().err
    empty = tmp_path / "empty.json"  # no case in it: stored before
    empty.write_text(json.dumps({**json.loads(cand.read_text()), "benchmarks": []}))
    assert main(["store", str(empty), "x", "--results", str(results)]) == 2
    assert "no device-timed cases" in capsys.readouterr().err
    assert sorted((results / H100).iterdir()) == before
    with pytest.raises(UnusableInput, match="never overwritten"):
        write_run(stored, {})
    assert read_json(stored) == json.loads(cand.read_text())


def test_the_gate_reads_a_gzip_reference_and_leaves_the_candidates_stored_copy_out(tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["store", str(_run(tmp_path / "old.json", seed=1)), "old", "--results", str(results)]) == 0
    cand = _run(tmp_path / "cand.json", seed=2)
    assert main(["store", str(cand), "cand", "--results", str(results)]) == 0
    capsys.readouterr()
    assert main(["gate", str(results), str(cand)]) == 0  # plain candidate, gzip reference
    out = capsys.readouterr().out
    assert "0001_old.json.gz" in out and "0002_cand.json.gz" not in out


def test_each_record_is_kept_the_moment_it_is_measured(tmp_path):
    """--partial-results: a run cut short (a lent GPU's time limit) keeps, in its file and on
    the terminal, every provider it measured before the end of the session."""
    import json
    from types import SimpleNamespace

    from harness.pytest_plugin import PerfSession

    lines = []
    path = tmp_path / "partial.jsonl"
    options = dict(warmup_ms=1.0, rep_ms=1.0, warm_l2=False, timing="auto", l2_flush="read", tune=False,
                   partial_results=str(path))
    reporter = SimpleNamespace(write_line=lines.append)
    plugins = {"terminalreporter": reporter}
    config = SimpleNamespace(getoption=options.get, pluginmanager=SimpleNamespace(get_plugin=plugins.get))
    sess = PerfSession(config)
    for provider, t in (("triton", 10e-6), ("eager", 20e-6)):
        sess._keep({"case": "op/n=1", "provider": provider, "median_s": t, "iqr_s": 1e-7})
    kept = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["provider"], r["median_s"]) for r in kept] == [("triton", 10e-6), ("eager", 20e-6)]
    assert lines[0].startswith("measured: op/n=1") and "10.00" in lines[0] and "20.00" in lines[1]


def test_the_measured_line_reaches_the_terminal_through_output_capture(tmp_path):
    """On a GPU the `measured:` lines were written inside the test, under pytest's fd capture,
    and never reached the log; the line has to pass the capture."""
    out = plugin_run(tmp_path,
                     "from harness.pytest_plugin import PerfSession\n"
                     "def test_keep(request):\n"
                     "    PerfSession(request.config)._keep({'case': 'op/n=1', 'provider': 'triton', 'median_s': 1e-5, "
                     "'iqr_s': 1e-7})\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(line.startswith("measured: op/n=1") for line in out.stdout.splitlines()), out.stdout


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["benchmarks"][0]["extra_info"].update(speedup_vs_best_baseline="n/a"),
     r"extra_info.speedup_vs_best_baseline is 'n/a', not a number"),
    (lambda d: d["benchmarks"][0]["extra_info"].update(iqr_s=True), "extra_info.iqr_s is True, not a number"),
    (lambda d: d["machine_info"]["gpu"].update(name=123), "machine_info.gpu.name is 123, not a string"),
])
def test_an_ill_typed_field_is_unusable_input_everywhere(tmp_path, capsys, edit, message):
    """Such fields crashed table and compare with a format error, store and report with an
    AttributeError; now every command names the field."""
    good = _run(tmp_path / "good.json", seed=1)
    data = json.loads(good.read_text())
    edit(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(UnusableInput, match=message):
        load_run(bad)
    for argv in (["table", str(bad)], ["compare", str(good), str(bad)], ["store", str(bad), "x", "--results",
                                                                           str(tmp_path / "r")]):
        assert main(argv) == 2
        assert "not a" in capsys.readouterr().err


def test_a_table_without_a_spread_shows_a_dash(tmp_path, capsys):
    data = json.loads(_run(tmp_path / "a.json", seed=1).read_text())
    for b in data["benchmarks"]:
        b["extra_info"].pop("iqr_s", None)
    f = tmp_path / "noiqr.json"
    f.write_text(json.dumps(data))
    assert main(["table", str(f)]) == 0  # a KeyError before
