"""A case's telemetry window: a sampler thread over a source, and the window's energy, clocks and flags.

A monitor's `start()` and `stop()` bracket the timed window (the device idle at both ends);
`result(images)` then gives the record's `power` block, a `telemetry` block, `flags` and one-line
`warnings`. While the window is open a background thread samples the source at a fixed rate (20 Hz by
default, `RBENCH_TELEMETRY_HZ` to change it). Energy is the counter's difference over the window when
there is a counter (unwrapped sample to sample), cross-checked against the integrated power samples;
otherwise the integrated samples; otherwise `unavailable` with the reason.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbench.hw.base import Monitor, TelemetrySource, Unavailable, library_reason, number, unavailable
from rbench.names import printable

DEFAULT_RATE_HZ = 20.0
RATE_ENV = "RBENCH_TELEMETRY_HZ"
# The counter difference is off by at most one update at each end: a window of N updates is good to 2/N.
MIN_COUNTER_UPDATES = 10
MIN_POWER_SAMPLES = 5
# Counter and integrated samples may differ by this much, plus half the power reading's averaging
# time over the window (a 1 s moving average lags the window's start and end).
DISAGREEMENT = 0.15
# Median clock during the window below this fraction of the reference clock (the application clock,
# else the maximum): "clocks_below_max". Far below, not the dips that power management makes at large
# batch under the power cap (information, `telemetry.power_capped_share`).
CLOCK_FRACTION = 0.75
CLOCK_NAMES = {"application_clock_mhz": "application clock", "clock_max_mhz": "maximum"}
# CPU time used by other processes during the window, in cores, above which a CPU case is warned.
OTHER_CPU_CORES = 0.25


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "mean": statistics.fmean(values)}


def _trapezoid(points: list[tuple[float, float]]) -> float:
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(points, points[1:]))


@dataclass
class CounterEnergy:
    """The energy counters' reading of one window."""

    energy_j: float | None
    reason: str | None
    domains_j: dict[str, float]
    update_s: float | None  # the counter's update period, as seen by the sampler
    intervals: list[tuple[float, float, float]]  # (t0, t1, joules) between counter changes


def counter_energy(samples: list[dict[str, Any]]) -> CounterEnergy:
    """The counters' energy over the samples, unwrapped reading to reading, and their update period."""
    first = samples[0]
    if "counter_error" in first:
        return CounterEnergy(None, first["counter_error"], {}, None, [])
    failed = next((s["counter_error"] for s in samples if "counter_error" in s), None)
    if failed:
        return CounterEnergy(None, f"counter read failed during the window: {failed}", {}, None, [])
    totals = {name: 0.0 for name in first["counters"]}
    changes: list[tuple[float, float]] = []  # (time, joules since the previous reading)
    for a, b in zip(samples, samples[1:]):
        step = 0.0
        for name, c0 in a["counters"].items():
            c1 = b["counters"].get(name)
            if c1 is None:
                return CounterEnergy(None, f"counter {name} disappeared during the window", {}, None, [])
            delta = c1.raw - c0.raw
            if delta < 0:
                if c0.wrap is None:
                    return CounterEnergy(None, f"counter {name} went backwards and its range is unknown",
                                         {}, None, [])
                delta %= c0.wrap  # it wrapped around
            totals[name] += delta * c0.joules_per_unit
            step += delta * c0.joules_per_unit
        if step > 0:
            changes.append((b["t"], step))
    times = [t for t, _ in changes]
    update_s = statistics.median(b - a for a, b in zip(times, times[1:])) if len(times) >= 2 else None
    intervals = [(t0, t1, j) for (t0, _), (t1, j) in zip(changes, changes[1:])]
    if not changes:
        return CounterEnergy(None, "energy counter did not advance during the window", totals, None, [])
    return CounterEnergy(sum(totals.values()), None, totals, update_s, intervals)


class SamplingMonitor(Monitor):
    """Samples `source` at `rate_hz` between `start()` and `stop()` on a background thread.

    A sample is also taken synchronously at `start()` and `stop()`, so the window's ends are exact;
    with `rate_hz=0` only those are taken (and `tick()` adds samples by hand, for tests).
    """

    def __init__(self, device: Any, source: TelemetrySource, rate_hz: float = DEFAULT_RATE_HZ,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__(device, "")
        self.source, self.rate_hz, self.clock = source, rate_hz, clock
        self._samples: list[dict[str, Any]] = []
        self._others: set[int] = set()
        self._others_known = False
        self._extra: dict[str, Any] = {}
        self._at_start: list[int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._n = 0

    def case_start(self) -> None:
        """Note who else is on the device as a case starts, before its build, compilation and autotuning."""
        try:
            self._at_start = self.source.processes()
        except Exception:  # noqa: BLE001 - telemetry must never break a measurement
            self._at_start = None

    def start(self) -> None:
        self.source.begin_window()
        self._samples, self._others, self._others_known, self._extra, self._n = [], set(), False, {}, 0
        self.tick(edge=True)
        if self.rate_hz > 0:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rbench-telemetry", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        due = time.perf_counter() + period
        while not self._stop.wait(max(0.0, due - time.perf_counter())):
            self.tick()
            due += period
            if due < time.perf_counter():  # fell behind (a slow read): skip ahead rather than burst
                due = time.perf_counter() + period

    def tick(self, edge: bool = False) -> None:
        """Take one sample now."""
        t = self.clock()
        s: dict[str, Any] = {"t": t}
        try:
            s["counters"] = self.source.counters()
        except Unavailable as e:
            s["counter_error"] = str(e)
        except Exception as e:  # noqa: BLE001 - telemetry must never break a measurement
            s["counter_error"] = library_reason(e)
        try:
            s.update(self.source.sample())
        except Exception as e:  # noqa: BLE001
            self.source.unavailable.setdefault("sample", library_reason(e))
        # Process lists cost more than a reading: at the ends and about once a second.
        if edge or self._n % max(1, round(self.rate_hz)) == 0:
            try:
                pids = self.source.processes()
            except Exception:  # noqa: BLE001
                pids = None
            if pids is not None:
                self._others_known = True
                self._others.update(pids)
        self._n += 1
        self._samples.append(s)

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._samples:
            self.tick(edge=True)
            try:
                self._extra = self.source.end_window()
            except Exception as e:  # noqa: BLE001
                self._extra = {"unavailable_window": library_reason(e)}

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.source.close()

    def result(self, images: int) -> dict[str, Any]:
        samples = list(self._samples)
        if len(samples) < 2:
            return {"power": unavailable("no timed window was sampled"), "telemetry": None,
                    "flags": {}, "warnings": []}
        return summarize(samples, images, self.source, self.rate_hz, self._extra,
                         sorted(self._others) if self._others_known else None, self._at_start)


@dataclass
class Verdicts:
    """A window's `flags` (True, False, or None: could not be told) and the warnings its True flags give."""

    flags: dict[str, bool | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def set(self, name: str, value: bool | None, warning: str = "") -> None:
        self.flags[name] = value
        if value and warning:
            self.warnings.append(warning)


def summarize(samples: list[dict[str, Any]], images: int, source: TelemetrySource, rate_hz: float,
              extra: dict[str, Any], others: list[int] | None,
              others_at_start: list[int] | None = None) -> dict[str, Any]:
    """The record's `power`, `telemetry`, `flags` and `warnings` from one window's samples.

    `others` are the other processes seen on the device during the window, `others_at_start` those
    seen when the case started (before its build, compilation and autotuning); None: not known.
    """
    window = samples[-1]["t"] - samples[0]["t"]
    inner = samples[1:-1] or samples  # the ends are taken with the device idle
    verdicts = Verdicts()
    power = energy(samples, images, source, rate_hz, window, verdicts)
    telemetry = telemetry_stats(inner, source, rate_hz, window, len(samples), extra)
    throttle_flags(inner, source, telemetry, verdicts)
    clock_flags(telemetry, source, verdicts)
    process_flags(others, others_at_start, source, extra, telemetry, verdicts)
    if telemetry.get("mig"):
        verdicts.set("mig_shared_power", True,
                     "MIG instance: power and energy are the whole GPU's, shared with other instances")
    if source.unavailable:
        telemetry["unavailable"] = dict(source.unavailable)
    return {"power": power, "telemetry": telemetry, "flags": verdicts.flags, "warnings": verdicts.warnings}


# Energy.

def _sampled_energy(samples: list[dict[str, Any]], window: float) -> tuple[list[tuple[float, float]], float | None]:
    """The power readings, and their integral scaled to the window (None when they cover under half of it)."""
    points = [(s["t"], s["power_w"]) for s in samples if "power_w" in s]
    if len(points) >= 2 and points[-1][0] - points[0][0] >= 0.5 * window > 0:
        return points, _trapezoid(points) / (points[-1][0] - points[0][0]) * window
    return points, None


def _no_energy(counted: CounterEnergy, source: TelemetrySource, points: list[tuple[float, float]]) -> dict[str, Any]:
    reasons = [counted.reason or "no counter"]
    if not source.has_power_readings:
        pass
    elif "power_w" in source.unavailable:
        reasons.append(f"power readings: {source.unavailable['power_w']}")
    elif not points:
        reasons.append("no power readings")
    else:
        reasons.append(f"only {len(points)} power readings")
    return unavailable("; ".join(reasons))


def energy(samples: list[dict[str, Any]], images: int, source: TelemetrySource, rate_hz: float, window: float,
           verdicts: Verdicts) -> dict[str, Any]:
    """The `power` block: the counter's energy when there is one, else the integrated readings, else why not."""
    points, sampled_j = _sampled_energy(samples, window)
    counted = counter_energy(samples)
    if counted.energy_j is not None:
        joules, method, label = counted.energy_j, "counter", source.counter_label
    elif sampled_j is not None:
        joules, method = sampled_j, "samples"
        label = f"{source.power_label}, integrated at {rate_hz:g} Hz"
        if counted.reason:
            label += f" (no counter: {counted.reason})"
    else:
        return _no_energy(counted, source, points)
    counter_powers = [j / (t1 - t0) for t0, t1, j in counted.intervals if t1 > t0]
    peak = max(p for _, p in points) if points else (max(counter_powers) if counter_powers else None)
    power = {
        "avg_w": joules / window if window > 0 else None, "peak_w": peak, "energy_j": joules,
        "j_per_image": joules / images if images else None,
        "images_per_j": images / joules if joules > 0 else None,
        "source": label, "method": method, "window_s": window,
        "peak_from": "power samples" if points else "counter intervals" if counter_powers else None,
        "samples": len(points), "energy_counter_j": counted.energy_j, "energy_samples_j": sampled_j,
        "counter_update_s": counted.update_s,
    }
    if len(counted.domains_j) > 1:
        power["domains_j"] = counted.domains_j
    _energy_checks(power, counted, sampled_j, len(points), source, window, verdicts)
    return power


def _energy_checks(power: dict[str, Any], counted: CounterEnergy, sampled_j: float | None, readings: int,
                   source: TelemetrySource, window: float, verdicts: Verdicts) -> None:
    """Is the window long enough for the figure, and do the counter and the readings agree?"""
    if counted.energy_j is not None:
        power["counter_error_bound"] = (min(1.0, 2 * counted.update_s / window)
                                        if counted.update_s and window > 0 else None)
        short = counted.update_s is None or window < MIN_COUNTER_UPDATES * counted.update_s
    else:
        short = readings < MIN_POWER_SAMPLES
    verdicts.set("window_too_short", short,
                 f"timed window too short for the energy figure (< {MIN_COUNTER_UPDATES} counter updates or "
                 f"< {MIN_POWER_SAMPLES} power samples): energy uncertain")
    if counted.energy_j is None or sampled_j is None:
        verdicts.set("energy_counter_disagrees", None)
        return
    tolerance = DISAGREEMENT + 0.5 * source.power_averaging_s / window
    difference = abs(counted.energy_j - sampled_j) / counted.energy_j
    power["cross_check"] = {"counter_j": counted.energy_j, "samples_j": sampled_j,
                            "relative_difference": difference, "tolerance": tolerance}
    verdicts.set("energy_counter_disagrees", difference > tolerance,
                 "" if short else "energy counter and integrated power samples disagree beyond tolerance "
                 "(see power.cross_check)")


# Clocks, temperature, utilisation.

def telemetry_stats(inner: list[dict[str, Any]], source: TelemetrySource, rate_hz: float, window: float,
                    count: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The `telemetry` block: the source's identity and limits, and {min, median, max, mean} of each reading."""
    telemetry: dict[str, Any] = {"source": source.name, "rate_hz": rate_hz, "samples": count,
                                 "window_s": window, **source.identity(), **source.limits(), **extra}
    for key in ("clock_mhz", "mem_clock_mhz", "temperature_c", "utilization_pct", "memory_utilization_pct",
                "cpu_mhz"):
        values = [s[key] for s in inner if key in s]
        if values:
            telemetry[key] = _stats(values)
    return telemetry


def throttle_flags(inner: list[dict[str, Any]], source: TelemetrySource, telemetry: dict[str, Any],
                   verdicts: Verdicts) -> None:
    """Slowdowns (thermal, hardware, power brake) warn; the power cap is information with its share."""
    throttle = [s["throttle"] for s in inner if "throttle" in s]
    if not throttle:
        if source.throttling:
            verdicts.set("throttled", None)
        return
    seen = {name for names in throttle for name in names}
    shares = {name: sum(name in names for names in throttle) / len(throttle) for name in sorted(seen)}
    telemetry["throttle_reasons"] = shares
    if source.power_capping:
        telemetry["power_capped_share"] = sum(bool(source.power_capping & set(names)) for names in throttle) / len(
            throttle)
    held = sorted(seen & source.throttling)
    verdicts.set("throttled", bool(held),
                 "clocks throttled (" + ", ".join(f"{n} {shares[n]:.0%} of the window" for n in held) + ")")


def clock_flags(telemetry: dict[str, Any], source: TelemetrySource, verdicts: Verdicts) -> None:
    """The median clock far below the application clock (else the maximum clock, where that is all there is)."""
    key = next((k for k in source.clock_references if number(telemetry.get(k))), None)
    if "clock_mhz" not in telemetry or key is None:
        if source.watches_clocks:
            verdicts.set("clocks_below_max", None)
        return
    reference = telemetry[key]
    telemetry["clock_reference"] = key
    median = telemetry["clock_mhz"]["median"]
    what = CLOCK_NAMES.get(key, key)
    verdicts.set("clocks_below_max", median < CLOCK_FRACTION * reference,
                 f"clock {median:g} MHz, below {CLOCK_FRACTION:.0%} of its {reference:g} MHz {what} during the "
                 "window (locked or held-down clocks)")


# Other processes.

def process_flags(others: list[int] | None, others_at_start: list[int] | None, source: TelemetrySource,
                  extra: dict[str, Any], telemetry: dict[str, Any], verdicts: Verdicts) -> None:
    """Other processes on the GPU during the window, or when the case started; other load on a CPU."""
    if source.lists_processes:
        telemetry["other_processes_at_start"] = others_at_start
        verdicts.set("other_processes_at_start", None if others_at_start is None else bool(others_at_start),
                     f"other processes were using the GPU when the case started ({describe_pids(others_at_start)}):"
                     " its compilation, autotuning and algorithm choices may be skewed")
    if others is not None:
        telemetry["other_processes"] = others
        verdicts.set("other_processes", bool(others),
                     f"other processes were using the GPU during the window ({describe_pids(others)})")
    elif "other_cpu_cores" in extra:
        cores = extra["other_cpu_cores"]
        verdicts.set("other_processes", None if cores is None else cores > OTHER_CPU_CORES,
                     f"other processes used over {OTHER_CPU_CORES:g} CPU cores during the window "
                     "(telemetry.other_cpu_cores)")
    else:
        verdicts.set("other_processes", None)


def describe_pids(pids: list[int] | None, limit: int = 3) -> str:
    """`pid 4242 python -m rbench.run.worker, ...`: the command line where this host can see it."""
    parts = []
    for pid in (pids or [])[:limit]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # another pid namespace (a container) or gone already
            cmd = ""
        parts.append(f"pid {pid} {printable(cmd)[:60]}".strip())
    more = len(pids or []) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def sample_rate() -> float:
    """The sampling rate: `RBENCH_TELEMETRY_HZ` if set to a number >= 0, else 20 Hz."""
    try:
        rate = float(os.environ.get(RATE_ENV, DEFAULT_RATE_HZ))
    except ValueError:
        return DEFAULT_RATE_HZ
    return rate if rate >= 0 else DEFAULT_RATE_HZ
