"""Run files in the formats other tools ingest: CSV, github-action-benchmark's custom JSON, Bencher Metric Format.

- `csv`: one row per record (the latest record of each case of each run), the columns of CSV_COLUMNS,
  raw per-iteration samples only when asked (they are long).
- `gab`: github-action-benchmark's custom format, a JSON list of `{name, unit, value, range, extra}`
  (its `BenchmarkResult`). One file is one tool: latency, memory and energy are `customSmallerIsBetter`,
  throughput `customBiggerIsBetter` (METRICS says which).
- `bmf`: Bencher Metric Format, `{benchmark: {measure slug: {value, lower_value, upper_value}}}`.
  `latency` (p50) is in nanoseconds as Bencher's built-in Latency measure expects; `throughput` is
  images/s; `latency-p99` (ns), `peak-memory` (bytes) and `energy-per-image` (J) are measures Bencher
  creates on first sight.

Intervals come from the samples: a quantile's is the distribution-free order-statistic interval
(`stats.quantile_interval`), throughput's is the median's carried over to images/s, and energy's is
the figure's own error bound (`stats.energy_bound`). Peak memory is one figure with no interval.
This module reads results only (no torch).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbench import results
from rbench.analysis import stats
from rbench.spec import record_id

LATENCY = ("p50", "p90", "p95", "p99", "min", "max", "mean", "stdev")
CSV_COLUMNS = (
    "run_file", "run_started", "suite", "device_kind", "device_name", "git_sha", "case_id", *results.CASE_FIELDS,
    "status", "reason", "throughput_ips", *(f"latency_ms.{k}" for k in LATENCY), "iters", "window_s", "tflops",
    "flops_per_image", "params", "peak_memory_bytes", "power.avg_w", "power.peak_w", "power.energy_j",
    "power.j_per_image", "power.source", "power.counter_error_bound", "power.reason", "gate_error",
    "gate_tolerance", "warnings")
SAMPLES_COLUMN = "samples_ms"  # with --samples: the raw per-iteration times, space-separated


class ExportError(ValueError):
    """Input that cannot be exported (no run file, nothing measured): exit status 2."""


@dataclass(frozen=True)
class Case:
    """One measured case of one run, with the name it is exported under."""

    name: str
    record: dict[str, Any]
    run: results.Run


def _runs(paths: Sequence[str | Path]) -> list[results.Run]:
    runs = []
    for p in paths:
        if Path(p).is_file() and Path(p).suffix == ".json":
            raise ExportError(f"{p}: export reads rbench run files (.jsonl); github-action-benchmark (tool: pytest) "
                              "and Bencher (adapter: python_pytest) read pytest-benchmark JSON themselves")
        try:
            runs += list(results.iter_runs(p))
        except results.RunFileError as e:
            raise ExportError(str(e)) from None
    if not runs:
        raise ExportError(f"no run files in {', '.join(map(str, paths))}")
    return runs


def _device(run: results.Run) -> str:
    return str((run.env.get("device") or {}).get("name") or "unknown device")


def measured_cases(runs: Sequence[results.Run]) -> tuple[list[Case], list[str]]:
    """The ok cases under unique names, and notes on what was left out.

    A name is the case id (`resnet50/bs32/224px/fp16/eager/inference/channels_last`), prefixed by the
    device name when the runs come from several devices. A case measured by several runs of one device
    is taken from the most recently started run.
    """
    several = len({_device(r) for r in runs}) > 1
    chosen: dict[str, Case] = {}
    notes: list[str] = []
    for run in sorted(runs, key=lambda r: (str(r.header.get("started", "")), str(r.path))):
        for r in run.latest_records():
            name = f"{_device(run)} {record_id(r)}" if several else record_id(r)
            if r.get("status") != "ok":
                notes.append(f"{name}: {r.get('status')} in {run.path}, not exported")
                continue
            if name in chosen:
                notes.append(f"{name}: measured again in {run.path}; the later run is exported")
            chosen[name] = Case(name, r, run)
    return list(chosen.values()), notes


# CSV.

def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return "; ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return "" if value is None else value


def to_csv(runs: Sequence[results.Run], samples: bool = False) -> str:
    """Every record of every run (latest per case), one row each, the columns of CSV_COLUMNS."""
    columns = list(CSV_COLUMNS) + [SAMPLES_COLUMN] * samples
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in results.to_rows(runs):
        row["case_id"] = row.get("case_id") or record_id(row)
        row["run_started"] = row.get("run_started") or ""
        if samples:
            row[SAMPLES_COLUMN] = " ".join(repr(float(x)) for x in row.get(SAMPLES_COLUMN) or [])
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return out.getvalue()


# Intervals from the samples.

def _samples(r: dict[str, Any]) -> list[float]:
    return [float(x) for x in r.get("samples_ms") or [] if isinstance(x, (int, float)) and x > 0]


def latency_interval(r: dict[str, Any], q: float) -> tuple[float, float] | None:
    x = _samples(r)
    return stats.quantile_interval(x, q) if x else None


def throughput_interval(r: dict[str, Any]) -> tuple[float, float] | None:
    """The median time's interval carried over to images/s (value x median / bound)."""
    ips, ci, x = r.get("throughput_ips"), latency_interval(r, 0.5), _samples(r)
    if not isinstance(ips, (int, float)) or ci is None:
        return None
    median = sorted(x)[(len(x) - 1) // 2]  # nearest rank, as the record's p50
    return ips * median / ci[1], ips * median / ci[0]


def _energy(r: dict[str, Any]) -> tuple[float, float, float] | None:
    power = r.get("power")
    if not isinstance(power, dict) or power.get("unavailable") or not isinstance(power.get("j_per_image"), (int, float)):
        return None
    j, b = float(power["j_per_image"]), stats.energy_bound(power)
    return j, j * (1 - b), j * (1 + b)


@dataclass(frozen=True)
class Metric:
    """One figure of a case: its value and interval in the exported unit, or None when not measured."""

    slug: str  # Bencher measure slug
    label: str  # suffix of the github-action-benchmark name
    unit: str
    bigger_is_better: bool
    figure: Callable[[dict[str, Any]], tuple[float, float | None, float | None] | None]


def _lat(q: float, key: str, scale: float) -> Callable[[dict[str, Any]], Any]:
    def figure(r: dict[str, Any]) -> tuple[float, float | None, float | None] | None:
        value = (r.get("latency_ms") or {}).get(key)
        if not isinstance(value, (int, float)):
            return None
        ci = latency_interval(r, q)
        return value * scale, ci and ci[0] * scale, ci and ci[1] * scale
    return figure


def _throughput(r: dict[str, Any]) -> tuple[float, float | None, float | None] | None:
    ips = r.get("throughput_ips")
    if not isinstance(ips, (int, float)):
        return None
    ci = throughput_interval(r)
    return float(ips), ci and ci[0], ci and ci[1]


def _memory(scale: float) -> Callable[[dict[str, Any]], Any]:
    def figure(r: dict[str, Any]) -> tuple[float, None, None] | None:
        b = r.get("peak_memory_bytes")
        return (b * scale, None, None) if isinstance(b, (int, float)) and b > 0 else None
    return figure


# github-action-benchmark: readable units (its charts show the number as given).
GAB_METRICS: dict[str, tuple[Metric, ...]] = {
    "latency": (Metric("latency", "latency p50", "ms", False, _lat(0.5, "p50", 1.0)),
                Metric("latency-p99", "latency p99", "ms", False, _lat(0.99, "p99", 1.0))),
    "throughput": (Metric("throughput", "throughput", "images/s", True, _throughput),),
    "memory": (Metric("peak-memory", "peak memory", "MiB", False, _memory(1 / 2**20)),),
    "energy": (Metric("energy-per-image", "energy per image", "J/image", False, _energy),),
}
GAB_TOOL = {False: "customSmallerIsBetter", True: "customBiggerIsBetter"}
# Bencher: its built-in latency measure is in nanoseconds.
BMF_METRICS: tuple[Metric, ...] = (
    Metric("throughput", "throughput", "images/s", True, _throughput),
    Metric("latency", "latency p50", "ns", False, _lat(0.5, "p50", 1e6)),
    Metric("latency-p99", "latency p99", "ns", False, _lat(0.99, "p99", 1e6)),
    Metric("peak-memory", "peak memory", "bytes", False, _memory(1.0)),
    Metric("energy-per-image", "energy per image", "J", False, _energy),
)


def gab_tool(metric: str) -> str:
    """The github-action-benchmark `tool:` that reads the file written for `metric`."""
    return GAB_TOOL[GAB_METRICS[metric][0].bigger_is_better]


def _extra(c: Case) -> str:
    r, env = c.record, c.run.env
    lat = r.get("latency_ms") or {}
    sw = env.get("software") or {}
    git = env.get("git") or {}
    parts = [f"n = {len(_samples(r))} iterations"]
    parts += [f"{k} {lat[k]:.4g} ms" for k in ("p50", "p90", "p99") if isinstance(lat.get(k), (int, float))]
    parts.append(f"device {_device(c.run)}")
    parts += [f"{k} {sw[k]}" for k in ("torch", "cuda", "hip", "triton") if sw.get(k)]
    if git.get("sha"):
        parts.append(f"git {str(git['sha'])[:10]}{'+dirty' if git.get('dirty') else ''}")
    return "\n".join(parts)


def to_gab(cases: Iterable[Case], metric: str = "latency") -> list[dict[str, Any]]:
    """github-action-benchmark custom JSON for `metric` (a GAB_METRICS name)."""
    out = []
    for c in cases:
        for m in GAB_METRICS[metric]:
            fig = m.figure(c.record)
            if fig is None:
                continue
            value, low, high = fig
            entry: dict[str, Any] = {"name": f"{c.name} {m.label}", "unit": m.unit, "value": value}
            if low is not None and high is not None:
                entry["range"] = f"± {max(high - value, value - low):.4g}"
            entry["extra"] = _extra(c)
            out.append(entry)
    return out


def to_bmf(cases: Iterable[Case]) -> dict[str, dict[str, dict[str, float]]]:
    """Bencher Metric Format: every measured figure of every case."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for c in cases:
        measures = {}
        for m in BMF_METRICS:
            fig = m.figure(c.record)
            if fig is None:
                continue
            value, low, high = fig
            measures[m.slug] = {"value": value, **({"lower_value": low, "upper_value": high}
                                                   if low is not None and high is not None else {})}
        if measures:
            out[c.name] = measures
    return out


FORMATS = ("csv", "gab", "bmf")


def export(paths: Sequence[str | Path], fmt: str, samples: bool = False, metric: str = "latency") -> tuple[str, list[str]]:
    """The text of `fmt` for the run files below `paths`, and notes on what was left out."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: unknown {fmt!r}; allowed: {', '.join(FORMATS)}")
    if metric not in GAB_METRICS:
        raise ExportError(f"--metric: unknown {metric!r}; allowed: {', '.join(GAB_METRICS)}")
    runs = _runs(paths)
    if fmt == "csv":
        return to_csv(runs, samples), []
    cases, notes = measured_cases(runs)
    data: Any = to_gab(cases, metric) if fmt == "gab" else to_bmf(cases)
    if not data:
        raise ExportError(f"nothing to export: no ok case with a {metric if fmt == 'gab' else 'measured'} figure in "
                          f"{', '.join(map(str, paths))}")
    return json.dumps(data, indent=2, allow_nan=False) + "\n", notes
