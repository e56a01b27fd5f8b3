"""Which device this is, how to synchronise and time on it, its memory counters, and the machine's identity.

One class per vendor family behind one small interface. Every timing path goes through `Device.event()`
and ends with `Device.synchronize()`: a timing that does not synchronise measures the launch queue,
not the work.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import subprocess
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch

import rbench


class HostEvent:
    """A timestamp on the host clock; correct only for devices whose work is done when the call returns."""

    def __init__(self, synchronize: Callable[[], None]):
        self._synchronize = synchronize
        self.t_ns: int | None = None

    def record(self) -> None:
        self._synchronize()
        self.t_ns = time.perf_counter_ns()

    def elapsed_time(self, end: "HostEvent") -> float:
        return (end.t_ns - self.t_ns) / 1e6


class Device:
    """The interface every device family implements. `kind` is what suites' `overrides:` blocks name."""

    kind = "cpu"
    torch_type = "cpu"

    def __init__(self, index: int = 0):
        self.index = index

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.torch_type, self.index) if self.torch_type != "cpu" else torch.device("cpu")

    @property
    def name(self) -> str:
        return cpu_model()

    def synchronize(self) -> None:
        """Wait until all queued work on this device has finished."""

    def event(self) -> Any:
        """A timing event with `.record()` and `.elapsed_time(end) -> ms`, read after `synchronize()`."""
        return HostEvent(self.synchronize)

    def reset_peak_memory(self) -> None:
        _reset_host_peak_rss()

    def peak_memory(self) -> dict[str, int | str]:
        """Peak memory since the last reset: device allocated/reserved bytes, or the host's peak RSS."""
        return host_peak_rss()

    def release_memory(self) -> None:
        """Give cached allocations back so the next case starts clean (after an OOM, say)."""

    def unsupported_precision(self, precision: str) -> str | None:
        """None when this device can run `precision`, else the one-line reason it cannot."""
        if precision == "tf32":
            return f"tf32 is a tensor-core mode of NVIDIA GPUs (compute capability >= 8.0); {self.kind} has none"
        return None

    def describe(self) -> dict[str, Any]:
        """The device's identity for the run file's environment record."""
        return {"kind": self.kind, "name": self.name, "torch_device": str(self.torch_device)}


class CpuDevice(Device):
    kind = "cpu"
    torch_type = "cpu"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "threads": torch.get_num_threads(), "memory_bytes": host_memory_bytes()}


class CudaDevice(Device):
    """NVIDIA GPUs: CUDA events on the current stream."""

    kind = "cuda"
    torch_type = "cuda"

    @cached_property
    def _props(self) -> Any:
        return torch.cuda.get_device_properties(self.index)

    @property
    def name(self) -> str:
        return torch.cuda.get_device_name(self.index)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.index)

    def event(self) -> Any:
        return torch.cuda.Event(enable_timing=True)

    def reset_peak_memory(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.index)

    def peak_memory(self) -> dict[str, int | str]:
        return {"allocated": torch.cuda.max_memory_allocated(self.index),
                "reserved": torch.cuda.max_memory_reserved(self.index), "source": "torch.cuda"}

    def release_memory(self) -> None:
        torch.cuda.empty_cache()

    def unsupported_precision(self, precision: str) -> str | None:
        major, minor = torch.cuda.get_device_capability(self.index)
        if precision in ("tf32", "bf16", "amp_bf16") and major < 8:
            return f"{precision} needs compute capability >= 8.0; {self.name} is {major}.{minor}"
        return None

    def describe(self) -> dict[str, Any]:
        p = self._props
        return {**super().describe(), "memory_bytes": p.total_memory,
                "compute_capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                "count": torch.cuda.device_count()}


class RocmDevice(CudaDevice):
    """AMD GPUs: torch.cuda on HIP, told apart by `torch.version.hip`."""

    kind = "rocm"

    def unsupported_precision(self, precision: str) -> str | None:
        if precision == "tf32":
            return "tf32 is not enabled for ROCm GPUs by PyTorch's allow_tf32 switches"
        if precision in ("bf16", "amp_bf16") and not torch.cuda.is_bf16_supported():
            return f"{precision} is not supported on {self.name}"
        return None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.pop("compute_capability", None)
        d["gfx_arch"] = getattr(self._props, "gcnArchName", "unknown")
        return d


class XpuDevice(Device):
    """Intel GPUs through torch.xpu and its events."""

    kind = "xpu"
    torch_type = "xpu"

    @property
    def name(self) -> str:
        return torch.xpu.get_device_name(self.index)

    def synchronize(self) -> None:
        torch.xpu.synchronize(self.index)

    def event(self) -> Any:
        return torch.xpu.Event(enable_timing=True)

    def reset_peak_memory(self) -> None:
        torch.xpu.reset_peak_memory_stats(self.index)

    def peak_memory(self) -> dict[str, int | str]:
        return {"allocated": torch.xpu.max_memory_allocated(self.index),
                "reserved": torch.xpu.max_memory_reserved(self.index), "source": "torch.xpu"}

    def release_memory(self) -> None:
        torch.xpu.empty_cache()

    def describe(self) -> dict[str, Any]:
        p = torch.xpu.get_device_properties(self.index)
        return {**super().describe(), "memory_bytes": getattr(p, "total_memory", None),
                "count": torch.xpu.device_count()}


class MpsDevice(Device):
    """Apple GPUs: torch.mps has events in recent releases; otherwise synchronise around host time."""

    kind = "mps"
    torch_type = "mps"

    @property
    def name(self) -> str:
        return f"Apple {platform.machine()} GPU (MPS)"

    def synchronize(self) -> None:
        torch.mps.synchronize()

    def event(self) -> Any:
        if hasattr(torch.mps, "Event"):
            return torch.mps.Event(enable_timing=True)
        return HostEvent(self.synchronize)

    def reset_peak_memory(self) -> None:
        _reset_host_peak_rss()

    def peak_memory(self) -> dict[str, int | str]:
        return {"allocated": torch.mps.driver_allocated_memory(), "source": "torch.mps (current, not peak)"}

    def release_memory(self) -> None:
        torch.mps.empty_cache()

    def unsupported_precision(self, precision: str) -> str | None:
        if precision == "tf32":
            return super().unsupported_precision(precision)
        return None


DEVICES: dict[str, type[Device]] = {
    "cuda": CudaDevice, "rocm": RocmDevice, "xpu": XpuDevice, "mps": MpsDevice, "cpu": CpuDevice,
}


def _available(kind: str) -> bool:
    if kind in ("cuda", "rocm"):
        return torch.cuda.is_available() and (torch.version.hip is not None) == (kind == "rocm")
    if kind == "xpu":
        return hasattr(torch, "xpu") and torch.xpu.is_available()
    if kind == "mps":
        return torch.backends.mps.is_available()
    return True


def detect(requested: str = "auto") -> Device:
    """The device a suite asks for (`auto`: the best one present). `cuda` on an AMD build means ROCm."""
    if requested == "auto":
        for kind in ("cuda", "rocm", "xpu", "mps", "cpu"):
            if _available(kind):
                return DEVICES[kind]()
    if requested == "cuda" and torch.version.hip is not None:
        requested = "rocm"
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; known: {', '.join(DEVICES)}")
    if not _available(requested):
        raise RuntimeError(f"device {requested!r} is not available on this machine "
                           f"(available: {', '.join(k for k in DEVICES if _available(k))})")
    return DEVICES[requested]()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _reset_host_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so each case gets its own peak.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def host_peak_rss() -> dict[str, int | str]:
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


def software_versions() -> dict[str, Any]:
    import torchvision

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "rbench": rbench.__version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "triton": triton_version, "cuda": torch.version.cuda,
        "hip": torch.version.hip, "cudnn": cudnn,
    }


def environment(device: Device) -> dict[str, Any]:
    """The machine and software a run was made on; a result without this is not a result."""
    return {
        "rbench_version": rbench.__version__,
        "git": git_state(),
        "software": software_versions(),
        "host": {"hostname": socket.gethostname(), "os": platform.platform(), "kernel": platform.release(),
                 "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "memory_bytes": host_memory_bytes()},
        "device": device.describe(),
    }
