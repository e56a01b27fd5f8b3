"""Reading MLPerf LoadGen's logs: the detail log's `:::MLLOG` entries become a record's metric, validity and estimates.

LoadGen decides a run's validity and computes its early-stopping estimates; this module only reads
what it wrote (`mlperf_log_detail.txt`: one JSON object per `:::MLLOG` line) and never recomputes them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
PREFIX = ":::MLLOG "
# The percentiles LoadGen logs as result_<p>_percentile_latency_ns, and the record's names for them.
PERCENTILES = {"p50": "50.00", "p90": "90.00", "p95": "95.00", "p97": "97.00", "p99": "99.00", "p99.9": "99.90"}
LOADGEN_FIELDS = ("loadgen_version", "result_min_duration_met", "result_min_queries_met", "result_perf_constraints_met",
                  "early_stopping_met", "result_invalid_reason", "result_query_count", "result_overlatency_query_count",
                  "effective_target_qps", "effective_target_latency_ns", "effective_samples_per_query",
                  "effective_min_duration_ms", "effective_min_query_count", "result_scheduled_samples_per_sec",
                  "result_completed_samples_per_sec", "result_qps_with_loadgen_overhead",
                  "result_qps_without_loadgen_overhead")
_ESTIMATE = re.compile(r"Early stopping (\d+(?:\.\d+)?)th percentile estimate: (\d+)")


class LogError(RuntimeError):
    """LoadGen left no readable detail log (it did not run, or the run was cut short)."""


def read_detail(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """({key: value} of every `:::MLLOG` entry, the last value of a repeated key; the entries flagged as errors)."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise LogError(f"{path}: cannot read LoadGen's detail log: {e.strerror or e}") from None
    entries: dict[str, Any] = {}
    errors: list[str] = []
    for line in lines:
        if not line.startswith(PREFIX):
            continue
        try:
            obj = json.loads(line[len(PREFIX):])
        except ValueError:
            continue  # a line cut short by a crash: the others stand
        if not isinstance(obj, dict) or "key" not in obj:
            continue
        entries[obj["key"]] = obj.get("value")
        if (obj.get("metadata") or {}).get("is_error"):
            errors.append(f"{obj['key']}: {obj.get('value')}")
    if "result_validity" not in entries:
        raise LogError(f"{path}: LoadGen logged no result (result_validity missing)")
    return entries, errors


def _ms(value: Any) -> float | None:
    return value / 1e6 if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def early_stopping(entries: dict[str, Any]) -> dict[str, Any]:
    """LoadGen's early-stopping verdict, its text, and the percentile estimates that text states (ms)."""
    text = " ".join(str(entries.get("early_stopping_result") or "").split())
    estimates = {f"p{float(p):g}": int(ns) / 1e6 for p, ns in _ESTIMATE.findall(text)}
    return {"met": entries.get("early_stopping_met"), "estimates_ms": estimates, "result": text}


def result_fields(entries: dict[str, Any], metric_key: str, scale: float, throughput_key: str | None) -> dict[str, Any]:
    """The record's fields from one LoadGen run: metric value, validity, latencies, early stopping, LoadGen's figures.

    `metric_key` is the detail-log entry that MLPerf reports for the scenario; a missing or zero entry
    (LoadGen logs 0 where early stopping could not give an estimate) leaves the metric None.
    """
    raw = entries.get(metric_key)
    value = raw * scale if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw > 0 else None
    latency = {name: _ms(entries.get(f"result_{p}_percentile_latency_ns")) for name, p in PERCENTILES.items()}
    latency.update(min=_ms(entries.get("result_min_latency_ns")), max=_ms(entries.get("result_max_latency_ns")),
                   mean=_ms(entries.get("result_mean_latency_ns")), stdev=None)
    throughput = entries.get(throughput_key) if throughput_key else None
    return {
        "metric_value": value, "loadgen_result": entries.get("result_validity"),
        "valid": entries.get("result_validity") == "VALID", "early_stopping": early_stopping(entries),
        "latency_ms": latency, "throughput_ips": throughput if isinstance(throughput, (int, float)) else None,
        "loadgen": {k.removeprefix("result_"): entries.get(k) for k in LOADGEN_FIELDS if k in entries},
    }


def paths(directory: str | Path) -> dict[str, str]:
    """Where a run's summary and detail logs are."""
    d = Path(directory)
    return {"dir": str(d), "summary": str(d / SUMMARY), "detail": str(d / DETAIL)}
