"""The timing loop and its statistics.

Warm-up (not counted) runs until compilation, autotuning and algorithm search are done; the timed
window then brackets every iteration with device events and synchronises once at the end.
Percentiles follow MLPerf's nearest-rank rule.
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
    wanted = max(policy.min_iters, math.ceil(policy.min_s / max(iter_s, 1e-9)))
    return min(wanted, max(policy.min_iters, int(policy.max_s / max(iter_s, 1e-9))))


def run(step: Callable[[int], Any], device: Any, policy: Policy, window: Any = None,
        clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Warm up `step(i)` (i selects the input buffer), then time a planned number of iterations.

    `device` provides `synchronize()` and `event()`. Warm-up is synchronised per iteration so that
    its last iterations give an honest per-iteration estimate for planning the timed window.
    `window`, if given, has `start()` and `stop()` called around exactly the timed window (the
    telemetry monitor), with the device idle at both ends.
    """
    start = clock()
    warm_times: list[float] = []
    while len(warm_times) < max(1, policy.warmup_iters) or clock() - start < policy.warmup_s:
        t = clock()
        step(len(warm_times))
        device.synchronize()
        warm_times.append(clock() - t)
        if len(warm_times) >= 2 and clock() - start > policy.max_s:
            break  # warm-up alone overruns the case budget: plan from what it has seen
    iters, warmup_s = len(warm_times), clock() - start
    # The median of the last few warm-up iterations: past compilation, robust to one hiccup.
    n = plan_iterations(statistics.median(warm_times[-5:]), policy)

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
    return Timing(samples_ms=samples, window_s=window_s, warmup_iters=iters, warmup_s=warmup_s)
