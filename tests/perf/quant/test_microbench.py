"""The items of a torchao-style YAML config (harness/microbench.py) as perf cases:
`pytest -m perf --quant-config FILE`. Each item times the baseline and the quantized
model, eager and compiled as the config asks, checked against the float32 model first.
Without --quant-config these cases are skipped (the default perf run stays bounded)."""
import functools

import pytest

pytestmark = pytest.mark.perf


def pytest_generate_tests(metafunc):
    path = metafunc.config.getoption("quant_config")
    if not path:
        metafunc.parametrize("index,provider", [pytest.param(None, None, id="no-quant-config")])
        return
    from harness.microbench import load_config

    items = load_config(path)  # a bad config fails collection with the key named
    params = []
    for i, it in enumerate(items):
        provs = ["baseline"] + ([it.recipe] if it.recipe != "baseline" else [])
        provs += [f"{p}_compiled" for p in provs] if it.compile_mode else []
        params += [pytest.param(i, p, id=f"{it.recipe}-{it.model_type}-m{it.m}-k{it.k}-n{it.n}-{p}") for p in provs]
    metafunc.parametrize("index,provider", params)


@functools.lru_cache(maxsize=1)
def _items(path):
    from harness.microbench import load_config

    return load_config(path)


@functools.lru_cache(maxsize=1)
def _case(path, index):
    from harness.microbench import build_case

    return build_case(_items(path)[index])[0]


def test_microbench(index, provider, perf, benchmark, request):
    path = request.config.getoption("quant_config")
    if index is None:
        pytest.skip("pass --quant-config FILE to run a YAML config's cases")
    if _items(path)[index].skip:  # e.g. a float32 recipe without a float32 path: the reason, not a cast
        pytest.skip(_items(path)[index].skip)
    if _items(path)[index].device != "cuda":
        pytest.skip("device: cpu items are timed by python -m harness.microbench, not as perf cases")
    perf.run(_case(path, index), provider, benchmark)
