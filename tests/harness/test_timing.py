"""CPU checks of harness/timing.py's rules (the GPU protocol itself: test_timing_gpu.py)."""
import pytest

from harness.timing import MAX_HOLD_S, longer_hold

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
