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


FLAGSHIP = Policy(warmup_iters=10, warmup_s=1.0, min_iters=20, min_s=2.0, max_s=30.0)  # suites/resnet50_fp16.yaml


def run_with_times(times_s, policy):
    """measure.run over a fake step whose i-th call takes times_s[i] seconds (the last one repeats)."""
    dev = FakeClockDevice()

    def step(i):
        dev.now += times_s[min(i, len(times_s) - 1)]

    return measure.run(step, dev, policy, clock=dev.clock)


def test_compilation_in_the_first_iteration_never_counts_toward_the_estimate():
    """compile + training compiles inside warm-up: a 60 s first iteration, then 0.1 s ones (issue 18, item 1).

    Planning from warm-up iterations that include the compilation would make the case over_budget.
    """
    timing = run_with_times([60.0, 0.1], FLAGSHIP)
    assert timing.iters == 20  # planned from the 0.1 s iterations: min_s=2 s / 0.1 s
    assert timing.warmup_iters == 10  # max_s does not cut warm-up short: compilation is not the loop's cost
    assert timing.samples_ms == pytest.approx([100.0] * 20)


@pytest.mark.parametrize("times_s, settled_at", [
    ([40.0, 20.0, 0.1], 4),  # forward compiled, then backward recompiled: two slow iterations
    ([5.0, 5.0, 1.0], 4),  # CUDA graphs: eager-ish, recorded, then replayed (warmup_iters must pass the two)
    ([0.2, 0.1], 3),  # eager: a first iteration twice as slow (lazy initialisation) never enters the estimate
])
def test_warm_up_goes_on_until_the_iteration_time_settles(times_s, settled_at):
    timing = run_with_times(times_s, Policy(warmup_iters=3, warmup_s=0.0, min_iters=5, min_s=0.0, max_s=30.0))
    assert timing.warmup_iters == settled_at
    assert timing.samples_ms == pytest.approx([times_s[-1] * 1e3] * 5)


def test_a_case_that_cannot_fit_is_over_budget_after_a_short_warm_up():
    with pytest.raises(measure.OverBudget, match="min_iters=20 x 10 s/iter"):
        run_with_times([15.0, 10.0], FLAGSHIP)
    assert measure.warmed_up([15.0, 10.0, 10.0], 35.0, FLAGSHIP)  # settled and hopeless: no 10 warm-ups
    assert not measure.warmed_up([60.0, 0.1], 60.1, FLAGSHIP)  # past max_s, but the 60 s were compilation


def test_warm_up_that_never_settles_is_bounded():
    dev = FakeClockDevice()

    def step(i):
        dev.now += 0.1 if i % 2 else 0.2  # alternating: consecutive iterations never agree within 1.5x

    timing = measure.run(step, dev, Policy(warmup_iters=1, warmup_s=0.0, min_iters=3, min_s=0.0, max_s=1.0),
                         clock=dev.clock)
    assert timing.warmup_s <= 2 * 1.0 + 0.5  # stopped at twice max_s of steady time
    assert timing.iters >= 3


def test_host_time_per_iteration_is_what_the_host_spends_issuing_work():
    """A step that spends 0.4 ms of host time launching 5 ms of device work: the record shows both apart."""
    from test_devices import QueueDevice

    dev = QueueDevice()

    def step(i):
        dev.host.advance(0.030 if i == 0 else 0.0004)  # the first call also compiles on the host
        dev.stream.launch(5.0)

    timing = measure.run(step, dev, Policy(warmup_iters=3, warmup_s=0.0, min_iters=4, min_s=0.0, max_s=5.0),
                         clock=dev.host)
    assert timing.samples_ms == pytest.approx([5.0] * timing.iters)  # the device's time, not the host's
    assert timing.host_ms_per_iter == pytest.approx(0.4)  # settled iterations only: the compile is left out
