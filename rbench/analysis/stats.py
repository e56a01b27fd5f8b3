"""The statistical rule behind `rbench compare`: a verdict on two sets of per-iteration times.

The effect is the ratio of medians, new / base, of the per-iteration times (lower is better, so a
ratio above 1 means slower). Its uncertainty is a percentile bootstrap confidence interval: both
sample sets are resampled with replacement, independently, `n_boot` times and the ratio of the
resampled medians is taken each time; the central `confidence` share of those ratios is the interval.
The generator is seeded with a fixed seed, so the same inputs always give the same verdict. A side
with more than MAX_SAMPLES samples is thinned to every k-th sample first; fewer than MIN_SAMPLES on
either side is `inconclusive`.

With `t` the threshold (the smallest change worth reporting, 5 % by default) the verdict is

    slower        ratio >= 1 + t      and  CI low  > 1 + t/2
    faster        ratio <= 1/(1 + t)  and  CI high < 1/(1 + t/2)
    unchanged     the whole CI lies inside [1/(1 + t), 1 + t]   (any change is below the threshold)
    inconclusive  otherwise: the data cannot tell a change of the threshold's size from none

"slower" thus needs a point estimate past the threshold *and* a confidence interval that excludes
even half the threshold: a 6 % slowdown measured with ±5 % noise is reported `inconclusive`, not
`slower`, because the same data would be quite likely under a 1 % change. Only per-iteration noise
within one run is in the interval; the threshold itself is what absorbs run-to-run variation
(clocks, temperature, other tenants), which is why it should not be set below what A/A runs show.

Peak memory and energy have rules of their own (`memory_verdict`, `energy_verdict`, below): a
peak is one deterministic figure per case, and energy is one figure per timed window with an error
bound of its own, so neither has samples to bootstrap.

This module needs numpy only (no scipy, no torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.05
CONFIDENCE = 0.95
N_BOOT = 2000
SEED = 20240607
MIN_SAMPLES = 5
# Above this many samples a side is thinned to every k-th sample (in time order) before resampling:
# the interval is already narrow there, and the bootstrap's cost grows with the sample count.
MAX_SAMPLES = 4000
VERDICTS = ("faster", "slower", "unchanged", "inconclusive")
# Rows of resampled indices held in memory at once: n_boot x n could be 2000 x 100k.
_CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class Estimate:
    """The ratio new/base of typical times, its confidence interval, and how it was computed."""

    ratio: float
    low: float
    high: float
    method: str  # "bootstrap" (raw samples) or "normal-approx" (summary statistics only)
    n_base: int
    n_new: int


@dataclass(frozen=True)
class Verdict:
    verdict: str  # one of VERDICTS
    estimate: Estimate | None
    threshold: float
    reason: str = ""


def _bootstrap_medians(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    out = np.empty(n_boot)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, rows):
        m = min(rows, n_boot - start)
        out[start:start + m] = np.median(x[rng.integers(0, n, size=(m, n))], axis=1)
    return out


def _thin(x: np.ndarray) -> np.ndarray:
    return x[::math.ceil(len(x) / MAX_SAMPLES)] if len(x) > MAX_SAMPLES else x


def bootstrap_ratio(base: Sequence[float], new: Sequence[float], confidence: float = CONFIDENCE,
                    n_boot: int = N_BOOT, seed: int = SEED) -> Estimate:
    """median(new) / median(base) with a percentile bootstrap CI (independent resampling of each side)."""
    a = np.asarray(base, dtype=float)
    b = np.asarray(new, dtype=float)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("bootstrap_ratio needs at least one sample on each side")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and a.min() > 0 and b.min() > 0):
        raise ValueError("times must be finite and positive")
    rng = np.random.default_rng(seed)
    ratios = _bootstrap_medians(_thin(b), n_boot, rng) / _bootstrap_medians(_thin(a), n_boot, rng)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return Estimate(float(np.median(b) / np.median(a)), float(low), float(high), "bootstrap", len(a), len(b))


def _median_se(stats: Mapping[str, Any]) -> float:
    """Standard error of a sample median from summary statistics: 1.2533 * sigma / sqrt(n).

    sigma is estimated robustly from the interquartile range (IQR / 1.349 for a normal distribution),
    falling back to the standard deviation when the IQR is zero or missing.
    """
    n = int(stats["rounds"])
    sigma = (stats.get("iqr") or 0) / 1.349 or (stats.get("stddev") or 0)
    return 1.2533 * sigma / math.sqrt(n)


def summary_ratio(base: Mapping[str, Any], new: Mapping[str, Any], confidence: float = CONFIDENCE) -> Estimate:
    """median(new) / median(base) from summary statistics only (`median`, `iqr`, `stddev`, `rounds`).

    The interval is a normal approximation on the log ratio (delta method) with each median's
    standard error from `_median_se`. It is used for pytest-benchmark files saved without raw data.
    """
    z = _normal_quantile(1 - (1 - confidence) / 2)
    ma, mb = float(base["median"]), float(new["median"])
    if not (ma > 0 and mb > 0):
        raise ValueError("medians must be positive")
    se_log = math.hypot(_median_se(base) / ma, _median_se(new) / mb)
    ratio = mb / ma
    return Estimate(ratio, ratio * math.exp(-z * se_log), ratio * math.exp(z * se_log), "normal-approx",
                    int(base["rounds"]), int(new["rounds"]))


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF by bisection on math.erf (exact enough for a confidence level)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def classify(estimate: Estimate, threshold: float = DEFAULT_THRESHOLD) -> str:
    """The verdict for an estimate under `threshold` (a fraction, 0.05 = 5 %); see the module docstring."""
    up, half = 1 + threshold, 1 + threshold / 2
    if estimate.ratio >= up and estimate.low > half:
        return "slower"
    if estimate.ratio <= 1 / up and estimate.high < 1 / half:
        return "faster"
    if estimate.low >= 1 / up and estimate.high <= up:
        return "unchanged"
    return "inconclusive"


def judge(base: Sequence[float] | None, new: Sequence[float] | None, threshold: float = DEFAULT_THRESHOLD,
          base_stats: Mapping[str, Any] | None = None, new_stats: Mapping[str, Any] | None = None) -> Verdict:
    """The verdict on raw per-iteration times, or on summary statistics when either side has no raw samples.

    Fewer than MIN_SAMPLES samples (or rounds) on either side is `inconclusive`, with the reason.
    """
    if base is not None and new is not None and len(base) and len(new):
        if min(len(base), len(new)) < MIN_SAMPLES:
            return Verdict("inconclusive", None, threshold,
                           f"too few samples (base {len(base)}, new {len(new)}; need {MIN_SAMPLES} each)")
        est = bootstrap_ratio(base, new)
    elif base_stats and new_stats and base_stats.get("median") and new_stats.get("median"):
        if min(int(base_stats.get("rounds", 0)), int(new_stats.get("rounds", 0))) < MIN_SAMPLES:
            return Verdict("inconclusive", None, threshold,
                           f"too few rounds (base {base_stats.get('rounds')}, new {new_stats.get('rounds')}; "
                           f"need {MIN_SAMPLES} each)")
        est = summary_ratio(base_stats, new_stats)
    else:
        return Verdict("inconclusive", None, threshold, "no per-iteration samples recorded")
    return Verdict(classify(est, threshold), est, threshold)


def quantile_interval(samples: Sequence[float], q: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free confidence interval for the q-quantile: two order statistics of the samples.

    With B ~ Binomial(n, q) the number of samples below the true quantile, the interval from the l-th to
    the u-th smallest sample (1-based) covers it with probability P(l <= B < u); l is the largest and u
    the smallest rank that leave at most (1 - confidence)/2 on each side. Where n is too small for that
    (the p99 of 40 samples, say), the interval ends at the smallest or largest sample.
    """
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0 or not 0 < q < 1:
        raise ValueError("quantile_interval needs samples and 0 < q < 1")
    tail = (1 - confidence) / 2
    log_q, log_p = math.log(q), math.log1p(-q)
    pmf = np.exp([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_q + (n - k) * log_p
                  for k in range(n + 1)])
    cdf = np.cumsum(pmf)  # cdf[k] = P(B <= k)
    low_rank = max([r for r in range(1, n + 1) if cdf[r - 1] <= tail], default=1)
    high_rank = min([r for r in range(1, n + 1) if 1 - cdf[r - 1] <= tail], default=n)
    return float(x[low_rank - 1]), float(x[high_rank - 1])


def rule_text(threshold: float | None = None) -> str:
    """The rule in one sentence, for reports and pull-request comments."""
    t = "t" if threshold is None else f"t = {threshold * 100:g} %"
    return (f"ratio r = median(new)/median(base) of per-iteration times, {CONFIDENCE:.0%} bootstrap CI "
            f"({N_BOOT} resamples, fixed seed); threshold {t}: slower if r ≥ 1+t and CI low > 1+t/2; "
            f"faster if r ≤ 1/(1+t) and CI high < 1/(1+t/2); unchanged if the CI lies within "
            f"[1/(1+t), 1+t]; otherwise inconclusive")


# Peak memory and energy per image.

MEMORY_THRESHOLD = 0.05
ENERGY_THRESHOLD = 0.10
# A figure integrated from sampled power has no error bound recorded with it (NVML and amdsmi power
# readings are averages over up to a second). It is trusted no further than the disagreement between
# counter and integrated samples that rbench.hw.sampling accepts (its DISAGREEMENT, 15 %).
SAMPLED_ENERGY_BOUND = 0.15
MEMORY_VERDICTS = ("more_memory", "less_memory", "same_memory")
ENERGY_VERDICTS = ("more_energy", "less_energy", "same_energy", "energy_uncertain")


@dataclass(frozen=True)
class ResourceVerdict:
    """A verdict on peak memory or J/image: both figures, their ratio new/base and its bounds."""

    verdict: str  # one of MEMORY_VERDICTS or ENERGY_VERDICTS
    base: float
    new: float
    ratio: float
    low: float
    high: float
    threshold: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "base": self.base, "new": self.new, "ratio": self.ratio,
                "low": self.low, "high": self.high, "threshold": self.threshold, "reason": self.reason}


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def memory_verdict(base: Any, new: Any, threshold: float = MEMORY_THRESHOLD) -> ResourceVerdict | None:
    """Peak memory new vs base; None unless both sides recorded one.

    The allocator's peak for a given model, batch and backend is the same from run to run (it is a
    count of bytes, not a time), so no noise model is needed: a rise above `threshold` is
    `more_memory`, a fall below 1/(1 + threshold) is `less_memory`.
    """
    if not (_positive(base) and _positive(new)):
        return None
    r = float(new) / float(base)
    verdict = "more_memory" if r > 1 + threshold else "less_memory" if r < 1 / (1 + threshold) else "same_memory"
    return ResourceVerdict(verdict, float(base), float(new), r, r, r, threshold)


def energy_bound(power: Mapping[str, Any]) -> float:
    """The relative error of one record's energy figure.

    The counter's own bound (`power.counter_error_bound`: two counter updates over the window) where
    the counter was read, else SAMPLED_ENERGY_BOUND; never less than the disagreement between counter
    and integrated samples when the record says they disagree.
    """
    bound = power.get("counter_error_bound")
    b = float(bound) if power.get("method") == "counter" and _positive(bound) else SAMPLED_ENERGY_BOUND
    check = power.get("cross_check") or {}
    difference = check.get("relative_difference")
    if _positive(difference) and _positive(check.get("tolerance")) and difference > check["tolerance"]:
        b = max(b, float(difference))
    return min(b, 0.99)


def energy_verdict(base: Mapping[str, Any] | None, new: Mapping[str, Any] | None,
                   threshold: float = ENERGY_THRESHOLD, uncertain: str = "") -> ResourceVerdict | None:
    """J/image new vs base; None unless both records measured energy.

    One timed window gives one energy figure, so there is nothing to resample. Each figure carries a
    relative error bound b (`energy_bound`); the ratio r = new/base is therefore known to lie in
    [r (1 - b_new) / (1 + b_base), r (1 + b_new) / (1 - b_base)]. That interval takes the place of the
    bootstrap interval in the timing rule, with the same thresholds: `more_energy` if r >= 1 + t and
    the interval's low end > 1 + t/2; `less_energy` the mirror image; `same_energy` if the interval
    lies within [1/(1 + t), 1 + t]; otherwise `energy_uncertain`. `uncertain` (a window flagged too
    short for its energy figure) makes the verdict `energy_uncertain` whatever the figures say.
    """
    if not base or not new:
        return None
    jb, jn = base.get("j_per_image"), new.get("j_per_image")
    if not (_positive(jb) and _positive(jn)):
        return None
    bb, bn = energy_bound(base), energy_bound(new)
    r = float(jn) / float(jb)
    low, high = r * (1 - bn) / (1 + bb), r * (1 + bn) / (1 - bb)
    up, half = 1 + threshold, 1 + threshold / 2
    if uncertain:
        verdict = "energy_uncertain"
    elif r >= up and low > half:
        verdict = "more_energy"
    elif r <= 1 / up and high < 1 / half:
        verdict = "less_energy"
    elif low >= 1 / up and high <= up:
        verdict = "same_energy"
    else:
        verdict = "energy_uncertain"
    reason = uncertain or f"error bounds ±{bb:.1%} (base), ±{bn:.1%} (new)"
    return ResourceVerdict(verdict, float(jb), float(jn), r, low, high, threshold, reason)


def resource_rule_text(memory_threshold: float = MEMORY_THRESHOLD, energy_threshold: float = ENERGY_THRESHOLD) -> str:
    """The memory and energy rules in one sentence."""
    m, e = memory_threshold * 100, energy_threshold * 100
    return (f"peak memory: more_memory if new/base > 1 + {m:g} %; J/image (both sides measured): "
            f"ratio bounded by each figure's error bound, more_energy if r ≥ 1 + {e:g} % and the bound's low "
            f"end > 1 + {e / 2:g} %")
