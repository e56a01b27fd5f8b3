"""AMD: the ROCm device, amdsmi's inventory of driver and GPUs, and amdsmi power, clock and energy readings.

amdsmi is optional and imported lazily (pip install 'rbench[amd]' or ROCm's own package).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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
    number,
    pci_bus_id,
    shut_down_on_error,
    shut_down_quietly,
    unavailable,
    visible_devices,
)
from rbench.hw.sampling import SamplingMonitor


class RocmDevice(CudaApiDevice):
    """AMD GPUs: torch.cuda on HIP, told apart by `torch.version.hip`; amdsmi for identity and power."""

    kind = "rocm"

    def unsupported_precision(self, precision: str) -> str | None:
        if precision == "tf32":
            return "tf32 is not enabled for ROCm GPUs by PyTorch's allow_tf32 switches"
        if precision in ("bf16", "amp_bf16") and not torch.cuda.is_bf16_supported():
            return f"{precision} is not supported on {self.name}"
        return None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gfx_arch": getattr(self._props, "gcnArchName", None)}

    def gpu_target(self) -> str | None:
        """`gfx942` from HIP's `gcnArchName` (`gfx942:sramecc+:xnack-`): what Triton compiles for."""
        arch = getattr(base.cuda_properties(self.index), "gcnArchName", None)
        return str(arch).split(":")[0] if arch else None

    def inventory(self) -> dict[str, Any]:
        return amdsmi_inventory(range(torch.cuda.device_count()))


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


def amdsmi_handle(smi: Any, torch_index: int) -> tuple[Any, str]:
    """The amdsmi handle of torch's cuda:`torch_index` on ROCm: by PCI bus id, else visible-device order."""
    try:
        bus = pci_bus_id(base.cuda_properties(torch_index), 4)
    except Exception:  # noqa: BLE001
        bus = None
    if bus is not None:
        try:
            return smi.amdsmi_get_processor_handle_from_bdf(bus), "pci_bus_id"
        except Exception:  # noqa: BLE001
            pass
    handles = smi.amdsmi_get_processor_handles()
    visible = visible_devices("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
    if visible and torch_index < len(visible) and visible[torch_index].isdigit():
        return handles[int(visible[torch_index])], "HIP_VISIBLE_DEVICES index"
    return handles[torch_index], "index (assumes HIP and amdsmi enumerate alike)"


def na(v: Any) -> Any:
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
        "name": na(asic.get("market_name")),
        "gfx_arch": na(asic.get("target_graphics_version")),
        "compute_units": na(asic.get("num_compute_units")),
        "uuid": q("uuid", "amdsmi_get_gpu_device_uuid", handle),
        "pci_bus_id": q("pci_bus_id", "amdsmi_get_gpu_device_bdf", handle),
        "memory_bytes": q("memory_bytes", "amdsmi_get_gpu_vram_info", handle,
                          convert=lambda v: na(v.get("vram_size")) and v["vram_size"] * 1024 * 1024),
        "driver_version": q("driver_version", "amdsmi_get_gpu_driver_info", handle,
                            convert=lambda v: na(v.get("driver_version"))),
        "vbios": q("vbios", "amdsmi_get_gpu_vbios_info", handle,
                   convert=lambda v: na(v.get("version", v.get("vbios_version")))),
        # amdsmi_power_cap_info_t is in microwatts.
        "power_limit_w": q("power_limit_w", "amdsmi_get_power_cap_info", handle,
                           convert=lambda v: na(v.get("power_cap")) and v["power_cap"] / 1e6),
        "clocks_mhz": {
            "gfx_max": q("clocks_mhz.gfx_max", "amdsmi_get_clock_info", handle, gfx,
                         convert=lambda v: na(v.get("max_clk"))),
            "mem_max": q("clocks_mhz.mem_max", "amdsmi_get_clock_info", handle, mem,
                         convert=lambda v: na(v.get("max_clk"))),
        },
        "ecc_enabled_blocks": q("ecc", "amdsmi_get_gpu_ecc_enabled", handle),
        "compute_partition": q("compute_partition", "amdsmi_get_gpu_compute_partition", handle),
        "memory_partition": q("memory_partition", "amdsmi_get_gpu_memory_partition", handle),
        "pcie": {"generation": na(static.get("pcie_interface_version")),
                 "width": na(metric.get("pcie_width")), "width_max": na(static.get("max_pcie_width")),
                 "speed_mts": na(metric.get("pcie_speed")), "speed_max_mts": na(static.get("max_pcie_speed"))},
    }
    if q.unavailable:
        gpu["unavailable"] = q.unavailable
    return gpu


def amdsmi_inventory(torch_indices: Iterable[int]) -> dict[str, Any]:
    """The AMD driver and every GPU amdsmi sees; `torch_index` marks those this process can use."""
    return library_inventory(load_amdsmi, "amdsmi_shut_down", lambda smi: _read_inventory(smi, torch_indices))


def _read_inventory(smi: Any, torch_indices: Iterable[int]) -> dict[str, Any]:
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


# Telemetry.


class AmdsmiSource(TelemetrySource):
    """One AMD GPU through amdsmi: energy accumulator, socket power, clocks, temperature, activity."""

    name = "amdsmi"
    counter_label = "amdsmi energy counter (amdsmi_get_energy_count)"
    power_label = "amdsmi power samples (amdsmi_get_power_info)"
    watches_clocks = True
    lists_processes = True

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
                          "name": na(asic.get("market_name")),
                          "uuid": self._once(getattr(smi, "amdsmi_get_gpu_device_uuid", None))}
        self._limits = {"clock_max_mhz": number(gfx.get("max_clk")), "mem_clock_max_mhz": number(mem.get("max_clk")),
                        "power_limit_w": cap["power_cap"] / 1e6 if number(cap.get("power_cap")) else None}

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
        ticks = number(e.get("energy_accumulator", e.get("power")))
        resolution = number(e.get("counter_resolution"))
        if ticks is None or not resolution:
            raise Unavailable(f"amdsmi_get_energy_count returned no counter: {e}")
        return {"gpu": Counter(int(ticks), resolution * 1e-6, 2 ** 64)}

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        info = self.read("power_w", self.smi.amdsmi_get_power_info, self.handle) or {}
        for key, averaging in (("socket_power", 0.0), ("current_socket_power", 0.0), ("average_socket_power", 1.0)):
            watts = number(info.get(key))
            if watts is not None:
                out["power_w"], self.power_averaging_s = float(watts), averaging
                break
        else:
            if info:
                self.unavailable.setdefault("power_w", f"amdsmi_get_power_info gave no power: {info}")
        for key, clk in (("clock_mhz", self._gfx), ("mem_clock_mhz", self._mem)):
            c = self.read(key, self.smi.amdsmi_get_clock_info, self.handle, clk) or {}
            mhz = number(c.get("clk", c.get("cur_clk")))
            if mhz is not None:
                out[key] = mhz
        t = number(self.read("temperature_c", self.smi.amdsmi_get_temp_metric, self.handle, self._sensor,
                              self._metric))
        if t is not None:
            out["temperature_c"] = t
        act = self.read("utilization_pct", self.smi.amdsmi_get_gpu_activity, self.handle) or {}
        for key, src in (("utilization_pct", "gfx_activity"), ("memory_utilization_pct", "umc_activity")):
            if number(act.get(src)) is not None:
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
        shut_down_quietly(self.smi, "amdsmi_shut_down")


def monitor(device: Any, rate_hz: float) -> SamplingMonitor:
    """The amdsmi monitor of `device`; raises LibraryUnavailable when amdsmi cannot start."""
    smi = load_amdsmi()
    with shut_down_on_error(smi, "amdsmi_shut_down"):
        handle, how = amdsmi_handle(smi, device.index)
        source = AmdsmiSource(smi, handle, torch_index=device.index, mapped_by=how)
    return SamplingMonitor(device, source, rate_hz)
