"""harness/progress.py: the count and the time-left estimate of long runs."""
import pytest

from harness.progress import Progress, duration
from synthetic import plugin_run


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_time_left_is_the_mean_time_per_unit_times_the_units_left():
    clock = Clock()
    p = Progress(10, "cases", clock=clock)
    clock.now += 30
    assert p.step() == "1/10 cases, 30s elapsed, about 4m30s left"
    clock.now += 90
    assert p.step(3) == "4/10 cases, 2m00s elapsed, about 3m00s left"
    clock.now += 60
    assert p.step(6) == "10/10 cases, 3m00s elapsed"  # done: no estimate


def test_an_unknown_or_empty_total_never_divides_by_zero():
    p = Progress(0, "items", clock=Clock())
    assert p.line() == "0/0 items, 0s elapsed"
    assert p.step() == "1/0 items, 0s elapsed"
    with pytest.raises(ValueError, match="total"):
        Progress(-1)


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3725, "1h02m"), (-3, "0s")])
def test_durations_read_at_a_glance(seconds, text):
    assert duration(seconds) == text


class _Item:
    def __init__(self, spec, perf=True, skipped=False):
        self.callspec = type("CallSpec", (), {"params": {"spec": spec, "provider": "p"}})()
        self.keywords = {"perf": True} if perf else {}
        self._skipped = skipped

    def get_closest_marker(self, name):
        return name == "skip" and self._skipped or None


def test_the_runner_counts_cases_not_providers():
    from harness.pytest_plugin import perf_case_count

    a, b, c = object(), object(), object()
    items = [_Item(a), _Item(a), _Item(b), _Item(b), _Item(c, skipped=True), _Item(object(), perf=False)]
    assert perf_case_count(items) == 2  # a and b, each with two providers; c skipped; the last is no perf test


def test_the_progress_line_reaches_the_terminal_through_output_capture(tmp_path):
    out = plugin_run(tmp_path,
                     "from harness.progress import Progress\n"
                     "from harness.pytest_plugin import PerfSession\n"
                     "def test_one_case(request):\n"
                     "    request.config._perf_progress = Progress(4, 'cases')\n"
                     "    PerfSession(request.config)._progress()\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(line.startswith("progress: 1/4 cases,") and "left" in line for line in out.stdout.splitlines()), out.stdout
