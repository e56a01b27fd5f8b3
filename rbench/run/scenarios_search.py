"""The server scenario's search for the highest target QPS that LoadGen calls VALID: grow or shrink, then bisect.

Each probe is one LoadGen run at a target rate; the caller's `probe(rate)` runs it and says whether
LoadGen called it VALID. The search never judges a run itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

FLOOR_FACTOR = 32.0  # shrinking stops below start / this: far below the warm-up's estimate nothing will pass


@dataclass
class Search:
    """The bracket found: the highest rate that passed and the lowest rate above it that failed."""

    passing: float | None = None
    failing: float | None = None
    tolerance: float = 0.05
    probes: list[tuple[float, bool]] = field(default_factory=list)  # (rate, passed) in the order run
    stopped: str = ""  # why the search ended before converging, if it did

    @property
    def converged(self) -> bool:
        return self.passing is not None and self.failing is not None and self.failing <= self.passing * (1 + self.tolerance)

    def to_dict(self) -> dict[str, object]:
        return {"passing_qps": self.passing, "failing_qps": self.failing, "tolerance": self.tolerance,
                "converged": self.converged, "probes": len(self.probes), "stopped": self.stopped}


def highest_passing(probe: Callable[[float], bool], start: float, tolerance: float, max_probes: int,
                    affordable: Callable[[float], bool] = lambda rate: True) -> Search:
    """Double from `start` while probes pass (halve while they fail) until one of each, then bisect.

    Bisection is geometric (the next rate is sqrt(passing * failing)) and stops when failing <= passing
    * (1 + tolerance), after `max_probes` runs, when shrinking falls below start / FLOOR_FACTOR, or when
    `affordable(rate)` says the next probe would not finish in the time left.
    Every probe lies strictly between the rates known to pass and to fail, so the bracket only narrows.
    """
    if not (start > 0 and tolerance > 0 and max_probes >= 1):
        raise ValueError(f"search needs start > 0, tolerance > 0 and max_probes >= 1; got {start}, {tolerance}, {max_probes}")
    s = Search(tolerance=tolerance)
    rate = start
    while len(s.probes) < max_probes:
        rate = float(f"{rate:.4g}")  # probed at 4 significant digits: the rates people read in the record
        if not affordable(rate):
            s.stopped = f"no time left for a probe at {rate:g} QPS within the case's timeout_s"
            break
        passed = bool(probe(rate))
        s.probes.append((rate, passed))
        if passed:
            s.passing = rate
        else:
            s.failing = rate
        if s.converged:
            break
        if s.passing is not None and s.failing is not None:
            rate = math.sqrt(s.passing * s.failing)
        elif s.passing is not None:
            rate = s.passing * 2
        else:
            rate = s.failing / 2
            if rate < start / FLOOR_FACTOR:
                s.stopped = f"nothing passed down to {s.failing:g} QPS (start / {FLOOR_FACTOR:g})"
                break
    if not s.converged and not s.stopped:
        s.stopped = f"max_probes={max_probes} reached"
    return s
