"""Stand-ins for `pynvml` and `amdsmi` at the library boundary: the same function names, realistic behaviour.

A fake GPU runs at a set power on a fake clock. Its energy counter is cumulative and monotonic, advances
only every `update_s` (as NVML's does), starts wherever you like (so it can wrap around), and any function
named in `unsupported` raises the library's own "not supported" error. Install one with
`monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(...))`.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@dataclass
class FakeGpu:
    clock: Callable[[], float]
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-8f6c2b1e-0000-4000-8000-000000000001"
    bus_id: str = "00000000:18:00.0"
    power_w: float = 300.0
    reading_scale: float = 1.0  # power readings = power_w * this (to make samples disagree with the counter)
    energy_start: int = 123_456_789  # counter units at clock 0 (mJ for NVML, ticks for amdsmi)
    update_s: float = 0.1
    sm_clock: int = 1980
    sm_clock_max: int = 1980
    mem_clock: int = 2619
    throttle: int = 0
    pids: list[int] = field(default_factory=list)
    mig: bool = False
    unsupported: set[str] = field(default_factory=set)

    def energy_joules(self) -> float:
        # The counter only moves at its update ticks: the energy up to the last one.
        t = math.floor(self.clock() / self.update_s + 1e-9) * self.update_s
        return self.power_w * t


# pynvml

NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION = 3, 4
NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIBRARY_NOT_FOUND = 9, 12


class NVMLError(Exception):
    MESSAGES = {3: "Not Supported", 4: "Insufficient Permissions", 9: "Driver Not Loaded",
                12: "NVML Shared Library Not Found", 13: "Function Not Found"}

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return self.MESSAGES.get(self.value, f"NVML error {self.value}")


@dataclass
class _Handle:
    gpu: FakeGpu
    mig_parent: _Handle | None = None


def fake_nvml(gpus: list[FakeGpu], *, init_error: int | None = None) -> types.ModuleType:
    """A `pynvml` module over `gpus`; `init_error` makes nvmlInit fail with that NVML error code."""
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError
    m.NVML_ERROR_NOT_SUPPORTED, m.NVML_ERROR_NO_PERMISSION = NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION
    m.NVML_ERROR_DRIVER_NOT_LOADED = NVML_ERROR_DRIVER_NOT_LOADED
    m.NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND
    m.NVML_ERROR_FUNCTION_NOT_FOUND = 13
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU, m.NVML_FEATURE_ENABLED = 1, 2, 0, 1
    m.inits = 0
    handles = [_Handle(g) for g in gpus]
    migs = {id(h): _Handle(h.gpu, mig_parent=h) for h in handles if h.gpu.mig}

    def api(fn: Callable[..., Any]) -> Callable[..., Any]:
        """Register `fn` under its name; a GPU that lists the name in `unsupported` raises NOT_SUPPORTED."""
        def wrapper(*args: Any) -> Any:
            handle = args[0] if args and isinstance(args[0], _Handle) else None
            if handle is not None and fn.__name__ in handle.gpu.unsupported:
                raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
            return fn(*args)
        wrapper.__name__ = fn.__name__
        setattr(m, fn.__name__, wrapper)
        return wrapper

    @api
    def nvmlInit() -> None:
        if init_error is not None:
            raise NVMLError(init_error)
        m.inits += 1

    @api
    def nvmlShutdown() -> None:
        m.inits -= 1

    @api
    def nvmlSystemGetDriverVersion() -> str:
        return "550.54.15"

    @api
    def nvmlSystemGetCudaDriverVersion() -> int:
        return 12040

    @api
    def nvmlSystemGetNVMLVersion() -> str:
        return "12.550.54.15"

    @api
    def nvmlDeviceGetCount() -> int:
        return len(handles)

    @api
    def nvmlDeviceGetHandleByIndex(i: int) -> _Handle:
        return handles[i]

    @api
    def nvmlDeviceGetHandleByUUID(uuid: str) -> _Handle:
        for h in handles:
            if h.gpu.uuid == uuid:
                return h
            if h.gpu.mig and "MIG-" + h.gpu.uuid[4:] == uuid:
                return migs[id(h)]
        raise NVMLError(6)  # NOT_FOUND

    @api
    def nvmlDeviceGetHandleByPciBusId(bus: str) -> _Handle:
        for h in handles:
            if h.gpu.bus_id.lower() == bus.lower():
                return h
        raise NVMLError(6)

    @api
    def nvmlDeviceIsMigDeviceHandle(h: _Handle) -> bool:
        return h.mig_parent is not None

    @api
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h: _Handle) -> _Handle:
        return h.mig_parent

    @api
    def nvmlDeviceGetName(h: _Handle) -> bytes:
        return h.gpu.name.encode()  # old pynvml releases return bytes

    @api
    def nvmlDeviceGetUUID(h: _Handle) -> str:
        return h.gpu.uuid if h.mig_parent is None else "MIG-" + h.gpu.uuid[4:]

    @api
    def nvmlDeviceGetPciInfo(h: _Handle) -> Any:
        return types.SimpleNamespace(busId=h.gpu.bus_id)

    @api
    def nvmlDeviceGetMemoryInfo(h: _Handle) -> Any:
        return types.SimpleNamespace(total=80 * 2 ** 30 if h.mig_parent is None else 10 * 2 ** 30, used=0, free=0)

    @api
    def nvmlDeviceGetCudaComputeCapability(h: _Handle) -> tuple[int, int]:
        return (9, 0)

    @api
    def nvmlDeviceGetVbiosVersion(h: _Handle) -> str:
        return "96.00.74.00.01"

    @api
    def nvmlDeviceGetPowerManagementLimit(h: _Handle) -> int:
        return 700_000

    @api
    def nvmlDeviceGetEnforcedPowerLimit(h: _Handle) -> int:
        return 700_000

    @api
    def nvmlDeviceGetPowerManagementDefaultLimit(h: _Handle) -> int:
        return 700_000

    @api
    def nvmlDeviceGetMaxClockInfo(h: _Handle, clock: int) -> int:
        return h.gpu.sm_clock_max if clock == 1 else 2619

    @api
    def nvmlDeviceGetApplicationsClock(h: _Handle, clock: int) -> int:
        return 1755 if clock == 1 else 2619

    @api
    def nvmlDeviceGetDefaultApplicationsClock(h: _Handle, clock: int) -> int:
        return 1755 if clock == 1 else 2619

    @api
    def nvmlDeviceGetClockInfo(h: _Handle, clock: int) -> int:
        return h.gpu.sm_clock if clock == 1 else h.gpu.mem_clock

    @api
    def nvmlDeviceGetEccMode(h: _Handle) -> list[int]:
        return [1, 1]

    @api
    def nvmlDeviceGetMigMode(h: _Handle) -> list[int]:
        return [int(h.gpu.mig), int(h.gpu.mig)]

    @api
    def nvmlDeviceGetMaxMigDeviceCount(h: _Handle) -> int:
        return 7

    @api
    def nvmlDeviceGetMigDeviceHandleByIndex(h: _Handle, i: int) -> _Handle:
        if i == 0 and id(h) in migs:
            return migs[id(h)]
        raise NVMLError(6)

    @api
    def nvmlDeviceGetCurrPcieLinkGeneration(h: _Handle) -> int:
        return 5

    @api
    def nvmlDeviceGetGpuMaxPcieLinkGeneration(h: _Handle) -> int:
        return 5

    @api
    def nvmlDeviceGetCurrPcieLinkWidth(h: _Handle) -> int:
        return 16

    @api
    def nvmlDeviceGetMaxPcieLinkWidth(h: _Handle) -> int:
        return 16

    @api
    def nvmlDeviceGetPersistenceMode(h: _Handle) -> int:
        return 1

    @api
    def nvmlDeviceGetTotalEnergyConsumption(h: _Handle) -> int:
        # An unsigned 64-bit count of millijoules since the driver loaded: it wraps modulo 2**64.
        return (h.gpu.energy_start + round(h.gpu.energy_joules() * 1000)) % 2 ** 64

    @api
    def nvmlDeviceGetPowerUsage(h: _Handle) -> int:
        return round(h.gpu.power_w * h.gpu.reading_scale * 1000)

    @api
    def nvmlDeviceGetTemperature(h: _Handle, sensor: int) -> int:
        return 61

    @api
    def nvmlDeviceGetUtilizationRates(h: _Handle) -> Any:
        if h.mig_parent is None and h.gpu.mig:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return types.SimpleNamespace(gpu=98, memory=71)

    @api
    def nvmlDeviceGetCurrentClocksEventReasons(h: _Handle) -> int:
        return h.gpu.throttle

    @api
    def nvmlDeviceGetComputeRunningProcesses(h: _Handle) -> list[Any]:
        return [types.SimpleNamespace(pid=p, usedGpuMemory=2 ** 30) for p in h.gpu.pids]

    @api
    def nvmlDeviceGetGraphicsRunningProcesses(h: _Handle) -> list[Any]:
        return []

    return m


# amdsmi

class AmdSmiException(Exception):
    pass


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int, info: str = ""):
        super().__init__(f"Error code:\n\t{err_code} | {info or 'AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported'}")
        self.err_code = err_code


def fake_amdsmi(gpus: list[FakeGpu], *, resolution_uj: float = 15.259, legacy_key: bool = False) -> types.ModuleType:
    """An `amdsmi` module over `gpus`: energy in ticks of `resolution_uj` microjoules, power in W."""
    m = types.ModuleType("amdsmi")
    m.AmdSmiException, m.AmdSmiLibraryException = AmdSmiException, AmdSmiLibraryException
    m.AmdSmiClkType = types.SimpleNamespace(SYS=0, GFX=0, DF=1, DCEF=2, SOC=3, MEM=4)
    m.AmdSmiTemperatureType = types.SimpleNamespace(EDGE=0, HOTSPOT=1, JUNCTION=1, VRAM=2)
    m.AmdSmiTemperatureMetric = types.SimpleNamespace(CURRENT=0)
    m.inits = 0
    handles = [object() for _ in gpus]
    gpu_of = {id(h): g for h, g in zip(handles, gpus)}

    def api(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            gpu = gpu_of.get(id(args[0])) if args else None
            if gpu is not None and fn.__name__ in gpu.unsupported:
                raise AmdSmiLibraryException(2)
            return fn(*args)
        wrapper.__name__ = fn.__name__
        setattr(m, fn.__name__, wrapper)
        return wrapper

    @api
    def amdsmi_init(flags: int = 2) -> None:
        m.inits += 1

    @api
    def amdsmi_shut_down() -> None:
        m.inits -= 1

    @api
    def amdsmi_get_processor_handles() -> list[Any]:
        return list(handles)

    @api
    def amdsmi_get_processor_handle_from_bdf(bdf: str) -> Any:
        for h, g in zip(handles, gpus):
            if "0000" + g.bus_id[8:].lower() == bdf.lower():
                return h
        raise AmdSmiLibraryException(3, "AMDSMI_STATUS_INVAL")

    @api
    def amdsmi_get_gpu_device_bdf(h: Any) -> str:
        return "0000" + gpu_of[id(h)].bus_id[8:]

    @api
    def amdsmi_get_gpu_device_uuid(h: Any) -> str:
        return gpu_of[id(h)].uuid

    @api
    def amdsmi_get_gpu_asic_info(h: Any) -> dict[str, Any]:
        return {"market_name": gpu_of[id(h)].name, "vendor_id": "0x1002", "device_id": "0x74a1",
                "target_graphics_version": "gfx942", "num_compute_units": 304, "asic_serial": "N/A"}

    @api
    def amdsmi_get_gpu_vram_info(h: Any) -> dict[str, Any]:
        return {"vram_type": "HBM3", "vram_size": 196592}

    @api
    def amdsmi_get_gpu_driver_info(h: Any) -> dict[str, Any]:
        return {"driver_name": "amdgpu", "driver_version": "6.8.5", "driver_date": "2015/01/01 00:00"}

    @api
    def amdsmi_get_gpu_vbios_info(h: Any) -> dict[str, Any]:
        return {"name": "AMD MI300X", "version": "113-M3000100-102", "build_date": "N/A", "part_number": "N/A"}

    @api
    def amdsmi_get_power_cap_info(h: Any) -> dict[str, Any]:
        return {"power_cap": 750_000_000, "default_power_cap": 750_000_000, "dpm_cap": 0,
                "min_power_cap": 0, "max_power_cap": 750_000_000}

    @api
    def amdsmi_get_clock_info(h: Any, clk: int) -> dict[str, Any]:
        g = gpu_of[id(h)]
        if clk == m.AmdSmiClkType.MEM:
            return {"clk": 1300, "min_clk": 900, "max_clk": 1300, "clk_locked": "N/A", "clk_deep_sleep": "N/A"}
        return {"clk": g.sm_clock, "min_clk": 500, "max_clk": g.sm_clock_max, "clk_locked": False,
                "clk_deep_sleep": "N/A"}

    @api
    def amdsmi_get_gpu_ecc_enabled(h: Any) -> int:
        return 0x3FFF

    @api
    def amdsmi_get_gpu_compute_partition(h: Any) -> str:
        return "SPX"

    @api
    def amdsmi_get_gpu_memory_partition(h: Any) -> str:
        return "NPS1"

    @api
    def amdsmi_get_pcie_info(h: Any) -> dict[str, Any]:
        return {"pcie_static": {"max_pcie_width": 16, "max_pcie_speed": 32000, "pcie_interface_version": 5},
                "pcie_metric": {"pcie_width": 16, "pcie_speed": 32000}}

    @api
    def amdsmi_get_energy_count(h: Any) -> dict[str, Any]:
        g = gpu_of[id(h)]
        ticks = (g.energy_start + int(g.energy_joules() * 1e6 / resolution_uj)) % 2 ** 64
        return {"power" if legacy_key else "energy_accumulator": ticks, "counter_resolution": resolution_uj,
                "timestamp": int(g.clock() * 1e9)}

    @api
    def amdsmi_get_power_info(h: Any) -> dict[str, Any]:
        g = gpu_of[id(h)]
        return {"current_socket_power": round(g.power_w * g.reading_scale), "average_socket_power": "N/A",
                "gfx_voltage": "N/A", "soc_voltage": "N/A", "mem_voltage": "N/A", "power_limit": 750}

    @api
    def amdsmi_get_temp_metric(h: Any, sensor: int, metric: int) -> int:
        return 58

    @api
    def amdsmi_get_gpu_activity(h: Any) -> dict[str, Any]:
        return {"gfx_activity": 97, "umc_activity": 40, "mm_activity": "N/A"}

    @api
    def amdsmi_get_gpu_process_list(h: Any) -> list[dict[str, Any]]:
        return [{"name": "python", "pid": p} for p in gpu_of[id(h)].pids]

    return m
