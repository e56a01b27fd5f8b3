"""The timing loop and its statistics.

Warm-up (not counted) runs until compilation, autotuning and algorithm search are done and the
iteration time has settled; the timed window, planned from the settled iterations only, then brackets
every iteration with device events and synchronises once at the end. Percentiles follow MLPerf's
nearest-rank rule.

The host's own time per iteration (`host_ms_per_iter`) comes from the settled warm-up iterations,
which are synchronised one by one: the time `step` takes to return, before the synchronisation, is
what the CPU spends issuing the iteration (Python, dispatch, kernel launches) while the device works.
Next to the device time it shows launch overhead: at batch 1 a host slower than its GPU is the
bottleneck. On a CPU the step is the work itself, so there it is about the iteration time.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rbench.spec import Policy


class OverBudget(Exception):
    """The policy's `min_iters` cannot fit in `max_s` at the measured iteration time."""


@dataclass
class Timing:
    samples_ms: list[float]
    window_s: float  # from the first iteration's start event to the last one's end event
    warmup_iters: int
    warmup_s: float
    host_ms_per_iter: float | None = None  # median host time to issue one settled warm-up iteration

    @property
    def iters(self) -> int:
        return len(self.samples_ms)


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least p % of the samples at or below it."""
    if not sorted_samples:
        raise ValueError("percentile of no samples")
    if not 0 < p <= 100:
        raise ValueError(f"percentile p must be in (0, 100], got {p}")
    rank = math.ceil(p / 100 * len(sorted_samples))
    return sorted_samples[max(rank, 1) - 1]


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p95/p99 by nearest rank, min, max, mean and sample standard deviation (0 for one sample)."""
    s = sorted(samples_ms)
    return {
        "p50": percentile(s, 50), "p90": percentile(s, 90), "p95": percentile(s, 95), "p99": percentile(s, 99),
        "min": s[0], "max": s[-1], "mean": statistics.fmean(s),
        "stdev": statistics.stdev(s) if len(s) > 1 else 0.0,
    }


def plan_iterations(iter_s: float, policy: Policy) -> int:
    """How many timed iterations satisfy min_iters and min_s within max_s; OverBudget if none can."""
    if policy.min_iters * iter_s > policy.max_s:
        raise OverBudget(f"min_iters={policy.min_iters} x {iter_s:.3g} s/iter = {policy.min_iters * iter_s:.3g} s "
                         f"> max_s={policy.max_s:g} s")
    # (1 - 1e-9): a clock's rounding (0.1 s / 4.9999999 ms) must not add an iteration.
    wanted = max(policy.min_iters, math.ceil(policy.min_s / max(iter_s, 1e-9) * (1 - 1e-9)))
    return min(wanted, max(policy.min_iters, int(policy.max_s / max(iter_s, 1e-9))))


# Warm-up has settled when its last two iterations agree within this ratio: a first iteration that
# compiled or autotuned cannot agree with the next, and two that agree carry no compilation.
SETTLED_RATIO = 1.5
# A warm-up iteration slower than this many times the median of the latest ones is compilation,
# autotuning or a recompilation: it is left out of the estimate and of the warm-up's budget.
SLOW_FACTOR = 3.0
# The estimate is the median of at most this many of the latest settled warm-up iterations.
ESTIMATE_ITERS = 5


def _steady(warm_times: Sequence[float]) -> list[float]:
    """The warm-up iterations that describe the timed loop: all but the first, less the slow outliers."""
    later = list(warm_times[1:])
    if not later:
        return []
    typical = statistics.median(later[-3:])
    return [t for t in later if t <= SLOW_FACTOR * typical]


def _settled(warm_times: Sequence[float]) -> bool:
    """The last two iterations agree: no compilation or autotuning is left in them."""
    if len(warm_times) < 2:
        return False
    a, b = warm_times[-2:]
    return max(a, b) <= SETTLED_RATIO * max(min(a, b), 1e-12)


def warmed_up(warm_times: Sequence[float], elapsed_s: float, policy: Policy) -> bool:
    """Whether warm-up may stop: the policy's minimum count and time are reached and the time has settled.

    Iterations that were compilation (much slower than the latest ones) count toward neither the
    estimate nor the budget. Once settled, warm-up also stops when `min_iters` at the estimate cannot
    fit in `max_s` (the case is `over_budget`) or its steady iterations alone pass `max_s`; one that
    never settles stops at twice `max_s` of steady time.
    """
    steady = _steady(warm_times)
    steady_s = sum(steady)
    if steady_s > 2 * policy.max_s and len(steady) >= 2:
        return True
    if not _settled(warm_times):
        return False
    reached = len(warm_times) >= max(1, policy.warmup_iters) and elapsed_s >= policy.warmup_s
    hopeless = policy.min_iters * iteration_estimate(warm_times) > policy.max_s  # over_budget already
    return reached or hopeless or steady_s > policy.max_s


def host_ms_estimate(host_times: Sequence[float]) -> float:
    """Milliseconds the host takes to issue one iteration: the median of the latest (settled) warm-up ones."""
    return 1e3 * statistics.median(host_times[-ESTIMATE_ITERS:])


def iteration_estimate(warm_times: Sequence[float]) -> float:
    """Seconds per iteration for planning: the median of the latest steady warm-up iterations."""
    steady = _steady(warm_times) or list(warm_times)
    return statistics.median(steady[-ESTIMATE_ITERS:])


def run(step: Callable[[int], Any], device: Any, policy: Policy, window: Any = None,
        clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Warm up `step(i)` (i selects the input buffer), then time a planned number of iterations.

    `device` provides `synchronize()` and `event()`. Warm-up is synchronised per iteration so that
    its settled iterations give an honest per-iteration estimate for planning the timed window
    (`warmed_up`: compilation never counts toward it). `window`, if given, has `start()` and `stop()`
    called around exactly the timed window (the telemetry monitor), with the device idle at both ends.
    """
    start = clock()
    warm_times: list[float] = []
    host_times: list[float] = []  # until `step` returned, before the synchronisation
    while not warm_times or not warmed_up(warm_times, clock() - start, policy):
        t = clock()
        step(len(warm_times))
        issued = clock()
        device.synchronize()
        warm_times.append(clock() - t)
        host_times.append(issued - t)
    iters, warmup_s = len(warm_times), clock() - start
    n = plan_iterations(iteration_estimate(warm_times), policy)

    starts = [device.event() for _ in range(n)]
    ends = [device.event() for _ in range(n)]
    if window is not None:
        window.start()
    try:
        for i in range(n):
            starts[i].record()
            step(iters + i)
            ends[i].record()
        device.synchronize()
    finally:
        if window is not None:
            window.stop()
    samples = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    window_s = starts[0].elapsed_time(ends[-1]) / 1e3
    return Timing(samples_ms=samples, window_s=window_s, warmup_iters=iters, warmup_s=warmup_s,
                  host_ms_per_iter=host_ms_estimate(host_times))
