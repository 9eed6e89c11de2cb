"""How a perf case picks its timing (harness/perfcase.py: timing_config_for)."""
import torch

from harness.metrics import Cost
from harness.perfcase import PerfCase, timing_config_for
from harness.timing import TimingConfig

L2 = 50 << 20


def case(**kw):
    return PerfCase(op="op", shape={"n": 1}, dtype=torch.float32, make_inputs=lambda: (), providers={},
                    cost=Cost(flops=0, bytes=0), reference=lambda: None, rtol=0.0, **kw)


def test_held_bytes_that_fit_l2_are_timed_with_a_flush_per_call():
    # 31 MB of held weights would stay in a 50 MB L2 across a CUDA graph's calls
    assert timing_config_for(case(held_bytes=31 << 20), TimingConfig(), L2).mode == "events"
    assert timing_config_for(case(held_bytes=99 << 20), TimingConfig(), L2).mode == "events"


def test_other_cases_keep_the_configured_mode():
    assert timing_config_for(case(), TimingConfig(), L2).mode == "auto"  # inputs rotate in graphs
    assert timing_config_for(case(held_bytes=200 << 20), TimingConfig(), L2).mode == "auto"  # cannot stay in L2
    assert timing_config_for(case(held_bytes=31 << 20), TimingConfig(cold_l2=False), L2).mode == "auto"
    assert timing_config_for(case(held_bytes=31 << 20, timing_mode="graph"), TimingConfig(), L2).mode == "graph"
    assert timing_config_for(case(held_bytes=31 << 20), TimingConfig(mode="graph"), L2).mode == "graph"  # --timing


def test_output_slice_checks_the_part_the_reference_computes():
    """A case whose reference computes only some rows compares those rows of every output,
    and still catches a wrong value there."""
    from harness.perfcase import check_providers

    x = torch.arange(12.0).reshape(6, 2)
    right = lambda t: t * 2
    wrong = lambda t: torch.cat([t[:3] * 2, t[3:] * 3])
    c = PerfCase(
        op="op", shape={"n": 6}, dtype=torch.float32, make_inputs=lambda: (x,), providers={"triton": right, "bad": wrong},
        cost=Cost(flops=0, bytes=0), reference=lambda t: t[-2:] * 2, rtol=1e-6, output_slice=(slice(-2, None),))
    errors, refused, _ = check_providers(c, (x,))
    assert "triton" not in errors and not refused
    assert "||out-ref||" in errors["bad"]


def test_a_baseline_that_refuses_its_inputs_is_skipped_and_a_broken_one_fails():
    """A baseline raising on these inputs (a library's refusal) is left out with why; one
    whose code names something undefined (as an eager RMSNorm baseline once did, missing
    its import) is the suite's bug and fails the case instead of quietly thinning it."""
    from harness.perfcase import check_providers

    def refuses(t):
        raise RuntimeError("No available kernel. Aborting execution.")

    def broken(t):
        return undefined_name * t  # noqa: F821

    x = torch.ones(3)
    c = PerfCase(
        op="op", shape={"n": 3}, dtype=torch.float32, make_inputs=lambda: (x,),
        providers={"triton": lambda t: t * 2, "refuses": refuses, "broken": broken},
        cost=Cost(flops=0, bytes=0), reference=lambda t: t * 2, rtol=1e-6)
    errors, refused, _ = check_providers(c, (x,))
    assert refused == {"refuses": "raised RuntimeError: No available kernel. Aborting execution."}
    assert errors["broken"].startswith("raised NameError") and "triton" not in errors
