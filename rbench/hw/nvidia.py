"""NVIDIA: the CUDA device, NVML's inventory of driver and GPUs, and NVML power, clock and energy readings.

NVML comes through `pynvml` (nvidia-ml-py), optional and imported lazily. torch and NVML number GPUs
differently, so the GPU torch uses is matched by UUID, PCI bus id, then CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import torch

from rbench.hw import base
from rbench.hw.base import (
    Counter,
    CudaApiDevice,
    LibraryUnavailable,
    Query,
    TelemetrySource,
    Unavailable,
    library_inventory,
    library_reason,
    pci_bus_id,
    shut_down_on_error,
    shut_down_quietly,
    text,
    unavailable,
    visible_devices,
)
from rbench.hw.sampling import SamplingMonitor


class CudaDevice(CudaApiDevice):
    """NVIDIA GPUs: CUDA events on the current stream; NVML for the identity and power."""

    kind = "cuda"

    def unsupported_precision(self, precision: str) -> str | None:
        major, minor = torch.cuda.get_device_capability(self.index)
        if precision in ("tf32", "bf16", "amp_bf16") and major < 8:
            return f"{precision} needs compute capability >= 8.0; {self.name} is {major}.{minor}"
        return None

    def describe(self) -> dict[str, Any]:
        p = self._props
        return {**super().describe(), "compute_capability": f"{p.major}.{p.minor}"}

    def gpu_target(self) -> str:
        p = base.cuda_properties(self.index)
        return f"sm_{p.major}{p.minor}"

    def inventory(self) -> dict[str, Any]:
        return nvml_inventory(range(torch.cuda.device_count()))


def nvml_reason(nvml: Any, exc: BaseException) -> str:
    """A one-line, human reason for an NVML failure (the error codes users actually meet named)."""
    known = {
        getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", 3): "not supported by this GPU or driver",
        getattr(nvml, "NVML_ERROR_NO_PERMISSION", 4): "no permission (NVML_ERROR_NO_PERMISSION)",
        getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", 9): "the NVIDIA driver is not loaded",
        getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", 12): "libnvidia-ml.so not found (no NVIDIA driver installed)",
        getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13): "not in this driver's NVML (driver too old)",
        getattr(nvml, "NVML_ERROR_GPU_IS_LOST", 15): "the GPU is lost (fell off the bus)",
    }
    value = getattr(exc, "value", None)
    if value in known:
        return known[value]
    return library_reason(exc)


def load_nvml() -> Any:
    """The `pynvml` module, initialised; the caller calls `nvmlShutdown()` when done.

    Raises LibraryUnavailable with the reason when it is not installed or NVML cannot start.
    """
    try:
        import pynvml
    except ImportError as e:
        raise LibraryUnavailable(f"pynvml (nvidia-ml-py) is not installed: {e}") from None
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - any failure to start is a reason, not a crash
        raise LibraryUnavailable(f"NVML: {nvml_reason(pynvml, e)}") from None
    return pynvml


def nvml_handle(nvml: Any, torch_index: int) -> tuple[Any, str]:
    """The NVML handle of torch's cuda:`torch_index`, and how it was found.

    torch and NVML number GPUs differently (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), so match the
    UUID, then the PCI bus id, then CUDA_VISIBLE_DEVICES; the plain index is the last resort.
    """
    try:
        props = base.cuda_properties(torch_index)
    except Exception:  # noqa: BLE001
        props = None
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        u = str(uuid)
        for candidate in (u, f"GPU-{u}", f"MIG-{u}"):
            try:
                return nvml.nvmlDeviceGetHandleByUUID(candidate), "uuid"
            except Exception:  # noqa: BLE001 - try the next form
                pass
    bus = pci_bus_id(props, 8)
    if bus is not None:
        try:
            return nvml.nvmlDeviceGetHandleByPciBusId(bus), "pci_bus_id"
        except Exception:  # noqa: BLE001
            pass
    visible = visible_devices("CUDA_VISIBLE_DEVICES")
    if visible and torch_index < len(visible):
        entry = visible[torch_index]
        if entry.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(entry)), "CUDA_VISIBLE_DEVICES index"
        return nvml.nvmlDeviceGetHandleByUUID(entry), "CUDA_VISIBLE_DEVICES uuid"
    return nvml.nvmlDeviceGetHandleByIndex(torch_index), "index (assumes CUDA and NVML enumerate alike)"


def nvml_parent(nvml: Any, handle: Any) -> tuple[Any, bool]:
    """(the physical GPU's handle, whether `handle` was a MIG instance). Power is only per physical GPU."""
    try:
        if nvml.nvmlDeviceIsMigDeviceHandle(handle):
            return nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle), True
    except Exception:  # noqa: BLE001 - old drivers: no MIG
        pass
    return handle, False


def _milliwatts(v: Any) -> float:
    return v / 1000.0


def _enabled(nvml: Any) -> Callable[[Any], dict[str, bool]]:
    on = getattr(nvml, "NVML_FEATURE_ENABLED", 1)
    return lambda pair: {"current": pair[0] == on, "pending": pair[1] == on}


def nvml_gpu(nvml: Any, handle: Any) -> dict[str, Any]:
    """One NVIDIA GPU's identity: model, UUID, memory, power limit, clocks, ECC, MIG and PCIe link."""
    q = Query(nvml, lambda e: nvml_reason(nvml, e))
    sm, mem = getattr(nvml, "NVML_CLOCK_SM", 1), getattr(nvml, "NVML_CLOCK_MEM", 2)
    cc = q("compute_capability", "nvmlDeviceGetCudaComputeCapability", handle, convert=lambda v: f"{v[0]}.{v[1]}")
    gpu: dict[str, Any] = {
        "name": q("name", "nvmlDeviceGetName", handle),
        "uuid": q("uuid", "nvmlDeviceGetUUID", handle),
        "pci_bus_id": q("pci_bus_id", "nvmlDeviceGetPciInfo", handle, convert=lambda p: text(p.busId)),
        "memory_bytes": q("memory_bytes", "nvmlDeviceGetMemoryInfo", handle, convert=lambda m: m.total),
        "compute_capability": cc,
        "vbios": q("vbios", "nvmlDeviceGetVbiosVersion", handle),
        "power_limit_w": q("power_limit_w", "nvmlDeviceGetPowerManagementLimit", handle, convert=_milliwatts),
        "enforced_power_limit_w": q("enforced_power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", handle,
                                    convert=_milliwatts),
        "default_power_limit_w": q("default_power_limit_w", "nvmlDeviceGetPowerManagementDefaultLimit", handle,
                                   convert=_milliwatts),
        "clocks_mhz": {
            "sm_max": q("clocks_mhz.sm_max", "nvmlDeviceGetMaxClockInfo", handle, sm),
            "mem_max": q("clocks_mhz.mem_max", "nvmlDeviceGetMaxClockInfo", handle, mem),
            "sm_application": q("clocks_mhz.sm_application", "nvmlDeviceGetApplicationsClock", handle, sm),
            "mem_application": q("clocks_mhz.mem_application", "nvmlDeviceGetApplicationsClock", handle, mem),
            "sm_default_application": q("clocks_mhz.sm_default_application",
                                        "nvmlDeviceGetDefaultApplicationsClock", handle, sm),
        },
        "ecc": q("ecc", "nvmlDeviceGetEccMode", handle, convert=_enabled(nvml)),
        "mig": q("mig", "nvmlDeviceGetMigMode", handle, convert=_enabled(nvml)),
        "pcie": {
            "generation": q("pcie.generation", "nvmlDeviceGetCurrPcieLinkGeneration", handle),
            "generation_max": q("pcie.generation_max", "nvmlDeviceGetGpuMaxPcieLinkGeneration", handle),
            "width": q("pcie.width", "nvmlDeviceGetCurrPcieLinkWidth", handle),
            "width_max": q("pcie.width_max", "nvmlDeviceGetMaxPcieLinkWidth", handle),
        },
        "persistence_mode": q("persistence_mode", "nvmlDeviceGetPersistenceMode", handle,
                              convert=lambda v: v == getattr(nvml, "NVML_FEATURE_ENABLED", 1)),
    }
    if gpu["mig"] and gpu["mig"]["current"]:
        gpu["mig"]["instances"] = _mig_instances(nvml, handle, q)
    if q.unavailable:
        gpu["unavailable"] = q.unavailable
    return gpu


def _mig_instances(nvml: Any, handle: Any, q: Query) -> list[dict[str, Any]]:
    instances = []
    for i in range(q("mig.max_instances", "nvmlDeviceGetMaxMigDeviceCount", handle, convert=int) or 0):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
        except Exception:  # noqa: BLE001 - NOT_FOUND for empty slots
            continue
        instances.append({"uuid": q(f"mig.{i}.uuid", "nvmlDeviceGetUUID", mig),
                          "memory_bytes": q(f"mig.{i}.memory", "nvmlDeviceGetMemoryInfo", mig,
                                            convert=lambda m: m.total)})
    return instances


def _cuda_version(v: Any) -> str | None:
    return f"{v // 1000}.{v % 1000 // 10}" if isinstance(v, int) else None


def nvml_inventory(torch_indices: Iterable[int]) -> dict[str, Any]:
    """The NVIDIA driver and every GPU NVML sees; `torch_index` marks those this process can use."""
    return library_inventory(load_nvml, "nvmlShutdown", lambda nvml: _read_inventory(nvml, torch_indices))


def _read_inventory(nvml: Any, torch_indices: Iterable[int]) -> dict[str, Any]:
    q = Query(nvml, lambda e: nvml_reason(nvml, e))
    driver = {"source": "nvml", "version": q("version", "nvmlSystemGetDriverVersion"),
              "cuda_driver": q("cuda_driver", "nvmlSystemGetCudaDriverVersion", convert=_cuda_version),
              "nvml": q("nvml", "nvmlSystemGetNVMLVersion")}
    if q.unavailable:
        driver["unavailable"] = q.unavailable
    gpus = []
    for i in range(q("count", "nvmlDeviceGetCount", convert=int) or 0):
        try:
            gpus.append({"nvml_index": i, **nvml_gpu(nvml, nvml.nvmlDeviceGetHandleByIndex(i))})
        except Exception as e:  # noqa: BLE001
            gpus.append({"nvml_index": i, **unavailable(nvml_reason(nvml, e))})
    for t in torch_indices:
        try:
            handle, how = nvml_handle(nvml, t)
            uuid = text(nvml.nvmlDeviceGetUUID(nvml_parent(nvml, handle)[0]))
        except Exception:  # noqa: BLE001 - unmapped: no torch_index on any entry
            continue
        for g in gpus:
            if g.get("uuid") == uuid:
                g.update(torch_index=t, mapped_by=how)
    return {"driver": driver, "gpus": gpus}


# Telemetry.

# Bits of nvmlDeviceGetCurrentClocksEventReasons (formerly ...ThrottleReasons); stable across NVML versions.
NVML_CLOCK_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
# Slowdowns that mean something is wrong with the GPU's cooling or power delivery: warned.
NVML_THROTTLING = frozenset({"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"})
# The GPU holding its power limit: normal at large batch on a big GPU (an H100 at 700 W), so information.
NVML_POWER_CAP = frozenset({"sw_power_cap"})


def clock_reason_names(mask: int, table: dict[int, str] = NVML_CLOCK_REASONS) -> list[str]:
    return [name for bit, name in table.items() if mask & bit]


class NvmlSource(TelemetrySource):
    """One NVIDIA GPU through NVML. With MIG, `handle` is the physical GPU: power is only per GPU."""

    name = "nvml"
    counter_label = "nvml energy counter (nvmlDeviceGetTotalEnergyConsumption)"
    power_label = "nvml power samples (nvmlDeviceGetPowerUsage)"
    power_averaging_s = 1.0
    throttling = NVML_THROTTLING
    power_capping = NVML_POWER_CAP
    watches_clocks = True
    clock_references = ("application_clock_mhz", "clock_max_mhz")
    lists_processes = True

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
            value = text(fn(*args))
        except Exception:  # noqa: BLE001 - an identity field we cannot read stays None
            return None
        return value * scale if scale is not None and value is not None else value

    def reason(self, exc: BaseException) -> str:
        return nvml_reason(self.nvml, exc)

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
        shut_down_quietly(self.nvml, "nvmlShutdown")


def monitor(device: Any, rate_hz: float) -> SamplingMonitor:
    """The NVML monitor of `device`; raises LibraryUnavailable when NVML cannot start."""
    nvml = load_nvml()
    with shut_down_on_error(nvml, "nvmlShutdown"):
        handle, how = nvml_handle(nvml, device.index)
        parent, is_mig = nvml_parent(nvml, handle)
        source = NvmlSource(nvml, parent, torch_index=device.index, mapped_by=how,
                            mig_handle=handle if is_mig else None)
    return SamplingMonitor(device, source, rate_hz)
