"""`rbench history DIR`: every case's typical time across the runs below DIR, and the steps in it.

A *series* is one case (its key) on one device, its points the runs in time order (or commit order),
each point the median per-iteration time of that run. Run-to-run noise on a shared machine is large
(sequential A/A runs differed by up to 83 % on a CI machine), so one pair of runs cannot tell a step
from noise; a series can. Steps are found in two stages, as Apache Otava (Hunter) does with E-Divisive:

1. candidates: `ruptures.Pelt` (exact optimal segmentation, least squares cost) on the log of the
   medians, with the penalty PENALTY x sigma^2 x ln(n) (a BIC-type penalty), where sigma is a robust
   estimate of one point's noise: 1.4826 x MAD of successive differences / sqrt(2), which a step barely moves;
2. confirmation: each candidate must separate its neighbouring segments by Welch's t-test on the
   log medians with p < P_MAX, and by a ratio of segment medians of at least the threshold; the
   weakest failing candidate is dropped and the rest re-tested until all pass.

Why ruptures and not MongoDB's signal-processing-algorithms (E-Divisive means, used by Otava): its
2.1.6 release requires Python 3.11 exactly, numpy < 2, gevent and setuptools < 71, so it cannot be
installed beside torch 2.x's numpy 2; Apache Otava 0.8 pins numpy 2.2.0 and brings BigQuery, Postgres
and Slack clients. ruptures is maintained, needs only numpy and scipy, and ships wheels for CPython
3.9 to 3.13. It is optional: `pip install 'rbench[history]'`.
This module reads results only (no torch).
"""

from __future__ import annotations

import datetime as _dt
import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rbench.analysis import sources, stats
from rbench.analysis.compare import differences

PENALTY = 2.0
P_MAX = 0.001
MIN_RUNS = 3  # points on each side of a change point
ORDERS = ("time", "commit")
INSTALL_HINT = "rbench history needs the ruptures package: pip install 'rbench[history]' (or pip install ruptures)"


class HistoryError(ValueError):
    """Input that has no history (no runs, unknown order, no git repository): exit status 2."""


class HistoryUnavailable(HistoryError):
    """The change-point library is not installed."""


@dataclass
class Point:
    """One run's figure for one case."""

    path: Path
    started: str
    commit: str | None
    median_ms: float
    n: int
    identity: dict[str, Any]

    @property
    def when(self) -> str:
        text = self.started[:16].replace("T", " ")
        return f"{text} {self.commit[:10]}" if self.commit else text


@dataclass
class ChangePoint:
    """A step: from `index` on (the first run at the new level) the series' typical time is `ratio` x before."""

    index: int
    point: Point
    before_ms: float
    after_ms: float
    runs_before: int
    runs_after: int
    p_value: float
    threshold: float
    context: str = ""  # what else changed between the two runs around the step (software, driver)

    @property
    def ratio(self) -> float:
        return self.after_ms / self.before_ms

    @property
    def verdict(self) -> str:
        return "slower" if self.ratio > 1 else "faster"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "when": self.point.when, "started": self.point.started,
                "commit": self.point.commit, "file": str(self.point.path), "before_ms": self.before_ms,
                "after_ms": self.after_ms, "ratio": self.ratio, "change": self.ratio - 1, "p_value": self.p_value,
                "runs_before": self.runs_before, "runs_after": self.runs_after, "verdict": self.verdict,
                "context": self.context}


@dataclass
class Series:
    key: tuple
    label: str
    device: str
    threshold: float
    points: list[Point] = field(default_factory=list)
    changes: list[ChangePoint] = field(default_factory=list)
    note: str = ""

    @property
    def regression(self) -> ChangePoint | None:
        """The newest change point, when it is a slowdown of at least the threshold."""
        last = self.changes[-1] if self.changes else None
        return last if last and last.ratio >= 1 + self.threshold else None

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.label, "device": self.device, "threshold": self.threshold, "note": self.note,
                "points": [{"file": str(p.path), "started": p.started, "commit": p.commit, "median_ms": p.median_ms,
                            "n": p.n} for p in self.points],
                "changes": [c.to_dict() for c in self.changes],
                "regression": self.regression is not None}


@dataclass
class History:
    series: list[Series]
    notes: list[str]
    order: str

    def regressions(self) -> list[Series]:
        return [s for s in self.series if s.regression]

    def to_dict(self) -> dict[str, Any]:
        return {"order": self.order, "rule": rule_text(), "notes": self.notes,
                "regressed": bool(self.regressions()), "series": [s.to_dict() for s in self.series]}


def rule_text() -> str:
    return (f"change points: ruptures PELT (least squares on log medians, penalty {PENALTY:g}·σ²·ln n), each "
            f"confirmed by Welch's t-test p < {P_MAX:g} and a ratio of segment medians beyond the threshold, "
            f"at least {MIN_RUNS} runs on each side")


def _ruptures() -> Any:
    try:
        import ruptures
    except ImportError:
        raise HistoryUnavailable(INSTALL_HINT) from None
    return ruptures


def _t_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test (scipy comes with ruptures).

    Yuen's trimmed version was tried for robustness to one outlying run; on the simulated series of
    docs/tracking.md it found fewer true steps at no lower false-alarm rate (trimming costs degrees of
    freedom in segments of 3 to 5 runs), so the plain test is used.
    """
    from scipy import stats as scipy_stats

    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 0.0 if a[0] != b[0] else 1.0
    p = float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else 1.0


def noise_sigma(y: np.ndarray) -> float:
    """One point's noise, robustly, from successive differences (a step is one outlier among them)."""
    d = np.diff(y)
    mad = float(np.median(np.abs(d - np.median(d)))) if len(d) else 0.0
    return max(1.4826 * mad / math.sqrt(2), 1e-4)


def change_points(values: Sequence[float], threshold: float = stats.DEFAULT_THRESHOLD, min_runs: int = MIN_RUNS,
                  p_max: float = P_MAX) -> list[tuple[int, float]]:
    """Indices where a new level starts, with each one's p-value (see the module docstring)."""
    y = np.log(np.asarray(values, dtype=float))
    n = len(y)
    if n < 2 * min_runs:
        return []
    rpt = _ruptures()
    sigma = noise_sigma(y)
    bkps = rpt.Pelt(model="l2", min_size=min_runs, jump=1).fit(y.reshape(-1, 1)).predict(
        pen=PENALTY * sigma ** 2 * math.log(n))
    cps = [b for b in bkps if b < n]
    while cps:
        edges = [0, *cps, n]
        tests = []
        for i, cp in enumerate(cps):
            a, b = y[edges[i]:cp], y[cp:edges[i + 2]]
            ratio = math.exp(float(np.median(b)) - float(np.median(a)))
            p = _t_test(a, b)
            big = ratio >= 1 + threshold or ratio <= 1 / (1 + threshold)
            tests.append((p if big else 1.0 + p, cp, p))
        worst = max(tests)
        if worst[0] < p_max:
            return [(cp, p) for _, cp, p in tests]
        cps.remove(worst[1])
    return []


def _parse_time(text: str) -> float:
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return math.inf
    return (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)).timestamp()


def commit_order(repo: str | Path) -> dict[str, int]:
    """Each commit of HEAD's history and its position, oldest first (`git rev-list --topo-order`)."""
    try:
        proc = subprocess.run(["git", "-C", str(repo), "rev-list", "--topo-order", "--reverse", "HEAD"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise HistoryError(f"--order commit: cannot run git in {repo}: {e}") from None
    if proc.returncode != 0:
        raise HistoryError(f"--order commit: {repo} is not a git repository ({proc.stderr.strip() or 'git failed'}); "
                           "give the checkout with --repo")
    return {sha: i for i, sha in enumerate(proc.stdout.split())}


def _ordered(files: list[sources.ResultFile], order: str, repo: str | Path, notes: list[str]) -> list[sources.ResultFile]:
    if order not in ORDERS:
        raise HistoryError(f"--order: unknown {order!r}; allowed: {', '.join(ORDERS)}")
    if order == "time":
        return sorted(files, key=lambda f: (_parse_time(f.started), str(f.path)))
    position = commit_order(repo)
    known = [f for f in files if f.commit in position]
    for f in files:
        if f.commit not in position:
            notes.append(f"{f.path}: commit {f.commit or '(not recorded)'} is not in the history of {repo}'s HEAD; left out")
    return sorted(known, key=lambda f: (position[f.commit], _parse_time(f.started), str(f.path)))  # type: ignore[index]


def _device(identity: dict[str, Any]) -> tuple:
    """What makes two runs one machine for a series: the device (software may change along it)."""
    own = {k: v for k, v in identity.items() if k.startswith("device.")}
    return tuple(sorted((own or {k: identity.get(k) for k in ("cpu", "machine")}).items()))


def _context(before: Point, after: Point) -> str:
    diffs = differences(before.identity, after.identity)
    parts = [f"{k} {a} → {b}" for k, (a, b) in sorted(diffs.items())]
    if before.commit and after.commit and before.commit != after.commit:
        parts.append(f"git {before.commit[:10]} → {after.commit[:10]}")
    return "; ".join(parts)


def history(paths: Sequence[str | Path], order: str = "time", threshold: float | None = None,
            repo: str | Path = ".", min_runs: int = MIN_RUNS) -> History:
    """Load the runs below `paths`, build a series per (device, case) and find its change points."""
    _ruptures()  # fail first, before reading anything, when the library is missing
    if min_runs < 2:
        raise HistoryError(f"--min-runs: {min_runs} is too few; a change point needs at least 2 runs on each side")
    notes: list[str] = []
    try:
        files = [f for p in paths for f in sources.load(p)]
    except sources.CompareError as e:
        raise HistoryError(str(e)) from None
    files = _ordered(files, order, repo, notes)
    devices = {_device(f.identity) for f in files}
    by_key: dict[tuple, Series] = {}
    for f in files:
        dev = _device(f.identity)
        for key, item in f.items.items():
            if item.status != "ok" or not item.median_ms:
                continue
            name = ", ".join(str(v) for _, v in dev)
            limit = threshold or f.threshold or stats.DEFAULT_THRESHOLD
            s = by_key.setdefault((dev, key), Series(key, item.label if len(devices) == 1 else f"{item.label} [{name}]",
                                                     name, limit))
            s.points.append(Point(f.path, f.started, f.commit, float(item.median_ms), item.n, f.identity))
    if not by_key:
        raise HistoryError(f"no ok case in the runs below {', '.join(map(str, paths))}")
    for s in by_key.values():
        if len(s.points) < 2 * min_runs:
            s.note = f"{len(s.points)} runs: a change point needs {min_runs} on each side"
            continue
        found = change_points([p.median_ms for p in s.points], s.threshold, min_runs)
        edges = [0, *(i for i, _ in found), len(s.points)]
        for j, (i, p) in enumerate(found):
            before = [q.median_ms for q in s.points[edges[j]:i]]
            after = [q.median_ms for q in s.points[i:edges[j + 2]]]
            s.changes.append(ChangePoint(i, s.points[i], float(np.median(before)), float(np.median(after)),
                                         len(before), len(after), p, s.threshold, _context(s.points[i - 1], s.points[i])))
    return History(sorted(by_key.values(), key=lambda s: s.label), notes, order)
