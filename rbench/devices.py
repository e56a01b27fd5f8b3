"""Which device this is, how to synchronise and time on it, its memory counters, and the machine's identity.

One class per vendor family behind one small interface. Every timing path goes through `Device.event()`
and ends with `Device.synchronize()`: a timing that does not synchronise measures the launch queue,
not the work.

The machine's identity (`environment()`) also asks the vendors' management libraries — NVML through
`pynvml` for NVIDIA, `amdsmi` for AMD — for what torch does not know: driver, UUID, power limit, clocks,
ECC, MIG and PCIe link. Both libraries are optional and imported lazily; a field that cannot be read is
left None and its reason recorded under `unavailable`, never guessed and never 0.
`rbench.telemetry` uses the same loaders and GPU lookup (`load_nvml`, `nvml_handle`, ...).
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
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

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

    def time_ms(self, fn: Callable[[], Any]) -> float:
        """Run `fn()` once between two events and return its time in ms, after synchronising."""
        start, end = self.event(), self.event()
        start.record()
        fn()
        end.record()
        self.synchronize()
        return start.elapsed_time(end)

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

    def inventory(self) -> dict[str, Any]:
        """`{"driver": {...}, "gpus": [...]}`: the driver and every GPU of this family on the machine."""
        return {"driver": unavailable(f"no GPU driver queried for {self.kind} runs"), "gpus": []}


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
        return {**super().describe(), "index": self.index, "memory_bytes": p.total_memory,
                "compute_capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                "count": torch.cuda.device_count()}

    def inventory(self) -> dict[str, Any]:
        return nvml_inventory(range(torch.cuda.device_count()))


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
        d["gfx_arch"] = getattr(self._props, "gcnArchName", None)
        return d

    def inventory(self) -> dict[str, Any]:
        return amdsmi_inventory(range(torch.cuda.device_count()))


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
        return {**super().describe(), "index": self.index, **_xpu_properties(self.index),
                "count": torch.xpu.device_count()}

    def inventory(self) -> dict[str, Any]:
        gpus = [{"torch_index": i, "name": torch.xpu.get_device_name(i), **_xpu_properties(i)}
                for i in range(torch.xpu.device_count())]
        drivers = {g.get("driver_version") for g in gpus} - {None}
        driver = ({"source": "torch.xpu", "version": ", ".join(sorted(drivers))} if drivers
                  else unavailable("torch.xpu does not report the driver version"))
        return {"driver": driver, "gpus": gpus}


class MpsDevice(Device):
    """Apple GPUs: torch.mps has events in recent releases; otherwise synchronise around host time."""

    kind = "mps"
    torch_type = "mps"

    @property
    def name(self) -> str:
        return f"{cpu_model()} GPU (MPS)"

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

    def inventory(self) -> dict[str, Any]:
        return {"driver": {"source": "macOS", "version": platform.mac_ver()[0] or None},
                "gpus": [{"torch_index": 0, "name": self.name, "memory_bytes": host_memory_bytes(),
                          "unified_memory": True}]}


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


def _xpu_properties(index: int) -> dict[str, Any]:
    p = torch.xpu.get_device_properties(index)
    fields = {"memory_bytes": "total_memory", "driver_version": "driver_version", "vendor": "vendor",
              "platform": "platform_name", "execution_units": "gpu_eu_count", "compute_units": "max_compute_units"}
    return {k: getattr(p, attr, None) for k, attr in fields.items()}


# Vendor management libraries: NVML (pynvml) and amdsmi, both optional.

class LibraryUnavailable(Exception):
    """A management library cannot be used on this machine; the message says why."""


def unavailable(reason: str) -> dict[str, Any]:
    return {"unavailable": True, "reason": reason}


def text(value: Any) -> Any:
    """Old pynvml releases return bytes where new ones return str."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


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
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


def library_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")[:200]


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


def load_amdsmi() -> Any:
    """The `amdsmi` module, initialised; the caller calls `amdsmi_shut_down()` when done."""
    try:
        import amdsmi
    except ImportError as e:
        raise LibraryUnavailable(f"amdsmi is not installed (pip install 'rbench[amd]' or ROCm's own): {e}") from None
    try:
        amdsmi.amdsmi_init()
    except Exception as e:  # noqa: BLE001
        raise LibraryUnavailable(f"amdsmi: {library_reason(e)}") from None
    return amdsmi


class Query:
    """Calls a library function by name for one field; a failure leaves None and records why."""

    def __init__(self, module: Any, reason: Callable[[BaseException], str]):
        self.module = module
        self.reason = reason
        self.unavailable: dict[str, str] = {}

    def __call__(self, field: str, function: str, *args: Any, convert: Callable[[Any], Any] = text) -> Any:
        fn = getattr(self.module, function, None)
        if fn is None:
            self.unavailable[field] = f"{function} is not in this {getattr(self.module, '__name__', 'library')}"
            return None
        try:
            return convert(fn(*args))
        except Exception as e:  # noqa: BLE001 - one unreadable field must not hide the others
            self.unavailable[field] = f"{function}: {self.reason(e)}"
            return None


def _cuda_properties(index: int) -> Any:
    return torch.cuda.get_device_properties(index)


def _visible_devices(*names: str) -> list[str] | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return [v.strip() for v in value.split(",") if v.strip()]
    return None


def _bus_id(props: Any, domain_digits: int) -> str | None:
    bus = getattr(props, "pci_bus_id", None)
    if bus is None:
        return None
    return (f"{getattr(props, 'pci_domain_id', 0):0{domain_digits}x}:{bus:02x}:"
            f"{getattr(props, 'pci_device_id', 0):02x}.0")


def nvml_handle(nvml: Any, torch_index: int) -> tuple[Any, str]:
    """The NVML handle of torch's cuda:`torch_index`, and how it was found.

    torch and NVML number GPUs differently (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), so match the
    UUID, then the PCI bus id, then CUDA_VISIBLE_DEVICES; the plain index is the last resort.
    """
    try:
        props = _cuda_properties(torch_index)
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
    bus = _bus_id(props, 8)
    if bus is not None:
        try:
            return nvml.nvmlDeviceGetHandleByPciBusId(bus), "pci_bus_id"
        except Exception:  # noqa: BLE001
            pass
    visible = _visible_devices("CUDA_VISIBLE_DEVICES")
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
    try:
        nvml = load_nvml()
    except LibraryUnavailable as e:
        return {"driver": unavailable(str(e)), "gpus": []}
    try:
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
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def amdsmi_handle(smi: Any, torch_index: int) -> tuple[Any, str]:
    """The amdsmi handle of torch's cuda:`torch_index` on ROCm: by PCI bus id, else visible-device order."""
    try:
        bus = _bus_id(_cuda_properties(torch_index), 4)
    except Exception:  # noqa: BLE001
        bus = None
    if bus is not None:
        try:
            return smi.amdsmi_get_processor_handle_from_bdf(bus), "pci_bus_id"
        except Exception:  # noqa: BLE001
            pass
    handles = smi.amdsmi_get_processor_handles()
    visible = _visible_devices("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
    if visible and torch_index < len(visible) and visible[torch_index].isdigit():
        return handles[int(visible[torch_index])], "HIP_VISIBLE_DEVICES index"
    return handles[torch_index], "index (assumes HIP and amdsmi enumerate alike)"


def _na(v: Any) -> Any:
    """amdsmi writes "N/A" where a value is not available."""
    return None if v in ("N/A", "NA", None) else v


def amdsmi_gpu(smi: Any, handle: Any) -> dict[str, Any]:
    """One AMD GPU's identity: model, gfx arch, UUID, memory, driver, power cap, clocks, ECC, partition, PCIe."""
    q = Query(smi, library_reason)
    asic = q("asic", "amdsmi_get_gpu_asic_info", handle, convert=dict) or {}
    pcie = q("pcie", "amdsmi_get_pcie_info", handle, convert=dict) or {}
    static, metric = pcie.get("pcie_static", {}), pcie.get("pcie_metric", {})
    clk = getattr(smi, "AmdSmiClkType", None)
    gfx, mem = getattr(clk, "GFX", None), getattr(clk, "MEM", None)
    gpu: dict[str, Any] = {
        "name": _na(asic.get("market_name")),
        "gfx_arch": _na(asic.get("target_graphics_version")),
        "compute_units": _na(asic.get("num_compute_units")),
        "uuid": q("uuid", "amdsmi_get_gpu_device_uuid", handle),
        "pci_bus_id": q("pci_bus_id", "amdsmi_get_gpu_device_bdf", handle),
        "memory_bytes": q("memory_bytes", "amdsmi_get_gpu_vram_info", handle,
                          convert=lambda v: _na(v.get("vram_size")) and v["vram_size"] * 1024 * 1024),
        "driver_version": q("driver_version", "amdsmi_get_gpu_driver_info", handle,
                            convert=lambda v: _na(v.get("driver_version"))),
        "vbios": q("vbios", "amdsmi_get_gpu_vbios_info", handle,
                   convert=lambda v: _na(v.get("version", v.get("vbios_version")))),
        # amdsmi_power_cap_info_t is in microwatts.
        "power_limit_w": q("power_limit_w", "amdsmi_get_power_cap_info", handle,
                           convert=lambda v: _na(v.get("power_cap")) and v["power_cap"] / 1e6),
        "clocks_mhz": {
            "gfx_max": q("clocks_mhz.gfx_max", "amdsmi_get_clock_info", handle, gfx,
                         convert=lambda v: _na(v.get("max_clk"))),
            "mem_max": q("clocks_mhz.mem_max", "amdsmi_get_clock_info", handle, mem,
                         convert=lambda v: _na(v.get("max_clk"))),
        },
        "ecc_enabled_blocks": q("ecc", "amdsmi_get_gpu_ecc_enabled", handle),
        "compute_partition": q("compute_partition", "amdsmi_get_gpu_compute_partition", handle),
        "memory_partition": q("memory_partition", "amdsmi_get_gpu_memory_partition", handle),
        "pcie": {"generation": _na(static.get("pcie_interface_version")),
                 "width": _na(metric.get("pcie_width")), "width_max": _na(static.get("max_pcie_width")),
                 "speed_mts": _na(metric.get("pcie_speed")), "speed_max_mts": _na(static.get("max_pcie_speed"))},
    }
    if q.unavailable:
        gpu["unavailable"] = q.unavailable
    return gpu


def amdsmi_inventory(torch_indices: Iterable[int]) -> dict[str, Any]:
    """The AMD driver and every GPU amdsmi sees; `torch_index` marks those this process can use."""
    try:
        smi = load_amdsmi()
    except LibraryUnavailable as e:
        return {"driver": unavailable(str(e)), "gpus": []}
    try:
        try:
            handles = list(smi.amdsmi_get_processor_handles())
        except Exception as e:  # noqa: BLE001
            return {"driver": unavailable(f"amdsmi_get_processor_handles: {library_reason(e)}"), "gpus": []}
        gpus = [{"amdsmi_index": i, **amdsmi_gpu(smi, h)} for i, h in enumerate(handles)]
        for t in torch_indices:
            try:
                handle, how = amdsmi_handle(smi, t)
                bdf = smi.amdsmi_get_gpu_device_bdf(handle)
            except Exception:  # noqa: BLE001
                continue
            for g in gpus:
                if g.get("pci_bus_id") == bdf:
                    g.update(torch_index=t, mapped_by=how)
        versions = {g.get("driver_version") for g in gpus} - {None}
        driver = {"source": "amdsmi", "version": ", ".join(sorted(versions)) or None}
        return {"driver": driver, "gpus": gpus}
    finally:
        try:
            smi.amdsmi_shut_down()
        except Exception:  # noqa: BLE001
            pass


# The host and the software.

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
            "memory_bytes": host_memory_bytes()}


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
        "git": git_state(),
        "software": software_versions(),
        "host": host_identity(),
        "device": described,
        "driver": inventory["driver"],
        "gpus": inventory["gpus"],
    }
