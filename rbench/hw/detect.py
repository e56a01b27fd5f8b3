"""The device registry: `detect()` the device a suite asks for, `monitor_for()` its telemetry, `environment()`.

The only file of `rbench.hw` that imports the vendor files; everything above `hw/` asks here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import rbench
from rbench.hw import amd, apple, host, intel, nvidia
from rbench.hw.base import Device, LibraryUnavailable, Monitor, library_reason, unavailable
from rbench.hw.sampling import sample_rate

DEVICES: dict[str, type[Device]] = {
    "cuda": nvidia.CudaDevice, "rocm": amd.RocmDevice, "xpu": intel.XpuDevice, "mps": apple.MpsDevice,
    "cpu": host.CpuDevice,
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


def environment(device: Device) -> dict[str, Any]:
    """The machine and software a run was made on; a result without this is not a result.

    `device` is the device the run uses, completed with what the management library knows about it
    (UUID, power limit, clocks, ...); `gpus` lists every GPU of its family on the machine and
    `driver` the driver, or says why they could not be read.
    """
    try:
        inventory = device.inventory()
    except Exception as e:  # noqa: BLE001 - identity must never stop a run
        inventory = {"driver": unavailable(library_reason(e)), "gpus": []}
    described = device.describe()
    mine = next((g for g in inventory["gpus"] if g.get("torch_index") == device.index), None)
    if mine is None and inventory["gpus"]:
        described["identity_unavailable"] = "could not tell which of the listed GPUs torch uses"
    for key, value in (mine or {}).items():
        described.setdefault(key, value)
    return {
        "rbench_version": rbench.__version__,
        "git": host.git_state(),
        "software": host.software_versions(),
        "host": host.host_identity(),
        "device": described,
        "driver": inventory["driver"],
        "gpus": inventory["gpus"],
    }


def _no_source(reason: str) -> Callable[[Any, float], Monitor]:
    return lambda device, rate_hz: Monitor(device, reason)


MONITORS: dict[str, Callable[[Any, float], Monitor]] = {
    "cuda": nvidia.monitor,
    "rocm": amd.monitor,
    "cpu": host.monitor,
    "xpu": _no_source(intel.NO_TELEMETRY),
    "mps": _no_source(apple.NO_TELEMETRY),
}


def monitor_for(device: Any, rate_hz: float | None = None) -> Monitor:
    """The telemetry monitor for `device`; one whose source cannot start reports why, never raises."""
    factory = MONITORS.get(device.kind)
    if factory is None:
        return Monitor(device, f"no power telemetry source for {device.kind} devices")
    try:
        return factory(device, sample_rate() if rate_hz is None else rate_hz)
    except LibraryUnavailable as e:
        return Monitor(device, str(e))
    except Exception as e:  # noqa: BLE001 - telemetry must never stop a run
        return Monitor(device, f"{device.kind} telemetry failed to start: {library_reason(e)}")
