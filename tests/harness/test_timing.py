"""CPU checks of harness/timing.py's rules (the GPU protocol itself: test_timing_gpu.py)."""
from dataclasses import replace

import pytest

from harness.timing import (MAX_GRAPH_COPIES, MAX_HOLD_S, MAX_REPLAY_S, TimingConfig, graph_plan, longer_hold,
                            sample_count)

pytestmark = pytest.mark.harness


def test_a_discard_lengthens_the_hold_to_cover_the_host_work():
    first = 40e-6
    assert longer_hold(first, first, enqueue_s=30e-6) == pytest.approx(2 * 30e-6 + 20e-6)


def test_one_host_hiccup_at_most_doubles_the_hold():
    first = 40e-6
    assert longer_hold(first, first, enqueue_s=50e-3) == pytest.approx(2 * first)


def test_repeated_hiccups_stop_at_the_cap():
    first, hold = 40e-6, 40e-6
    for _ in range(40):
        hold = longer_hold(hold, first, enqueue_s=50e-3)
    assert hold == pytest.approx(MAX_HOLD_S)


def test_a_host_heavy_provider_may_hold_past_the_fixed_cap():
    first = 2e-3  # estimated host time of the call itself: its own hold is already long
    hold = first
    for _ in range(10):
        hold = longer_hold(hold, first, enqueue_s=1.0)
    assert hold == pytest.approx(4 * first)


def test_a_hold_never_shrinks():
    assert longer_hold(500e-6, 40e-6, enqueue_s=1e-6) == 500e-6


L2 = 50 << 20


def test_a_small_kernel_rotates_over_enough_copies_for_a_cold_l2():
    calls, copies, cold = graph_plan(per_copy=4 << 20, est_s=[5e-6], cold_l2=True, l2_bytes=L2)
    assert cold and copies * (4 << 20) >= 2 * L2 and calls >= copies


def test_a_long_call_is_captured_a_bounded_number_of_times():
    """A whole model's decode step (about 10 ms) on 2 KB of token ids: before the cap the
    plan asked for MAX_GRAPH_COPIES captured steps, and the capture ran for minutes."""
    calls, copies, cold = graph_plan(per_copy=2048, est_s=[10e-3, 12e-3], cold_l2=True, l2_bytes=L2)
    assert calls * 12e-3 <= MAX_REPLAY_S and copies <= calls and not cold
    assert graph_plan(2048, [10e-3], True, L2)[0] < MAX_GRAPH_COPIES


def test_a_call_longer_than_the_cap_is_still_captured_once():
    assert graph_plan(per_copy=2048, est_s=[0.2], cold_l2=True, l2_bytes=L2)[:2] == (1, 1)


def test_warm_l2_uses_one_copy():
    calls, copies, cold = graph_plan(per_copy=1 << 20, est_s=[2e-6], cold_l2=False, l2_bytes=L2)
    assert (copies, cold) == (1, False) and calls * 2e-6 >= 40e-6  # a replay of about 50 us


def test_a_long_call_gets_fewer_samples_never_under_three():
    """Ten samples of a dense prefill at 1M tokens, seconds a call, are minutes a provider: a call whose
    min_samples would pass long_samples_s gets what fits in it, at least 3."""
    cfg = TimingConfig()
    assert sample_count(cfg, 20e-6, 1000) == 1000  # rep_ms of short calls, capped
    assert sample_count(cfg, 0.27, 1000) == 10     # a 128K prefill: min_samples, as before
    assert sample_count(cfg, 4.4, 1000) == 10      # 512K: ten still fit in 60 s
    assert sample_count(cfg, 8.0, 1000) == 8
    assert sample_count(cfg, 16.0, 1000) == 4      # 1M tokens: what fits in 60 s
    assert sample_count(cfg, 100.0, 1000) == 3     # never under 3
    assert sample_count(replace(cfg, long_samples_s=1e9), 16.0, 1000) == cfg.min_samples
