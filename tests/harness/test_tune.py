"""The launch tuner (harness/tune.py) and the launch tables the kernels read
(kernels/tuning.py), on the CPU lane: kernels run in the interpreter, a host timer stands
in for device timing."""
import json
import time

import pytest
import torch

from harness import lanes
from harness.lanes import has_gpu
from harness.perfcase import PerfCase
from harness.tune import MIN_GAIN, all_spaces, compile_case, merge_into_table, ranking, tune_case
from kernels import tuning
from kernels.cost import Cost
from kernels.norm import rms_norm, rms_norm_reference
from kernels.norm import rmsnorm as rmsnorm_module

pytestmark = pytest.mark.harness


def _host_timer(fake: dict | None = None):
    """Median host time of 3 calls, or the fake seconds given per candidate label."""
    def timer(providers, make_inputs):
        inputs = make_inputs()
        out = {}
        for name, fn in providers.items():
            if fake is not None:
                out[name] = fake(name)
                continue
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn(*inputs)
                ts.append(time.perf_counter() - t0)
            out[name] = sorted(ts)[1]
        return out
    return timer


def _device() -> str:  # the lane's: Triton runs CUDA tensors on a GPU, CPU tensors only in the interpreter
    return "cuda" if has_gpu() else "cpu"


def _rmsnorm_case(rows=4, cols=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, cols, generator=g).to(_device())
    w = (1 + 0.1 * torch.randn(cols, generator=g)).to(_device())
    return PerfCase(op="rmsnorm", shape={"rows": rows, "hidden": cols}, dtype=torch.float32,
                    make_inputs=lambda: (x.clone(), w.clone()),
                    providers={"triton": lambda x, w: rms_norm(x, w, 1e-6)},
                    cost=Cost(flops=0, bytes=2 * x.numel() * 4), reference=lambda x, w: rms_norm_reference(x, w, 1e-6),
                    rtol=1e-5)


def test_tuner_searches_every_candidate_of_the_kernel_it_reaches():
    case = _rmsnorm_case()
    (entry,) = tune_case(case, timer=_host_timer())
    key = dict(rows=4, cols=64, elem=4, residual=False)
    assert entry.kernel == "rmsnorm" and entry.key == key
    assert entry.candidates == len(rmsnorm_module.LAUNCH.search_space(key)) > 1
    assert entry.rejected == {}  # every candidate computes the right answer
    assert entry.search_s > 0 and entry.case == case.case_id
    assert entry.best_us <= entry.default_us


def test_a_key_is_searched_once_per_session_and_only_the_named_kernels():
    case = _rmsnorm_case()
    done = set()
    assert len(tune_case(case, timer=_host_timer(), done=done)) == 1
    assert tune_case(case, timer=_host_timer(), done=done) == []
    assert tune_case(_rmsnorm_case(), timer=_host_timer(), only={"gqa_decode"}) == []


def _toy_space(name, default, candidates, check=None):
    tuning._SPACES.pop(name, None)
    return tuning.LaunchSpace(name, default, candidates, check)


def _toy_case(space, compute):
    """A case whose kernel scales its input by the launch's 'scale' option (1 is right)."""
    x = torch.arange(8.0)

    def kernel(x):
        cfg = space.choose(x.device, dict(n=x.numel()))
        return compute(x, cfg)
    return PerfCase(op="toy", shape={"n": 8}, dtype=torch.float32, make_inputs=lambda: (x.clone(),),
                    providers={"triton": kernel}, cost=Cost(flops=0, bytes=64), reference=lambda x: x.double(),
                    rtol=1e-6)


def test_wrong_and_failing_candidates_are_rejected_never_kept():
    def compute(x, cfg):
        if cfg["block"] == 3:
            raise RuntimeError("out of resources")
        return x * cfg["scale"]
    space = _toy_space("toy_reject", lambda n: dict(block=1, scale=1.0),
                       lambda n: [dict(block=2, scale=2.0), dict(block=3), dict(block=4)])
    fast_wrong = {"block=2,scale=2.0": 1e-6, "block=3,scale=1.0": 1e-6, "block=4,scale=1.0": 5e-6,
                  "block=1,scale=1.0": 10e-6}
    (entry,) = tune_case(_toy_case(space, compute), timer=_host_timer(lambda n: fast_wrong[n]))
    assert set(entry.rejected) == {"block=2,scale=2.0", "block=3,scale=1.0"}
    assert "||out-ref||" in entry.rejected["block=2,scale=2.0"]
    assert "out of resources" in entry.rejected["block=3,scale=1.0"]
    assert entry.config == {"block": 4}  # only what differs from the default is stored
    assert entry.best_us == pytest.approx(5.0)


def test_ranking_lists_every_timed_candidate_fastest_first_then_the_rejected():
    space = _toy_space("toy_ranking", lambda n: dict(block=1, scale=1.0),
                       lambda n: [dict(block=2, scale=2.0), dict(block=4), dict(block=8)])
    fake = {"block=1,scale=1.0": 10e-6, "block=4,scale=1.0": 5e-6, "block=8,scale=1.0": 20e-6}
    (entry,) = tune_case(_toy_case(space, lambda x, cfg: x * cfg["scale"]), timer=_host_timer(lambda n: fake[n]))
    lines = ranking(entry)
    assert [line.split()[0] for line in lines[:3]] == ["5.00", "10.00", "20.00"]
    assert lines[0].endswith("block=4,scale=1.0 (kept)") and "2.00x" in lines[0]
    assert lines[1].endswith("block=1,scale=1.0 (default)") and "1.00x" in lines[1]
    assert lines[2].endswith("block=8,scale=1.0") and "0.50x" in lines[2]
    assert len(lines) == 4 and "rejected" in lines[3] and "block=2,scale=2.0: " in lines[3]
    assert entry.record().keys().isdisjoint({"times_us"})  # the table keeps the winner only


def test_a_winner_must_beat_the_default_by_the_margin():
    space = _toy_space("toy_margin", lambda n: dict(block=1), lambda n: [dict(block=2)])
    close = {"block=1": 10e-6, "block=2": 10e-6 / (1 + MIN_GAIN / 2)}
    (entry,) = tune_case(_toy_case(space, lambda x, cfg: x), timer=_host_timer(lambda n: close[n]))
    assert entry.config == {} and entry.best_us == pytest.approx(10.0)


def test_a_default_that_fails_the_check_stops_the_tuner():
    space = _toy_space("toy_broken", lambda n: dict(scale=3.0), lambda n: [dict(scale=1.0)])
    with pytest.raises(RuntimeError, match="default configuration fails the case's check"):
        tune_case(_toy_case(space, lambda x, cfg: x * cfg["scale"]), timer=_host_timer())


def test_table_merge_keeps_other_keys_and_refuses_another_gpu(tmp_path):
    space = _toy_space("toy_table", lambda n: dict(block=1), lambda n: [dict(block=2)])
    fake = {"block=1": 10e-6, "block=2": 5e-6}
    (entry,) = tune_case(_toy_case(space, lambda x, cfg: x), timer=_host_timer(lambda n: fake[n]))
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps({"format": tuning.TABLE_FORMAT, "gpu": "GPU A", "kernels": {
        "toy_table": {"n=9": {"config": {"block": 8}}}, "other": {"k=1": {"config": {"x": 1}}}}}))
    data = merge_into_table(path, [entry], "GPU A", {"torch": "x"})
    assert data["kernels"]["toy_table"]["n=8"]["config"] == {"block": 2}
    assert data["kernels"]["toy_table"]["n=9"]["config"] == {"block": 8}
    assert data["kernels"]["other"] == {"k=1": {"config": {"x": 1}}}
    assert json.loads(path.read_text()) == data
    with pytest.raises(ValueError, match="not of this GPU"):
        merge_into_table(path, [entry], "GPU B", {})


def test_choose_precedence_override_forced_table_default(monkeypatch):
    space = _toy_space("toy_choose", lambda n: dict(block=1, warps=4), lambda n: [dict(block=2), dict(warps=8)])
    cuda0 = torch.device("cuda", 0)  # only the table lookup sees it: nothing runs on it
    table = {"toy_choose": {"n=8": {"config": {"block": 2}}}}
    monkeypatch.setattr(tuning, "_table_for_device", lambda index: table)
    assert space.choose(cuda0, dict(n=8)) == dict(block=2, warps=4)           # the table, over the default
    assert space.choose(cuda0, dict(n=16)) == dict(block=1, warps=4)          # a key not in it: the default
    assert space.choose(torch.device("cpu"), dict(n=8)) == dict(block=1, warps=4)  # the CPU lane reads none
    with tuning.forcing("toy_choose", dict(block=1, warps=8)):
        assert space.choose(cuda0, dict(n=8)) == dict(block=1, warps=8)       # the tuner's candidate
        assert space.choose(cuda0, dict(n=8), dict(block=4)) == dict(block=4, warps=8)  # the caller's override
    with pytest.raises(ValueError, match=r"unknown launch option\(s\) \['blok'\]"):
        space.choose(cuda0, dict(n=8), dict(blok=2))


def test_kernel_config_override_reaches_the_launch_and_is_checked():
    x, w = torch.randn(4, 64, device=_device()), torch.ones(64, device=_device())
    with tuning.recording() as seen:
        rms_norm(x, w, config=dict(ROWS=2, num_warps=4))
    assert seen and seen[0][0].kernel == "rmsnorm"
    torch.testing.assert_close(rms_norm(x, w, config=dict(ROWS=2)), rms_norm_reference(x, w, 1e-6).float())
    with pytest.raises(ValueError, match="ROWS must be a power of two"):
        rms_norm(x, w, config=dict(ROWS=3))
    with pytest.raises(ValueError, match="unknown launch option"):
        rms_norm(x, w, config=dict(rows=2))


def test_committed_tables_name_real_kernels_and_valid_options():
    """Every entry of kernels/tuned/*.json belongs to a declared launch space and passes its
    check: a renamed kernel or removed option cannot leave a stale table behind."""
    spaces = all_spaces()
    for path in sorted(tuning.TABLE_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        assert data["format"] == tuning.TABLE_FORMAT, path
        for kernel, entries in data["kernels"].items():
            assert kernel in spaces, f"{path.name}: no launch space {kernel!r}"
            space = spaces[kernel]
            for key_text, entry in entries.items():
                key = {k: _parse(v) for k, v in (item.split("=", 1) for item in key_text.split(","))}
                cfg = {**space.default(**key), **entry["config"]}
                assert set(entry["config"]) <= set(space.default(**key)) | space.extra_options(key), (path, key_text)
                if space.check:
                    space.check(cfg)


def _parse(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(v, v)


@pytest.mark.skipif(has_gpu(), reason="with a GPU the command tunes (minutes), the GPU lane does not start it")
def test_tune_command_refuses_without_a_gpu(capsys):
    from harness.tune import main

    assert main(["norm"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


class _Options:
    """A pytest config's getoption for PerfSession, with --tune on."""
    def __init__(self, **over):
        self.values = {**dict(warmup_ms=25.0, rep_ms=100.0, warm_l2=False, timing="auto", l2_flush="read",
                              tune=True, tune_kernel=[], tune_table=None, tune_ranking=False, tune_compile_only=False,
                              tune_compile_shard=(0, 1), remeasure_ceilings=False), **over}

    def getoption(self, name):
        return self.values[name]


def test_perf_run_with_tune_searches_the_kernel_and_skips_the_baselines(tmp_path, monkeypatch):
    """`pytest --tune` goes through the perf cases' one entry point: the kernel's test
    searches its launches (device timing replaced by the host here), a baseline's test is
    skipped, and a key reached twice is searched once."""
    from harness import tune as tune_module
    from harness.pytest_plugin import PerfSession
    from harness.timing import Measurement

    def host_times(providers, make_inputs, config, compile_s=None, kernel=None):
        return {n: Measurement(t, "events", True, 1, 0.0) for n, t in
                ((n, [s] * 3) for n, s in _host_timer()(providers, make_inputs).items())}
    monkeypatch.setattr(tune_module, "time_providers", host_times)
    monkeypatch.setattr(tune_module, "l2_cache_bytes", lambda: 50 << 20)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "GPU A")
    case = _rmsnorm_case()
    case.providers["eager"] = lambda x, w: rms_norm_reference(x, w, 1e-6)
    sess = PerfSession(_Options(tune_table=str(tmp_path / "gpu.json")))
    info = sess.run(case, "triton", benchmark=None)
    assert [t["case"] for t in info["tuned"]] == [case.case_id] and len(sess.tuned) == 1
    with pytest.raises(pytest.skip.Exception, match="only the suite's kernel is searched"):
        sess.run(case, "eager", benchmark=None)
    assert sess.run(case, "triton", benchmark=None) == {"tuned": []}
    only_decode = PerfSession(_Options(tune_kernel=["gqa_decode"]))
    assert only_decode.run(case, "triton", benchmark=None) == {"tuned": []}


def test_the_plugin_writes_each_cases_winners_at_once(tmp_path, monkeypatch):
    """A tuning run cut short (a call's time limit) keeps every case it finished: the
    session merges each case's entries into the table as the case ends."""
    from harness import tune as tune_module
    from harness.pytest_plugin import PerfSession

    space = _toy_space("toy_incremental", lambda n: dict(block=1), lambda n: [dict(block=2)])
    fake = {"block=1": 10e-6, "block=2": 5e-6}
    case = _toy_case(space, lambda x, cfg: x)
    monkeypatch.setattr(tune_module, "tune_case",
                        lambda *a, **k: tune_case(case, timer=_host_timer(lambda n: fake[n])))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "GPU A")
    path = tmp_path / "gpu.json"
    session = PerfSession(_Options(tune_table=str(path), tune_ranking=True))
    printed = []
    monkeypatch.setattr(session, "_write_line", printed.append)
    session.run(case, case.kernel, benchmark=None)
    # no session end yet (pytest_terminal_summary never ran): the table holds the case already
    assert json.loads(path.read_text())["kernels"]["toy_incremental"]["n=8"]["config"] == {"block": 2}
    tuned = next(i for i, line in enumerate(printed) if line.startswith("tuned: toy_incremental"))
    assert printed[tuned + 1:tuned + 3] == ["         5.00 us   2.00x  block=2 (kept)",
                                           "        10.00 us   1.00x  block=1 (default)"]  # --tune-ranking


def test_compile_only_runs_and_checks_every_candidate_and_times_nothing(tmp_path, monkeypatch):
    """The parallel first phase of `python -m harness tune`: each candidate runs once (so
    Triton compiles it) and is checked; nothing is timed and no table is written."""
    from harness import tune as tune_module
    from harness.pytest_plugin import PerfSession

    ran = []

    def compute(x, cfg):
        ran.append(cfg["block"])
        return x * cfg["scale"]
    space = _toy_space("toy_compile", lambda n: dict(block=1, scale=1.0),
                       lambda n: [dict(block=2), dict(block=3, scale=2.0)])
    case = _toy_case(space, compute)
    monkeypatch.setattr(tune_module, "time_providers", lambda *a, **k: pytest.fail("compile-only timed a candidate"))
    (rejected,) = compile_case(case).values()
    assert sorted(set(ran)) == [1, 2, 3] and list(rejected) == ["block=3,scale=2.0"]
    path = tmp_path / "gpu.json"
    sess = PerfSession(_Options(tune_table=str(path), tune_compile_only=True))
    assert sess.run(case, case.kernel, benchmark=None) == {"compiled": {"toy_compile n=8": 1}}
    assert sess.run(case, case.kernel, benchmark=None) == {"compiled": {}}  # a key is compiled once
    assert not path.exists() and sess.tuned == []


def test_compile_shards_split_every_launchs_candidates_between_them():
    """Process i of n compiles candidates i, i + n, ... of each launch: together the shards
    run each candidate once; only the shard holding the default stops on its failure."""
    ran = []

    def compute(x, cfg):
        ran.append(cfg["block"])
        return x * cfg["scale"]
    space = _toy_space("toy_shard", lambda n: dict(block=1, scale=1.0),
                       lambda n: [dict(block=b) for b in (2, 3, 4, 5)] + [dict(block=6, scale=2.0)])
    case = _toy_case(space, compute)
    rejected = {}
    for i in range(3):
        before = len(ran)
        (r,) = compile_case(case, shard=(i, 3)).values()
        rejected.update(r)
        assert set(ran[before:]) - {1} == ({4}, {2, 5}, {3, 6})[i]  # 1: the default, run by each to find the launches
    assert sorted(set(ran)) == [1, 2, 3, 4, 5, 6] and list(rejected) == ["block=6,scale=2.0"]
    assert compile_case(case, shard=(7, 8)) == {("toy_shard", "n=8"): {}}  # more shards than candidates
    broken = _toy_case(_toy_space("toy_shard_broken", lambda n: dict(block=1, scale=3.0),
                                  lambda n: [dict(block=2, scale=1.0)]), compute)
    assert compile_case(broken, shard=(1, 2)) == {("toy_shard_broken", "n=8"): {}}  # the default is shard 0's
    with pytest.raises(RuntimeError, match="default configuration fails"):
        compile_case(broken, shard=(0, 2))


def test_tune_command_compiles_in_parallel_then_times_alone(monkeypatch):
    """`--jobs N` runs N compile-only processes at once, each a shard of the candidates (the
    first printing its progress), then the timed search in one process; `--jobs 1` runs the
    search alone."""
    import subprocess

    from harness import lanes
    from harness import tune as tune_module

    calls = []
    monkeypatch.setattr(lanes, "has_gpu", lambda: True)
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    assert tune_module.main(["norm", "--jobs", "4", "-k", "rows"]) == 0
    *shards, (search, _) = calls
    assert sorted(c[c.index("--tune-compile-only") + 1] for c, _ in shards) == [
        f"--tune-compile-shard={i}/4" for i in range(4)]
    assert [set(kw) for c, kw in shards if "--tune-compile-shard=0/4" in c] == [{"env"}]  # the first shard prints
    assert all(kw.get("stdout") == subprocess.DEVNULL for c, kw in shards if "--tune-compile-shard=0/4" not in c)
    assert all(kw["env"][lanes.GPU_SHARE_ENV] == "4" for _, kw in shards)  # each plans on a quarter of the GPU
    assert "--tune-compile-only" not in search and not any(a.startswith("--tune-compile-shard") for a in search)
    assert all(c[:c.index("--tune-compile-only")] == search for c, _ in shards)  # the same cases in both phases
    calls.clear()
    assert tune_module.main(["norm", "--jobs", "1"]) == 0 and len(calls) == 1
    assert "--tune-ranking" not in calls[0][0]
    assert tune_module.main(["norm", "--jobs", "1", "--ranking"]) == 0 and "--tune-ranking" in calls[1][0]
    calls.clear()
    assert tune_module.main(["norm", "--jobs", "0"]) == 2
    calls.clear()  # a failure while compiling (a candidate, a case) leaves the timed search to report it
    monkeypatch.setattr(subprocess, "call",
                        lambda cmd, **kw: calls.append(cmd) or (1 if "--tune-compile-only" in cmd else 0))
    assert tune_module.main(["norm", "--jobs", "2"]) == 0 and len(calls) == 3


def test_tune_skips_the_baselines_tests_before_their_cases_are_built():
    """Under --tune a baseline's test is skipped at collection: building its case (a
    FlexAttention block mask at 32K tokens: 8 GB) is never paid for a search that times
    only the kernel."""
    from types import SimpleNamespace

    from harness.perfcase import Provider
    from harness.pytest_plugin import _is_baseline_test

    bench = SimpleNamespace(providers=[Provider("triton", lambda x: x, kernel=True), Provider("eager", lambda x: x)])

    def item(provider, spec=SimpleNamespace(bench=bench)):
        return SimpleNamespace(callspec=SimpleNamespace(params={"spec": spec, "provider": provider}))
    assert _is_baseline_test(item("eager")) and not _is_baseline_test(item("triton"))
    assert not _is_baseline_test(SimpleNamespace()) and not _is_baseline_test(item("eager", spec=object()))


def test_whole_model_targets_compile_in_the_timed_search(monkeypatch, capsys):
    """A perf file whose cases build a whole model (or a folder holding one) runs no parallel
    compile processes: each would build the model, and eight 8B models overflow an 80 GB GPU."""
    import subprocess

    from harness import lanes
    from harness import tune as tune_module

    calls = []
    monkeypatch.setattr(lanes, "has_gpu", lambda: True)
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    for target in ("tests/e2e/test_shared_prefix_perf.py", "tests/e2e"):
        calls.clear()
        assert tune_module.main([target, "--jobs", "4"]) == 0
        assert len(calls) == 1 and "--tune-compile-only" not in calls[0]
        assert "whole-model cases compile in the timed search" in capsys.readouterr().out
    calls.clear()
    assert tune_module.main(["layers", "--jobs", "4"]) == 0 and len(calls) == 5  # single layers: in parallel


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu(), reason="needs a CUDA GPU")
def test_the_shared_prefix_check_fits_a_tuner_process_at_the_generation_shape(monkeypatch):
    """The tuner checks candidates in 8 processes on one GPU at once. At the generation's
    attention shape (256 sequences over an 8K prefix, 32 query / 8 KV heads) the case's
    reference held 22 GB in each and ran an H100 out of memory; it must fit in an eighth."""
    from tests.perf.attention.test_shared_prefix import shared_prefix_case
    monkeypatch.setenv(lanes.GPU_SHARE_ENV, "8")
    case = shared_prefix_case.case(dict(tree="flat", batch=256, prefix=8192, suffix=64, q_heads=32, kv_heads=8))
    inputs = case.make_inputs()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    held = torch.cuda.memory_allocated()
    case.reference(*inputs)
    peak = torch.cuda.max_memory_allocated() - held
    assert peak < torch.cuda.get_device_properties(0).total_memory / 8, f"the reference peaked at {peak / 2**30:.1f} GiB"
