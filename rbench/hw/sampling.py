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
from dataclasses import dataclass
from typing import Any

from rbench.hw.base import Monitor, TelemetrySource, Unavailable, library_reason, number, unavailable

DEFAULT_RATE_HZ = 20.0
RATE_ENV = "RBENCH_TELEMETRY_HZ"
# The counter difference is off by at most one update at each end: a window of N updates is good to 2/N.
MIN_COUNTER_UPDATES = 10
MIN_POWER_SAMPLES = 5
# Counter and integrated samples may differ by this much, plus half the power reading's averaging
# time over the window (a 1 s moving average lags the window's start and end).
DISAGREEMENT = 0.15
# Median clock during the window below this fraction of the maximum clock: "clocks below max".
CLOCK_FRACTION = 0.90
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._n = 0

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
                         sorted(self._others) if self._others_known else None)


def summarize(samples: list[dict[str, Any]], images: int, source: TelemetrySource, rate_hz: float,
              extra: dict[str, Any], others: list[int] | None) -> dict[str, Any]:
    """The record's `power`, `telemetry`, `flags` and `warnings` from one window's samples."""
    window = samples[-1]["t"] - samples[0]["t"]
    inner = samples[1:-1] or samples  # the ends are taken with the device idle
    warnings: list[str] = []
    flags: dict[str, bool | None] = {}

    power_points = [(s["t"], s["power_w"]) for s in samples if "power_w" in s]
    sampled_j = None
    if len(power_points) >= 2 and power_points[-1][0] - power_points[0][0] >= 0.5 * window > 0:
        span = power_points[-1][0] - power_points[0][0]
        sampled_j = _trapezoid(power_points) / span * window
    counted = counter_energy(samples)

    power: dict[str, Any]
    if counted.energy_j is not None:
        energy, method = counted.energy_j, "counter"
        label = source.counter_label
    elif sampled_j is not None:
        energy, method = sampled_j, "samples"
        label = f"{source.power_label}, integrated at {rate_hz:g} Hz"
        if counted.reason:
            label += f" (no counter: {counted.reason})"
    else:
        energy = None
        reasons = [counted.reason or "no counter"]
        if not source.has_power_readings:
            pass
        elif "power_w" in source.unavailable:
            reasons.append(f"power readings: {source.unavailable['power_w']}")
        elif not power_points:
            reasons.append("no power readings")
        else:
            reasons.append(f"only {len(power_points)} power readings")
        power = unavailable("; ".join(reasons))

    if energy is not None:
        counter_powers = [j / (t1 - t0) for t0, t1, j in counted.intervals if t1 > t0]
        peak = max(p for _, p in power_points) if power_points else (max(counter_powers) if counter_powers else None)
        power = {
            "avg_w": energy / window if window > 0 else None, "peak_w": peak, "energy_j": energy,
            "j_per_image": energy / images if images else None,
            "images_per_j": images / energy if energy > 0 else None,
            "source": label, "method": method, "window_s": window,
            "peak_from": "power samples" if power_points else "counter intervals" if counter_powers else None,
            "samples": len(power_points), "energy_counter_j": counted.energy_j, "energy_samples_j": sampled_j,
            "counter_update_s": counted.update_s,
        }
        if len(counted.domains_j) > 1:
            power["domains_j"] = counted.domains_j
        if counted.energy_j is not None:
            power["counter_error_bound"] = (min(1.0, 2 * counted.update_s / window)
                                            if counted.update_s and window > 0 else None)
            short = counted.update_s is None or window < MIN_COUNTER_UPDATES * counted.update_s
        else:
            short = len(power_points) < MIN_POWER_SAMPLES
        flags["window_too_short"] = short
        if short:
            warnings.append(f"timed window too short for the energy figure (< {MIN_COUNTER_UPDATES} counter "
                            f"updates or < {MIN_POWER_SAMPLES} power samples): energy uncertain")
        if counted.energy_j is not None and sampled_j is not None:
            tolerance = DISAGREEMENT + 0.5 * source.power_averaging_s / window
            difference = abs(counted.energy_j - sampled_j) / counted.energy_j
            power["cross_check"] = {"counter_j": counted.energy_j, "samples_j": sampled_j,
                                    "relative_difference": difference, "tolerance": tolerance}
            flags["energy_counter_disagrees"] = difference > tolerance
            if difference > tolerance and not short:
                warnings.append("energy counter and integrated power samples disagree beyond tolerance "
                                "(see power.cross_check)")
        else:
            flags["energy_counter_disagrees"] = None

    telemetry: dict[str, Any] = {"source": source.name, "rate_hz": rate_hz, "samples": len(samples),
                                 "window_s": window, **source.identity(), **source.limits(), **extra}
    for key in ("clock_mhz", "mem_clock_mhz", "temperature_c", "utilization_pct", "memory_utilization_pct",
                "cpu_mhz"):
        values = [s[key] for s in inner if key in s]
        if values:
            telemetry[key] = _stats(values)
    throttle = [s["throttle"] for s in inner if "throttle" in s]
    if throttle:
        seen = {name for names in throttle for name in names}
        telemetry["throttle_reasons"] = {name: sum(name in names for names in throttle) / len(throttle)
                                         for name in sorted(seen)}
        held = sorted(seen & source.throttling)
        flags["throttled"] = bool(held)
        if held:
            warnings.append(f"clocks throttled ({', '.join(held)})")
    elif source.throttling:
        flags["throttled"] = None

    clock_max = telemetry.get("clock_max_mhz")
    if "clock_mhz" in telemetry and number(clock_max):
        below = telemetry["clock_mhz"]["median"] < CLOCK_FRACTION * clock_max
        flags["clocks_below_max"] = below
        if below:
            warnings.append(f"clock below {CLOCK_FRACTION:.0%} of its {clock_max:g} MHz maximum during the window")
    elif source.watches_clocks:
        flags["clocks_below_max"] = None

    if others is not None:
        telemetry["other_processes"] = others
        flags["other_processes"] = bool(others)
        if others:
            warnings.append("other processes were using the GPU during the window (telemetry.other_processes)")
    elif "other_cpu_cores" in extra:
        cores = extra["other_cpu_cores"]
        flags["other_processes"] = None if cores is None else cores > OTHER_CPU_CORES
        if flags["other_processes"]:
            warnings.append(f"other processes used over {OTHER_CPU_CORES:g} CPU cores during the window "
                            "(telemetry.other_cpu_cores)")
    else:
        flags["other_processes"] = None

    if telemetry.get("mig"):
        flags["mig_shared_power"] = True
        warnings.append("MIG instance: power and energy are the whole GPU's, shared with other instances")

    if source.unavailable:
        telemetry["unavailable"] = dict(source.unavailable)
    return {"power": power, "telemetry": telemetry, "flags": flags, "warnings": warnings}


def sample_rate() -> float:
    """The sampling rate: `RBENCH_TELEMETRY_HZ` if set to a number >= 0, else 20 Hz."""
    try:
        rate = float(os.environ.get(RATE_ENV, DEFAULT_RATE_HZ))
    except ValueError:
        return DEFAULT_RATE_HZ
    return rate if rate >= 0 else DEFAULT_RATE_HZ
