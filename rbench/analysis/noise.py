"""How often does `rbench compare`'s rule cry wolf on this machine, and how big a slowdown does it catch?

    python -m rbench.analysis.noise RUN_OR_DIR... [--trials 1000] [--threshold 5%]

For every case measured `ok` in the given run files it reports

- resampled A/A and A/B: both sides are drawn with replacement from one real sample set, and the new
  side is multiplied by a known factor (1.00 = A/A, 1.05 = a 5 % slowdown, ...). This isolates the
  per-iteration noise of one run: the rate of `slower` at factor 1.00 is the false-alarm rate the
  rule's confidence interval promises to keep small, and the rates at larger factors are its power.
- real A/A: where a case was measured in several runs, every ordered pair of those runs is compared.
  This includes run-to-run variation (other processes, clocks, temperature) that no single run's
  samples can show, which is what the threshold is for.

No torch; numpy only.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence

import numpy as np

from rbench.analysis import compare, sources, stats

FACTORS = (1.0, 1.02, 1.04, 1.06, 1.08, 1.10, 1.20)


def resampled_rates(samples: Sequence[float], factors: Sequence[float] = FACTORS, trials: int = 1000,
                    threshold: float = stats.DEFAULT_THRESHOLD, seed: int = 1) -> dict[float, dict[str, float]]:
    """{factor: {verdict: share of trials}} with both sides resampled from `samples`, new x factor."""
    x = np.asarray(samples, dtype=float)
    rng = np.random.default_rng(seed)
    out = {}
    for f in factors:
        counts = dict.fromkeys(stats.VERDICTS, 0)
        for _ in range(trials):
            a = rng.choice(x, size=len(x), replace=True)
            b = rng.choice(x, size=len(x), replace=True) * f
            counts[stats.judge(a, b, threshold).verdict] += 1
        out[f] = {k: v / trials for k, v in counts.items()}
    return out


def pairwise_rates(sample_sets: Sequence[Sequence[float]], threshold: float = stats.DEFAULT_THRESHOLD) -> dict[str, float]:
    """{verdict: share} over every ordered pair of distinct real runs of one case."""
    counts = dict.fromkeys(stats.VERDICTS, 0)
    pairs = list(itertools.permutations(range(len(sample_sets)), 2))
    for i, j in pairs:
        counts[stats.judge(sample_sets[i], sample_sets[j], threshold).verdict] += 1
    return {k: v / len(pairs) for k, v in counts.items()} if pairs else counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rbench.analysis.noise", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run files or directories")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--threshold", default="5%")
    args = parser.parse_args(argv)
    threshold = compare.parse_threshold(args.threshold)
    by_case: dict[str, list[list[float]]] = {}
    for path in args.runs:
        for src in sources.load(path):
            for item in src.items.values():
                if item.status == "ok" and item.samples_ms:
                    by_case.setdefault(item.label, []).append(item.samples_ms)
    if not by_case:
        print("no ok case with samples", file=sys.stderr)
        return 2
    print(f"threshold {threshold:.1%}; rule: {stats.rule_text(threshold)}\n")
    total_pairs = total_slower = 0
    for label, sets in sorted(by_case.items()):
        n = [len(s) for s in sets]
        cv = [float(np.std(s) / np.median(s)) for s in sets]
        medians = [float(np.median(s)) for s in sets]
        print(f"{label}: {len(sets)} run(s), samples per run {min(n)}-{max(n)}, "
              f"within-run stdev/median {min(cv):.1%}-{max(cv):.1%}, run medians spread "
              f"{(max(medians) / min(medians) - 1):.1%}")
        rates = resampled_rates(sets[0], trials=args.trials, threshold=threshold)
        print("  resampled (first run's samples), share of trials by verdict:")
        for f, r in rates.items():
            print(f"    x{f:.2f}: " + "  ".join(f"{k} {v:6.1%}" for k, v in r.items()))
        if len(sets) > 1:
            r = pairwise_rates(sets, threshold)
            pairs = len(sets) * (len(sets) - 1)
            total_pairs += pairs
            total_slower += round(r["slower"] * pairs)
            print(f"  real A/A, {pairs} ordered pairs of runs: " + "  ".join(f"{k} {v:6.1%}" for k, v in r.items()))
    if total_pairs:
        print(f"\nreal A/A over all cases: {total_slower} slower in {total_pairs} pairs "
              f"({total_slower / total_pairs:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
