"""The suite fields of MLPerf scenarios and max-batch searches: names, settings and their defaults, checks, cases.

`rbench.spec` owns the suite; the three fields here (`scenarios`, `scenario_settings`, `max_batch`)
are kept apart so that their schema lives in one place that imports nothing heavy: a suite is checked
when it is loaded, and the worker (`rbench.run.scenarios`) reads the same `Settings`. The defaults are
MLPerf Inference's for ResNet-50 (LoadGen 6.0's mlperf.conf): a shorter run is allowed, and its record
says `mlperf_length: false`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

SCENARIOS = ("offline", "single_stream", "multi_stream", "server")
MAX_BATCH = "max_batch"  # the `scenario` of max-batch probes and of their answer
FIELDS = ("scenarios", "scenario_settings", "max_batch")  # the suite fields this module checks
MLPERF_MIN_DURATION_S = 600.0
# mlperf.conf's minimum query counts (LoadGen's default, 100, where it sets none; Offline counts samples).
MLPERF_MIN_QUERIES = {"offline": 24576, "single_stream": 100, "multi_stream": 662, "server": 100}


@dataclass(frozen=True)
class Settings:
    """One scenario's settings. Each scenario takes the subset that `ALLOWED` names."""

    min_duration_s: float = MLPERF_MIN_DURATION_S
    min_query_count: int = 100
    target_qps: float | None = None  # offline: LoadGen's expected QPS (None: from the warm-up); server: fixed (None: search)
    latency_bound_ms: float = 15.0  # server: the p99 latency bound
    samples_per_query: int = 8  # multi_stream
    batch_timeout_ms: float = 2.0  # server: how long the SUT waits for a batch to fill once a query is queued
    search_tolerance: float = 0.05  # server search: stops when failing / passing QPS <= 1 + this
    max_probes: int = 12  # server search: LoadGen runs at most
    memory_limit_mb: float | None = None  # max_batch: memory the timed steps may add (None: the device's own limit)
    start: int = 1  # max_batch: the first batch probed (doubling from there; halving if it does not fit)
    largest: int = 65536  # max_batch: the search's upper bound
    tolerance: float = 0.05  # max_batch: bisection stops when (oom - ok) <= ok * this (or 1)


_COMMON = ("min_duration_s", "min_query_count")
ALLOWED: dict[str, tuple[str, ...]] = {
    "offline": ("target_qps", *_COMMON),
    "single_stream": _COMMON,
    "multi_stream": ("samples_per_query", *_COMMON),
    "server": ("target_qps", "latency_bound_ms", "batch_timeout_ms", *_COMMON, "search_tolerance", "max_probes"),
    MAX_BATCH: ("memory_limit_mb", "start", "largest", "tolerance"),
}
_INTEGERS = {"min_query_count", "samples_per_query", "max_probes", "start", "largest"}
_FRACTIONS = {"search_tolerance", "tolerance"}


def settings(scenario: str, given: Mapping[str, Any] | None = None) -> Settings:
    """The effective settings of `scenario`: MLPerf's defaults, then what the suite gave (keys of `ALLOWED`)."""
    base = Settings(min_query_count=MLPERF_MIN_QUERIES.get(scenario, 100))
    return replace(base, **{k: v for k, v in (given or {}).items() if k in ALLOWED.get(scenario, ())})


def mlperf_length(scenario: str, s: Settings) -> bool:
    """Whether a run is as long as MLPerf requires (duration and query count); shorter runs are smoke runs."""
    return s.min_duration_s >= MLPERF_MIN_DURATION_S and s.min_query_count >= MLPERF_MIN_QUERIES[scenario]


def check(checker: Any, where: tuple, key: str, value: Any) -> Any:
    """Validate one of `FIELDS`; `checker` is `rbench.spec`'s, whose `fail` phrases the one-line error."""
    if key == "max_batch":
        if not isinstance(value, bool):
            raise checker.fail(where, f"expected true or false, got {value!r}")
        return value
    if key == "scenarios":
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list):
            raise checker.fail(where, f"expected a list of scenarios, got {value!r}", ", ".join(SCENARIOS))
        for i, v in enumerate(values):
            if v not in SCENARIOS:
                raise checker.fail(where + (i,), f"unknown scenario {v!r}", ", ".join(SCENARIOS))
        if len(set(values)) != len(values):
            raise checker.fail(where, f"duplicate values in {values!r}")
        return values
    if not isinstance(value, dict):
        raise checker.fail(where, f"expected a mapping of scenario to settings, got {value!r}", ", ".join(ALLOWED))
    for name, block in value.items():
        if name not in ALLOWED:
            raise checker.fail(where + (name,), f"unknown scenario {name!r}", ", ".join(ALLOWED))
        if not isinstance(block, dict):
            raise checker.fail(where + (name,), f"expected a mapping of settings, got {block!r}", ", ".join(ALLOWED[name]))
        for k, v in block.items():
            w = where + (name, k)
            if k not in ALLOWED[name]:
                raise checker.fail(w, "unknown key", ", ".join(ALLOWED[name]))
            checker.check_type(w, v, int if k in _INTEGERS else (int, float))
            if not (math.isfinite(v) and v > 0 and (k not in _FRACTIONS or v < 1)):
                raise checker.fail(w, f"out of range: {v}", "a fraction in (0, 1)" if k in _FRACTIONS else "> 0")
    return {name: dict(block) for name, block in value.items()}


def case_fields(suite: Any, device: str) -> list[dict[str, Any]]:
    """The keyword arguments of the cases these fields add to `suite` (`rbench.spec.Suite.cases` builds them).

    A scenario case's batch size is the most samples the SUT runs at once: offline splits its query into
    such batches, server batches queued queries up to it, multi_stream runs each query's samples in
    batches of at most it; single_stream queries hold one sample, so its cases have batch size 1.
    Scenario cases are inference. A max-batch search (batch size None) is one per mode.
    """
    common = {"image_size": suite.image_size, "memory_format": suite.memory_format, "device": device}
    out: dict[tuple, dict[str, Any]] = {}
    for m, b, p, be, s in itertools.product(suite.models, suite.batch_sizes, suite.precisions, suite.backends,
                                            suite.scenarios):
        batch = 1 if s == "single_stream" else b
        out.setdefault((m, batch, p, be, s), dict(
            model=m, batch_size=batch, precision=p, backend=be, mode="inference", scenario=s,
            scenario_settings=dict(suite.scenario_settings.get(s, {})), **common))
    if suite.max_batch:
        for m, p, be, mo in itertools.product(suite.models, suite.precisions, suite.backends, suite.modes):
            out[(m, None, p, be, mo)] = dict(
                model=m, batch_size=None, precision=p, backend=be, mode=mo, scenario=MAX_BATCH,
                scenario_settings=dict(suite.scenario_settings.get(MAX_BATCH, {})), **common)
    return list(out.values())
