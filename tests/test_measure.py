"""Timing statistics and the timing loop's planning, against hand-computed values."""

import pytest

from rbench.run import measure
from rbench.spec import Policy


def test_nearest_rank_percentiles_by_hand():
    samples = [float(x) for x in range(1, 11)]  # 1..10
    # rank = ceil(p/100 * 10): p50 -> 5th, p90 -> 9th, p95 -> 10th, p99 -> 10th
    assert measure.percentile(samples, 50) == 5.0
    assert measure.percentile(samples, 90) == 9.0
    assert measure.percentile(samples, 95) == 10.0
    assert measure.percentile(samples, 99) == 10.0
    assert measure.percentile(samples, 10) == 1.0
    assert measure.percentile([7.0], 99) == 7.0


def test_summary_of_unsorted_samples():
    s = measure.summarize([4.0, 1.0, 3.0, 2.0])
    assert (s["p50"], s["p90"], s["p99"], s["min"], s["max"]) == (2.0, 4.0, 4.0, 1.0, 4.0)
    assert s["mean"] == 2.5
    assert s["stdev"] == pytest.approx(1.2909944487358056)  # sample stdev of 1..4
    assert measure.summarize([3.0])["stdev"] == 0.0


def test_percentile_of_200_samples_is_a_sample_not_an_interpolation():
    samples = [i * 0.5 for i in range(200)]
    assert measure.percentile(samples, 99) == samples[197]  # ceil(0.99 * 200) = 198th
    assert measure.percentile(samples, 50) == samples[99]


def test_bad_percentile_arguments():
    with pytest.raises(ValueError):
        measure.percentile([], 50)
    with pytest.raises(ValueError):
        measure.percentile([1.0], 0)


def test_plan_iterations():
    p = Policy(min_iters=10, min_s=2.0, max_s=30.0)
    assert measure.plan_iterations(0.001, p) == 2000  # min_s dominates
    assert measure.plan_iterations(1.0, p) == 10  # min_iters dominates
    with pytest.raises(measure.OverBudget, match="min_iters=10 x 4 s/iter = 40 s > max_s=30 s"):
        measure.plan_iterations(4.0, p)
    assert measure.plan_iterations(0.001, Policy(min_iters=5, min_s=100.0, max_s=1.0)) == 1000  # capped by max_s


class FakeClockDevice:
    """Each step costs 10 ms of a fake clock; events read that clock."""

    def __init__(self):
        self.now = 0.0
        self.syncs = 0

    def clock(self):
        return self.now

    def synchronize(self):
        self.syncs += 1

    def event(self):
        device = self

        class Event:
            def record(self):
                self.t = device.now

            def elapsed_time(self, end):
                return (end.t - self.t) * 1e3

        return Event()


def test_run_excludes_warmup_and_times_each_iteration():
    dev = FakeClockDevice()
    seen = []

    def step(i):
        seen.append(i)
        dev.now += 0.010 if i >= 3 else 1.0  # the first three iterations are slow (compilation)

    timing = measure.run(step, dev, Policy(warmup_iters=3, warmup_s=0.0, min_iters=5, min_s=0.1, max_s=5.0),
                         clock=dev.clock)
    assert timing.warmup_iters == 3
    # planned from the warm-up's median of its last iterations (1 s) -> min_iters
    assert timing.iters == 5
    assert timing.samples_ms == pytest.approx([10.0] * 5)
    assert timing.window_s == pytest.approx(0.05)
    assert seen == list(range(8))  # warm-up indices continue into the timed window (buffer rotation)
