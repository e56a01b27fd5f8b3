"""The host: the CPU device, RAPL energy, /proc and /sys readings, peak RSS, software versions, git state."""

from __future__ import annotations

import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import rbench
from rbench.hw.base import Counter, Device, TelemetrySource, Unavailable
from rbench.hw.sampling import SamplingMonitor

POWERCAP = Path("/sys/class/powercap")
CPUFREQ = Path("/sys/devices/system/cpu")


class CpuDevice(Device):
    """The CPU: host clock (the work is synchronous), the process's peak resident set as its memory."""

    kind = "cpu"
    torch_type = "cpu"

    @property
    def name(self) -> str:
        return cpu_model()

    def reset_peak_memory(self) -> None:
        reset_peak_rss()

    def peak_memory(self) -> dict[str, int | str]:
        return peak_rss()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threads": torch.get_num_threads(), "memory_bytes": memory_bytes()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.machine()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def cpu_physical_cores() -> int | None:
    """Distinct (socket, core) pairs in /proc/cpuinfo; None where it does not say."""
    try:
        pairs, socket_id = set(), None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                socket_id = value.strip()
            elif key.strip() == "core id":
                pairs.add((socket_id, value.strip()))
        return len(pairs) or None
    except OSError:
        return None


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so each case gets its own peak.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss() -> dict[str, int | str]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"host_rss": int(line.split()[1]) * 1024, "source": "/proc/self/status VmHWM"}
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return {"host_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            "source": "getrusage ru_maxrss (process lifetime peak)"}


def git_state() -> dict[str, Any]:
    """The git SHA of the rbench source tree and whether it had uncommitted changes."""
    root = Path(rbench.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    return {"sha": sha or None, "dirty": bool(dirty) if sha else None}


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _rocm_version() -> str | None:
    for path in (os.environ.get("ROCM_PATH", "/opt/rocm"), "/opt/rocm"):
        try:
            return (Path(path) / ".info" / "version").read_text().strip() or None
        except OSError:
            continue
    return None


def software_versions() -> dict[str, Any]:
    """Versions of everything that changes a measurement. On ROCm, torch reports MIOpen as 'cudnn'."""
    import torchvision

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    dnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    hip = torch.version.hip
    return {
        "rbench": rbench.__version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "triton": triton_version, "cuda": torch.version.cuda,
        "cudnn": None if hip else dnn, "hip": hip, "miopen": dnn if hip else None,
        "rocm": _rocm_version() if hip else None, "xpu": getattr(torch.version, "xpu", None),
        "nvidia_ml_py": _distribution_version("nvidia-ml-py"), "amdsmi": _distribution_version("amdsmi"),
        "numpy": _distribution_version("numpy"),
    }


def host_identity() -> dict[str, Any]:
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME")
    except (OSError, AttributeError):
        os_name = None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {"hostname": socket.gethostname(), "os": platform.platform(), "os_release": os_name,
            "kernel": platform.release(), "cpu": cpu_model(), "cpu_cores": os.cpu_count(),
            "cpu_physical_cores": cpu_physical_cores(), "cpu_usable_cores": usable,
            "memory_bytes": memory_bytes()}


# Telemetry: RAPL through the powercap sysfs, clocks and other processes' CPU time through procfs.


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


class CpuSource(TelemetrySource):
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


def monitor(device: Any, rate_hz: float) -> SamplingMonitor:
    """The CPU's monitor: RAPL energy where readable, clocks and other processes' CPU time."""
    return SamplingMonitor(device, CpuSource(), rate_hz)
