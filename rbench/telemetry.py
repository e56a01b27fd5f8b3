"""Power, energy and clock telemetry over a case's timed window.

`monitor_for(device)` picks the source for a device: NVML (`pynvml`) for NVIDIA, `amdsmi` for AMD,
RAPL (`/sys/class/powercap`) and procfs for the CPU. A monitor's `start()` and `stop()` bracket the
timed window (the device idle at both ends); `result(images)` then gives the record's `power` block,
a `telemetry` block, `flags` and one-line `warnings` for that window.

While the window is open a background thread samples the source at a fixed rate (20 Hz by default,
`RBENCH_TELEMETRY_HZ` to change it): power, clocks, temperature, utilisation, throttle reasons and the
cumulative energy counter. Energy is the counter's difference over the window when there is a counter
(unwrapped sample to sample), cross-checked against the integrated power samples; otherwise the
integrated samples; otherwise `unavailable` with the reason. Anything that cannot be measured is
`unavailable` (or None) with its reason, never 0.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rbench import devices

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


class Unavailable(Exception):
    """A reading that cannot be had; the message is the reason."""


class Monitor:
    """No telemetry source for this device: every figure is unavailable, with the reason."""

    def __init__(self, device: Any, reason: str = "no power telemetry source for this device"):
        self.device = device
        self.reason = reason

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def result(self, images: int) -> dict[str, Any]:
        return {"power": devices.unavailable(self.reason), "telemetry": None, "flags": {}, "warnings": []}

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Counter:
    """One reading of a cumulative energy counter, in the counter's own integer units."""

    raw: int
    joules_per_unit: float
    wrap: int | None  # the counter runs modulo this; None: unknown, and a decrease makes it unusable


class Source:
    """Where a monitor's readings come from. Subclasses fill in what their library can read.

    `sample()` returns the instantaneous readings it could get (`power_w`, `clock_mhz`,
    `mem_clock_mhz`, `temperature_c`, `utilization_pct`, `memory_utilization_pct`, `throttle`: names);
    a reading that fails is left out and its reason kept in `unavailable` for the window.
    """

    name = "none"
    counter_label = "energy counter"
    power_label = "power samples"
    power_averaging_s = 0.0  # how long a power reading averages over (NVML: 1 s on Ampere and newer)
    has_power_readings = True  # False: power comes only from the energy counter
    watches_clocks = False  # True: a clock below `limits()["clock_max_mhz"]` is flagged
    throttling: frozenset[str] = frozenset()  # throttle reasons that mean the clocks were held down

    def __init__(self) -> None:
        self.unavailable: dict[str, str] = {}
        self._identity: dict[str, Any] = {}  # which device, and how it was matched to torch's index
        self._limits: dict[str, Any] = {}

    def reason(self, exc: BaseException) -> str:
        return devices.library_reason(exc)

    def read(self, field: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, or None with the reason kept; a field that failed is not asked again this window."""
        if field in self.unavailable:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - one failed reading must not stop the others
            self.unavailable[field] = self.reason(e)
            return None

    def begin_window(self) -> None:
        self.unavailable = {}

    def end_window(self) -> dict[str, Any]:
        """Window-level readings for the telemetry block."""
        return {}

    def counters(self) -> dict[str, Counter]:
        raise Unavailable("this source has no energy counter")

    def sample(self) -> dict[str, Any]:
        return {}

    def processes(self) -> list[int] | None:
        """Other processes using this device now (pids), or None when that cannot be told."""
        return None

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def limits(self) -> dict[str, Any]:
        """`clock_max_mhz` (for the clocks-below-max check), `power_limit_w` and the like."""
        return dict(self._limits)

    def close(self) -> None:
        pass


# NVIDIA: NVML through pynvml.

# Bits of nvmlDeviceGetCurrentClocksEventReasons (formerly ...ThrottleReasons); stable across NVML versions.
NVML_CLOCK_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
NVML_THROTTLING = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                             "hw_power_brake_slowdown"})


def clock_reason_names(mask: int, table: dict[int, str] = NVML_CLOCK_REASONS) -> list[str]:
    return [name for bit, name in table.items() if mask & bit]


class NvmlSource(Source):
    """One NVIDIA GPU through NVML. With MIG, `handle` is the physical GPU: power is only per GPU."""

    name = "nvml"
    counter_label = "nvml energy counter (nvmlDeviceGetTotalEnergyConsumption)"
    power_label = "nvml power samples (nvmlDeviceGetPowerUsage)"
    power_averaging_s = 1.0
    throttling = NVML_THROTTLING
    watches_clocks = True

    def __init__(self, nvml: Any, handle: Any, *, torch_index: int = 0, mapped_by: str = "",
                 mig_handle: Any = None, pid: int | None = None):
        super().__init__()
        self.nvml, self.handle, self.mig_handle = nvml, handle, mig_handle
        self.pid = os.getpid() if pid is None else pid
        self._identity = {"torch_index": torch_index, "mapped_by": mapped_by, "mig": mig_handle is not None,
                          "name": self._once(nvml.nvmlDeviceGetName), "uuid": self._once(nvml.nvmlDeviceGetUUID)}
        if mig_handle is not None:
            self._identity["mig_instance_uuid"] = self._once(nvml.nvmlDeviceGetUUID, mig_handle)
        sm, mem = getattr(nvml, "NVML_CLOCK_SM", 1), getattr(nvml, "NVML_CLOCK_MEM", 2)
        self._limits = {
            "clock_max_mhz": self._once(nvml.nvmlDeviceGetMaxClockInfo, handle, sm),
            "mem_clock_max_mhz": self._once(nvml.nvmlDeviceGetMaxClockInfo, handle, mem),
            "application_clock_mhz": self._once(getattr(nvml, "nvmlDeviceGetApplicationsClock", None), handle, sm),
            "power_limit_w": self._once(nvml.nvmlDeviceGetEnforcedPowerLimit, handle, scale=1e-3),
        }
        self._reasons_fn = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                            or getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))

    def _once(self, fn: Any, *args: Any, scale: float | None = None) -> Any:
        args = args or (self.handle,)
        try:
            value = devices.text(fn(*args))
        except Exception:  # noqa: BLE001 - an identity field we cannot read stays None
            return None
        return value * scale if scale is not None and value is not None else value

    def reason(self, exc: BaseException) -> str:
        return devices.nvml_reason(self.nvml, exc)

    def counters(self) -> dict[str, Counter]:
        try:
            mj = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except Exception as e:  # noqa: BLE001
            why = self.reason(e)
            if getattr(e, "value", None) == getattr(self.nvml, "NVML_ERROR_NOT_SUPPORTED", 3):
                why += " (the energy counter needs a Volta or newer GPU)"
            raise Unavailable(f"nvmlDeviceGetTotalEnergyConsumption: {why}") from None
        return {"gpu": Counter(int(mj), 1e-3, 2 ** 64)}

    def sample(self) -> dict[str, Any]:
        nvml, h = self.nvml, self.handle
        out: dict[str, Any] = {}
        mw = self.read("power_w", nvml.nvmlDeviceGetPowerUsage, h)
        if mw is not None:
            out["power_w"] = mw / 1000.0
        for key, clock in (("clock_mhz", getattr(nvml, "NVML_CLOCK_SM", 1)),
                           ("mem_clock_mhz", getattr(nvml, "NVML_CLOCK_MEM", 2))):
            v = self.read(key, nvml.nvmlDeviceGetClockInfo, h, clock)
            if v is not None:
                out[key] = v
        t = self.read("temperature_c", nvml.nvmlDeviceGetTemperature, h, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        if t is not None:
            out["temperature_c"] = t
        util = self.read("utilization_pct", nvml.nvmlDeviceGetUtilizationRates, self.mig_handle or h)
        if util is not None:
            out["utilization_pct"], out["memory_utilization_pct"] = util.gpu, util.memory
        if self._reasons_fn is not None:
            mask = self.read("throttle", self._reasons_fn, h)
            if mask is not None:
                out["throttle"] = clock_reason_names(int(mask))
        else:
            self.unavailable["throttle"] = "no clock-event-reason function in this pynvml"
        return out

    def processes(self) -> list[int] | None:
        pids: set[int] = set()
        readable = False
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            procs = self.read(f"processes.{fn}", getattr(self.nvml, fn), self.handle)
            if procs is not None:
                readable = True
                pids.update(p.pid for p in procs)
        if not readable or not pids:
            # This process has a context on the GPU during the window: an empty list means NVML cannot
            # show processes here (no permission, a container), not that there are none.
            return None
        if self.pid in pids:
            return sorted(pids - {self.pid})
        # A container's pid namespace hides our own pid: one of the listed processes is this one.
        return sorted(pids)[1:] if len(pids) > 1 else []

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


# AMD: amdsmi.

def _number(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class AmdsmiSource(Source):
    """One AMD GPU through amdsmi: energy accumulator, socket power, clocks, temperature, activity."""

    name = "amdsmi"
    counter_label = "amdsmi energy counter (amdsmi_get_energy_count)"
    power_label = "amdsmi power samples (amdsmi_get_power_info)"
    watches_clocks = True

    def __init__(self, smi: Any, handle: Any, *, torch_index: int = 0, mapped_by: str = ""):
        super().__init__()
        self.smi, self.handle = smi, handle
        clk = getattr(smi, "AmdSmiClkType", None)
        self._gfx, self._mem = getattr(clk, "GFX", None), getattr(clk, "MEM", None)
        temp = getattr(smi, "AmdSmiTemperatureType", None)
        self._sensor = getattr(temp, "HOTSPOT", getattr(temp, "JUNCTION", getattr(temp, "EDGE", None)))
        self._metric = getattr(getattr(smi, "AmdSmiTemperatureMetric", None), "CURRENT", None)
        asic = self._once(smi.amdsmi_get_gpu_asic_info) or {}
        gfx = self._once(smi.amdsmi_get_clock_info, handle, self._gfx) or {}
        mem = self._once(smi.amdsmi_get_clock_info, handle, self._mem) or {}
        cap = self._once(getattr(smi, "amdsmi_get_power_cap_info", None)) or {}
        self._identity = {"torch_index": torch_index, "mapped_by": mapped_by,
                          "name": devices._na(asic.get("market_name")),
                          "uuid": self._once(getattr(smi, "amdsmi_get_gpu_device_uuid", None))}
        self._limits = {"clock_max_mhz": _number(gfx.get("max_clk")), "mem_clock_max_mhz": _number(mem.get("max_clk")),
                        "power_limit_w": cap["power_cap"] / 1e6 if _number(cap.get("power_cap")) else None}

    def _once(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*(args or (self.handle,)))
        except Exception:  # noqa: BLE001
            return None

    def counters(self) -> dict[str, Counter]:
        try:
            e = self.smi.amdsmi_get_energy_count(self.handle)
        except Exception as exc:  # noqa: BLE001
            raise Unavailable(f"amdsmi_get_energy_count: {self.reason(exc)}") from None
        # Newer amdsmi calls the accumulator `energy_accumulator`, older `power`; resolution is in uJ.
        ticks = _number(e.get("energy_accumulator", e.get("power")))
        resolution = _number(e.get("counter_resolution"))
        if ticks is None or not resolution:
            raise Unavailable(f"amdsmi_get_energy_count returned no counter: {e}")
        return {"gpu": Counter(int(ticks), resolution * 1e-6, 2 ** 64)}

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        info = self.read("power_w", self.smi.amdsmi_get_power_info, self.handle) or {}
        for key, averaging in (("socket_power", 0.0), ("current_socket_power", 0.0), ("average_socket_power", 1.0)):
            watts = _number(info.get(key))
            if watts is not None:
                out["power_w"], self.power_averaging_s = float(watts), averaging
                break
        else:
            if info:
                self.unavailable.setdefault("power_w", f"amdsmi_get_power_info gave no power: {info}")
        for key, clk in (("clock_mhz", self._gfx), ("mem_clock_mhz", self._mem)):
            c = self.read(key, self.smi.amdsmi_get_clock_info, self.handle, clk) or {}
            mhz = _number(c.get("clk", c.get("cur_clk")))
            if mhz is not None:
                out[key] = mhz
        t = _number(self.read("temperature_c", self.smi.amdsmi_get_temp_metric, self.handle, self._sensor,
                              self._metric))
        if t is not None:
            out["temperature_c"] = t
        act = self.read("utilization_pct", self.smi.amdsmi_get_gpu_activity, self.handle) or {}
        for key, src in (("utilization_pct", "gfx_activity"), ("memory_utilization_pct", "umc_activity")):
            if _number(act.get(src)) is not None:
                out[key] = act[src]
        self.unavailable.setdefault("throttle", "throttle status is not read from amdsmi")
        return out

    def processes(self) -> list[int] | None:
        procs = self.read("processes", getattr(self.smi, "amdsmi_get_gpu_process_list", None), self.handle)
        if not procs:
            return None
        pids = {p["pid"] for p in procs if isinstance(p, dict) and "pid" in p}
        if not pids:
            return None
        me = os.getpid()
        return sorted(pids - {me}) if me in pids else sorted(pids)[1:]

    def close(self) -> None:
        try:
            self.smi.amdsmi_shut_down()
        except Exception:  # noqa: BLE001
            pass


# CPU: RAPL through the powercap sysfs, clocks and other processes' CPU time through procfs.

POWERCAP = Path("/sys/class/powercap")
CPUFREQ = Path("/sys/devices/system/cpu")


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def rapl_domains(root: Path = POWERCAP) -> tuple[dict[str, Path], str | None]:
    """The RAPL package domains (`package-0`: its sysfs directory) and, if none is readable, why.

    Only top-level `intel-rapl:N` zones named `package-*` count (AMD CPUs use the same driver); `psys`
    overlaps them and sub-zones (core, uncore, dram) are parts or extras of a package.
    """
    if not root.is_dir():
        return {}, f"RAPL not exposed: {root} does not exist (usual in VMs and containers)"
    zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not zones:
        return {}, f"RAPL not exposed: no intel-rapl zones under {root} (usual in VMs and containers)"
    domains: dict[str, Path] = {}
    for zone in zones:
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            name = zone.name
        if name.startswith("package"):
            domains[name] = zone
    if not domains:
        return {}, f"RAPL exposes no package zone under {root}"
    for zone in domains.values():
        try:
            _read_int(zone / "energy_uj")
        except PermissionError:
            return {}, (f"RAPL counter unreadable: permission denied on {zone / 'energy_uj'} "
                        "(root-only since Linux 5.10)")
        except (OSError, ValueError) as e:
            return {}, f"RAPL counter unreadable: {zone / 'energy_uj'}: {e}"
    return domains, None


def _proc_stat_busy() -> tuple[int, int]:
    """(busy jiffies of all CPUs except idle/iowait/steal, steal jiffies) from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    return user + nice + system + irq + softirq, steal


def _self_jiffies() -> int:
    # Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    rest = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


class CpuSource(Source):
    """The CPU: RAPL package energy where readable, core clocks, and CPU time used by other processes."""

    name = "cpu"
    counter_label = "RAPL package energy counters (/sys/class/powercap)"
    has_power_readings = False

    def __init__(self, powercap: Path = POWERCAP, cpufreq: Path = CPUFREQ):
        super().__init__()
        self.domains, self.counter_reason = rapl_domains(powercap)
        self._wraps: dict[str, int | None] = {}
        for name, zone in self.domains.items():
            try:
                self._wraps[name] = _read_int(zone / "max_energy_range_uj") + 1
            except (OSError, ValueError):
                self._wraps[name] = None
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = list(range(os.cpu_count() or 1))
        self._freq_files = [f for f in (cpufreq / f"cpu{c}" / "cpufreq" / "scaling_cur_freq" for c in cpus)
                            if f.exists()]
        try:
            self._max_mhz = _read_int(cpufreq / f"cpu{cpus[0]}" / "cpufreq" / "cpuinfo_max_freq") / 1000
        except (OSError, ValueError, IndexError):
            self._max_mhz = None
        self._ticks = 0
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._begin: tuple[float, int, int, int] | None = None

    def counters(self) -> dict[str, Counter]:
        if self.counter_reason:
            raise Unavailable(self.counter_reason)
        try:
            return {name: Counter(_read_int(zone / "energy_uj"), 1e-6, self._wraps[name])
                    for name, zone in self.domains.items()}
        except (OSError, ValueError) as e:
            raise Unavailable(f"RAPL counter read failed: {e}") from None

    def sample(self) -> dict[str, Any]:
        # Clocks every 10th sample only: reading one file per core at 20 Hz would cost the benchmark CPU time.
        self._ticks += 1
        if not self._freq_files or self._ticks % 10 != 1:
            return {}
        khz = [self.read("cpu_mhz", _read_int, f) for f in self._freq_files]
        khz = [k for k in khz if k is not None]
        return {"cpu_mhz": statistics.fmean(khz) / 1000} if khz else {}

    def begin_window(self) -> None:
        super().begin_window()
        self._ticks = 0
        try:
            self._begin = (time.perf_counter(), *_proc_stat_busy(), _self_jiffies())
        except (OSError, ValueError, IndexError):
            self._begin = None
        if not self._freq_files:
            self.unavailable["cpu_mhz"] = "no cpufreq in sysfs (usual in VMs)"

    def end_window(self) -> dict[str, Any]:
        try:
            if self._begin is None:
                raise OSError("unreadable at the window's start")
            t0, busy0, steal0, self0 = self._begin
            busy1, steal1 = _proc_stat_busy()
            self1 = _self_jiffies()
        except (OSError, ValueError, IndexError) as e:
            self.unavailable["other_cpu_cores"] = f"/proc/stat: {e}"
            return {"other_cpu_cores": None}
        seconds = max(time.perf_counter() - t0, 1e-9)
        others = max(0, (busy1 - busy0) - (self1 - self0)) / self._hz / seconds
        steal = (steal1 - steal0) / self._hz / seconds
        return {"other_cpu_cores": round(others, 3), "steal_cpu_cores": round(steal, 3), "cpu_max_mhz": self._max_mhz}


# The monitor: a sampler thread over a source, and the window's figures.

def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "mean": statistics.fmean(values)}


def _trapezoid(points: list[tuple[float, float]]) -> float:
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(points, points[1:]))


@dataclass
class CounterEnergy:
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

    def __init__(self, device: Any, source: Source, rate_hz: float = DEFAULT_RATE_HZ,
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
            s["counter_error"] = devices.library_reason(e)
        try:
            s.update(self.source.sample())
        except Exception as e:  # noqa: BLE001
            self.source.unavailable.setdefault("sample", devices.library_reason(e))
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
                self._extra = {"unavailable_window": devices.library_reason(e)}

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.source.close()

    def result(self, images: int) -> dict[str, Any]:
        samples = list(self._samples)
        if len(samples) < 2:
            return {"power": devices.unavailable("no timed window was sampled"), "telemetry": None,
                    "flags": {}, "warnings": []}
        return summarize(samples, images, self.source, self.rate_hz, self._extra,
                         sorted(self._others) if self._others_known else None)


def summarize(samples: list[dict[str, Any]], images: int, source: Source, rate_hz: float,
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
        power = devices.unavailable("; ".join(reasons))

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
    if "clock_mhz" in telemetry and _number(clock_max):
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


# Which source for which device.

def _nvml_monitor(device: Any, rate_hz: float) -> Monitor:
    nvml = devices.load_nvml()
    try:
        handle, how = devices.nvml_handle(nvml, device.index)
        parent, is_mig = devices.nvml_parent(nvml, handle)
        source = NvmlSource(nvml, parent, torch_index=device.index, mapped_by=how,
                            mig_handle=handle if is_mig else None)
    except Exception:
        nvml.nvmlShutdown()
        raise
    return SamplingMonitor(device, source, rate_hz)


def _amdsmi_monitor(device: Any, rate_hz: float) -> Monitor:
    smi = devices.load_amdsmi()
    try:
        handle, how = devices.amdsmi_handle(smi, device.index)
        source = AmdsmiSource(smi, handle, torch_index=device.index, mapped_by=how)
    except Exception:
        smi.amdsmi_shut_down()
        raise
    return SamplingMonitor(device, source, rate_hz)


def _cpu_monitor(device: Any, rate_hz: float) -> Monitor:
    return SamplingMonitor(device, CpuSource(), rate_hz)


def _no_source(reason: str) -> Callable[[Any, float], Monitor]:
    return lambda device, rate_hz: Monitor(device, reason)


MONITORS: dict[str, Callable[[Any, float], Monitor]] = {
    "cuda": _nvml_monitor,
    "rocm": _amdsmi_monitor,
    "cpu": _cpu_monitor,
    "xpu": _no_source("no power telemetry for Intel GPUs yet (Level Zero Sysman / xpu-smi is not integrated)"),
    "mps": _no_source("Apple GPU power is only readable through powermetrics, which needs root; not sampled"),
}


def sample_rate() -> float:
    """The sampling rate: `RBENCH_TELEMETRY_HZ` if set to a number >= 0, else 20 Hz."""
    try:
        rate = float(os.environ.get(RATE_ENV, DEFAULT_RATE_HZ))
    except ValueError:
        return DEFAULT_RATE_HZ
    return rate if rate >= 0 else DEFAULT_RATE_HZ


def monitor_for(device: Any, rate_hz: float | None = None) -> Monitor:
    """The telemetry monitor for `device`; one whose source cannot start reports why, never raises."""
    factory = MONITORS.get(device.kind)
    if factory is None:
        return Monitor(device, f"no power telemetry source for {device.kind} devices")
    try:
        return factory(device, sample_rate() if rate_hz is None else rate_hz)
    except devices.LibraryUnavailable as e:
        return Monitor(device, str(e))
    except Exception as e:  # noqa: BLE001 - telemetry must never stop a run
        return Monitor(device, f"{device.kind} telemetry failed to start: {devices.library_reason(e)}")
