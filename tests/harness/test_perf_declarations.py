"""The declared perf providers (harness/perfcase.py: Provider, perf_bench): what the API does
with an unavailable provider, the kernel, and bad declarations; and every perf file's
declarations, listed without a GPU (no case is built, no tensor allocated)."""
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.metrics import Cost
from harness.perfcase import NOT_SELECTED, CaseSpec, PerfBench, PerfCase, Provider, ProviderUnavailable, perf_bench
from harness.pytest_plugin import PerfSession, select_providers

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
PERF_FILES = sorted(ROOT.glob("tests/perf/**/test_*.py")) + [ROOT / "tests/e2e/test_decoder_layer.py",
                                                             ROOT / "tests/e2e/test_sparse_model_perf.py"]
# Its cases and providers come from a YAML config (harness/microbench.py), not declarations.
CONFIG_DRIVEN = {"tests/perf/quant/test_microbench.py"}


def setup(n):
    return PerfCase(op="op", shape={"n": n}, dtype=torch.float32, make_inputs=lambda: (), cost=Cost(flops=0, bytes=0),
                    reference=lambda: None, rtol=0.0, state=SimpleNamespace(n=n))


def grid(sweep):
    return [dict(n=1), dict(n=2)] + ([dict(n=3)] if sweep else [])


def unavailable(_):
    raise ProviderUnavailable("lib refused: no GPU of its kind")


def bench(*providers):
    return perf_bench(grid=grid, id="op-n{n}", providers=list(providers))(setup)


def test_unavailable_providers_are_listed_with_their_reason_and_not_built():
    b = bench(Provider("mine", lambda: 1, kernel=True),
              Provider("nolib", lambda: 2, needs="no_such_module_for_perf_tests"),
              Provider("check", lambda: 3, needs=lambda: "needs an sm_100 GPU"),
              Provider("refuses", make=unavailable),
              Provider("odd_only", lambda: 4, when=lambda p: p.n % 2 == 1 or "odd n only"),
              Provider("ok", make=lambda s: lambda: s.n))
    case = b.case({"n": 2})
    assert list(case.providers) == ["mine", "ok"]
    assert case.unavailable == {
        "nolib": "no_such_module_for_perf_tests does not import: ModuleNotFoundError: "
                 "No module named 'no_such_module_for_perf_tests'",
        "check": "needs an sm_100 GPU",
        "refuses": "lib refused: no GPU of its kind",
        "odd_only": "odd n only"}
    assert case.providers["ok"]() == 2  # the factory got the case's state
    assert "odd_only" in b.case({"n": 1}).providers


def test_the_perf_session_skips_an_unavailable_provider_with_its_reason():
    b = bench(Provider("mine", lambda: 1, kernel=True), Provider("check", lambda: 3, needs=lambda: "needs an sm_100 GPU"))
    options = dict(warmup_ms=1.0, rep_ms=1.0, warm_l2=False, timing="auto", l2_flush="read")
    sess = PerfSession(SimpleNamespace(getoption=options.get))
    with pytest.raises(pytest.skip.Exception, match="check unavailable: needs an sm_100 GPU"):
        sess.run(CaseSpec(b, grid(False)[0]).build(), "check", SimpleNamespace(disabled=False))


def test_availability_is_checked_once():
    calls = []

    def check():
        calls.append(1)
        return None

    b = bench(Provider("mine", lambda: 1, kernel=True), Provider("lib", lambda: 2, needs=check))
    for n in (1, 2, 3):
        assert "lib" in b.case({"n": n}).providers
    assert len(calls) == 1


def test_the_kernel_and_unchecked_baselines_are_marked():
    b = bench(Provider("base", lambda: 0), Provider("mine", lambda: 1, kernel=True),
              Provider("gemm_only", lambda: 2, checked=False))
    case = b.case({"n": 1})
    assert case.kernel == "mine" and case.unchecked == ("gemm_only",)
    assert b.kernel.name == "mine"


def test_params_follow_the_grid_then_the_declared_providers():
    b = bench(Provider("mine", lambda: 1, kernel=True), Provider("big", lambda: 2, when=lambda p: p.n >= 2))
    assert [p.id for p in b.params(sweep=False)] == ["op-n1-mine", "op-n2-mine", "op-n2-big"]
    assert [p.id for p in b.params(sweep=True)][-2:] == ["op-n3-mine", "op-n3-big"]


def test_bad_declarations_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="provider 'eager' is declared more than once"):
        bench(Provider("mine", lambda: 1, kernel=True), Provider("eager", lambda: 2), Provider("eager", lambda: 3))
    with pytest.raises(ValueError, match="0 providers have kernel=True; declare exactly one"):
        bench(Provider("eager", lambda: 2))
    with pytest.raises(ValueError, match="2 providers have kernel=True"):
        bench(Provider("a", lambda: 1, kernel=True), Provider("b", lambda: 2, kernel=True))
    with pytest.raises(ValueError, match="the kernel 'mine' takes no needs= or when="):
        bench(Provider("mine", lambda: 1, kernel=True, needs="torch"))
    with pytest.raises(ValueError, match="give exactly one of fn= .* or make="):
        Provider("both", lambda: 1, make=lambda s: lambda: 1)
    b = perf_bench(grid=lambda sweep: [dict(n=1), dict(n=1)], id="op-n{n}",
                   providers=[Provider("mine", lambda: 1, kernel=True)])(setup)
    with pytest.raises(ValueError, match="two grid points have the test id 'op-n1'"):
        b.params()


def _never_built(_):
    raise AssertionError("a provider whose test was not selected was built")


def _item(b, point, provider, skipped=False):
    return SimpleNamespace(callspec=SimpleNamespace(params={"spec": CaseSpec(b, point), "provider": provider}),
                           keywords={"perf": True}, get_closest_marker=lambda name: skipped if name == "skip" else None)


def test_a_session_builds_and_times_only_the_selected_providers_and_always_the_kernel():
    """At 1M tokens every dense baseline takes minutes: `-k "t1048576 and (triton or cudnn)"`
    must not time the others behind the user's back."""
    b = bench(Provider("mine", lambda: 1, kernel=True), Provider("cudnn", lambda: 2),
              Provider("flex", make=_never_built), Provider("slow", make=_never_built))
    select_providers([_item(b, {"n": 1}, "cudnn"), _item(b, {"n": 1}, "slow", skipped=True),
                      _item(b, {"n": 2}, "flex", skipped=True)])
    case = b.case({"n": 1})
    assert list(case.providers) == ["mine", "cudnn"]  # the kernel too, though its test was not selected
    assert case.unavailable == {"flex": NOT_SELECTED, "slow": NOT_SELECTED}
    assert list(b.case({"n": 2}).providers) == ["mine"]
    b.select(None)  # every provider again, the case kept from before (n=2) built anew
    with pytest.raises(AssertionError, match="was not selected was built"):
        b.case({"n": 2})


def _out_of_memory(_):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 128.00 GiB.")


def test_a_baseline_out_of_memory_loses_only_its_own_row():
    """FlexAttention's causal mask once asked for 128 GiB at 128K tokens while the case was
    built, and every provider of the case failed with it, the kernel included."""
    case = bench(Provider("mine", lambda: 1, kernel=True), Provider("big", make=_out_of_memory)).case({"n": 1})
    assert list(case.providers) == ["mine"]
    assert case.unavailable == {"big": "out of memory building it: CUDA out of memory. Tried to allocate 128.00 GiB."}
    with pytest.raises(torch.OutOfMemoryError):
        bench(Provider("mine", make=_out_of_memory, kernel=True)).case({"n": 2})


def test_a_kernel_that_cannot_run_is_an_error_not_a_skip():
    b = bench(Provider("mine", make=unavailable, kernel=True))
    with pytest.raises(ProviderUnavailable):
        b.case({"n": 1})


def _module(path: Path):
    return importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))


@pytest.mark.parametrize("path", PERF_FILES, ids=[str(p.relative_to(ROOT)) for p in PERF_FILES])
def test_every_perf_file_declares_its_grid_and_providers(path):
    rel = str(path.relative_to(ROOT))
    module = _module(path)
    benches = [v for v in vars(module).values() if isinstance(v, PerfBench)]
    if rel in CONFIG_DRIVEN:
        assert not benches
        return
    assert benches, f"{rel} declares no perf_bench"
    assert callable(getattr(module, "pytest_generate_tests", None)), f"{rel} does not parametrize its benches"
    for sweep in (False, True):
        ids = []
        for b in benches:
            b.check_declaration(sweep)  # every grid point fits setup's arguments and the test id
            for point in b.points(sweep):
                names = [p.name for p in b.providers_at(point)]
                assert names[0] == b.kernel.name, f"{rel}: the kernel must be the first provider"
            ids += [p.id for p in b.params(sweep)]
        assert ids and len(ids) == len(set(ids)), f"{rel}: test ids repeat"


class _ShardItem:
    def __init__(self, spec, provider, perf=True):
        self.callspec = SimpleNamespace(params={"spec": spec, "provider": provider})
        self.keywords = {"perf": True} if perf else {}


def test_perf_shards_keep_a_cases_providers_together_and_cover_every_case_once():
    from harness.pytest_plugin import perf_shard

    specs = [object() for _ in range(5)]
    items = [_ShardItem(s, p) for s in specs for p in ("triton", "eager")] + [_ShardItem(None, None, perf=False)]
    shares = [perf_shard(items, k, 2)[0] for k in range(2)]
    perf = [[i for i in share if i.keywords] for share in shares]
    assert [len({id(i.callspec.params["spec"]) for i in share}) for share in perf] == [3, 2]
    assert sorted(id(i) for share in perf for i in share) == sorted(id(i) for i in items[:-1])  # each once
    for share in perf:  # both providers of each case it holds
        for spec in {id(i.callspec.params["spec"]) for i in share}:
            assert sum(id(i.callspec.params["spec"]) == spec for i in share) == 2
    assert all(items[-1] in share for share in shares)  # a test that is no perf case runs in every share


@pytest.mark.parametrize("option", ["--perf-shard", "--tune-compile-shard"])
def test_a_bad_shard_is_refused_by_name(tmp_path, option):
    test = tmp_path / "test_x.py"
    test.write_text("def test_x():\n    pass\n")
    for bad, why in (("2/2", "needs 0 <= K < N"), ("1", "takes K/N"), ("-1/2", "needs 0 <= K < N")):
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "harness.pytest_plugin",
                            f"{option}={bad}", str(test)], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 4 and why in r.stderr and option in r.stderr, r.stderr


def test_perf_files_use_only_attributes_their_modules_have():
    """Every `module.name` a perf or e2e file writes names something that module has. The
    providers' factories run only on a GPU, so a helper that moved (tests/e2e/test_decoder_layer.py called
    kernels.norm.baselines.compiled after it had moved to kernels.providers) failed every case
    there with an AttributeError, and nothing on the CPU lane noticed."""
    import ast
    import types

    files = sorted(set(PERF_FILES) | set(ROOT.glob("tests/e2e/test_*.py")))  # e2e: GPU-only paths too
    missing = []
    for path in files:
        module = _module(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                owner = getattr(module, node.value.id, None)
                if isinstance(owner, types.ModuleType) and not hasattr(owner, node.attr):
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not missing, "no such attribute: " + "; ".join(missing)
