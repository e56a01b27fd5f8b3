"""Devices: every family synchronises its own way (proved with fake devices whose work only finishes on
synchronise), peak memory, detection, and the machine's identity from NVML and amdsmi stand-ins."""

from __future__ import annotations

import sys
import time
import types

import pytest
import torch
from fake_smi import FakeClock, FakeGpu, fake_amdsmi, fake_nvml

from rbench.hw import amd, apple, base, detect, host, intel, nvidia
from rbench.run import measure
from rbench.spec import Policy


class Stream:
    """A device queue: launched work and recorded events only happen when `synchronize()` drains it."""

    def __init__(self, host: FakeClock | None = None, sleep: bool = False):
        self.device_ms = 0.0
        self.queue: list = []
        self.host = host
        self.sleep = sleep
        self.syncs: list = []

    def launch(self, ms: float) -> None:
        self.queue.append(ms)

    def synchronize(self, index=None) -> None:
        self.syncs.append(index)
        for item in self.queue:
            if isinstance(item, StreamEvent):
                item.t, item.done = self.device_ms, True
                continue
            self.device_ms += item
            if self.host is not None:
                self.host.advance(item / 1e3)
            if self.sleep:
                time.sleep(item / 1e3)
        self.queue.clear()

    def Event(self, enable_timing: bool = False) -> StreamEvent:  # noqa: N802 - torch's spelling
        assert enable_timing, "timing events must be created with enable_timing=True"
        return StreamEvent(self)


class StreamEvent:
    def __init__(self, stream: Stream):
        self.stream, self.done, self.t = stream, False, None

    def record(self) -> None:
        self.done = False
        self.stream.queue.append(self)

    def elapsed_time(self, end: StreamEvent) -> float:
        if not (self.done and end.done):
            raise RuntimeError("event has not completed: synchronize before reading it")
        return end.t - self.t


class QueueDevice(base.Device):
    """A `Device` over a `Stream`, for measure.run."""

    def __init__(self):
        super().__init__()
        self.host = FakeClock(0.0)
        self.stream = Stream(self.host)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def event(self):
        return self.stream.Event(enable_timing=True)


def test_the_fake_stream_catches_a_timing_that_does_not_synchronise():
    s = Stream()
    start, end = s.Event(True), s.Event(True)
    start.record()
    s.launch(5.0)
    end.record()
    with pytest.raises(RuntimeError, match="synchronize"):
        start.elapsed_time(end)
    s.synchronize()
    assert start.elapsed_time(end) == 5.0


def test_measure_run_counts_only_finished_work():
    dev = QueueDevice()
    timing = measure.run(lambda i: dev.stream.launch(5.0), dev,
                         Policy(warmup_iters=3, warmup_s=0.0, min_iters=4, min_s=0.1, max_s=5.0), clock=dev.host)
    assert timing.samples_ms == pytest.approx([5.0] * timing.iters)
    assert timing.iters == 20  # planned from the synchronised warm-up: 0.1 s / 5 ms
    assert timing.window_s == pytest.approx(timing.iters * 5e-3)
    assert dev.stream.queue == []


def install_backend(monkeypatch, module, stream, event=True):
    monkeypatch.setattr(module, "synchronize", stream.synchronize, raising=False)
    if event:
        monkeypatch.setattr(module, "Event", stream.Event, raising=False)
    else:
        monkeypatch.delattr(module, "Event", raising=False)


@pytest.mark.parametrize("cls, module, index", [
    (nvidia.CudaDevice, torch.cuda, 1),
    (amd.RocmDevice, torch.cuda, 0),
    (intel.XpuDevice, torch.xpu, 2),
    (apple.MpsDevice, torch.mps, None),  # torch.mps.synchronize() takes no index
])
def test_each_family_synchronises_its_own_way(monkeypatch, cls, module, index):
    stream = Stream()
    install_backend(monkeypatch, module, stream)
    device = cls(index or 0)
    assert device.time_ms(lambda: stream.launch(7.0)) == 7.0
    assert stream.syncs == [index]
    stream.syncs.clear()
    device.synchronize()
    assert stream.syncs == [index]


def test_mps_without_events_times_on_the_host_around_synchronise(monkeypatch):
    stream = Stream(sleep=True)
    install_backend(monkeypatch, torch.mps, stream, event=False)
    device = apple.MpsDevice()
    assert isinstance(device.event(), base.HostEvent)
    assert device.time_ms(lambda: stream.launch(20.0)) >= 20.0  # the work ran inside the timed span
    assert len(stream.syncs) >= 2


def test_cpu_times_on_the_host():
    device = host.CpuDevice()
    assert isinstance(device.event(), base.HostEvent)
    assert device.time_ms(lambda: time.sleep(0.02)) >= 20.0


@pytest.mark.parametrize("cls, module, index", [(nvidia.CudaDevice, torch.cuda, 1), (intel.XpuDevice, torch.xpu, 0)])
def test_peak_memory_is_reset_and_read_on_the_device(monkeypatch, cls, module, index):
    calls = []
    monkeypatch.setattr(module, "reset_peak_memory_stats", lambda i: calls.append(("reset", i)), raising=False)
    monkeypatch.setattr(module, "max_memory_allocated", lambda i: 100 + i, raising=False)
    monkeypatch.setattr(module, "max_memory_reserved", lambda i: 200 + i, raising=False)
    device = cls(index)
    device.reset_peak_memory()
    assert calls == [("reset", index)]
    peak = device.peak_memory()
    assert peak["allocated"] == 100 + index and peak["reserved"] == 200 + index
    assert peak["source"] == f"torch.{module.__name__.split('.')[-1]}"


def test_cpu_peak_memory_is_the_host_rss_for_real():
    device = host.CpuDevice()
    device.reset_peak_memory()
    block = bytearray(64 * 2 ** 20)
    block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page
    assert device.peak_memory()["host_rss"] >= 64 * 2 ** 20
    del block


def test_detect(monkeypatch):
    assert detect.detect("cpu").kind == "cpu"
    with pytest.raises(ValueError, match="known: cuda, rocm, xpu, mps, cpu"):
        detect.detect("tpu")
    monkeypatch.setattr(torch.version, "hip", "6.2.41133", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert detect.detect("cuda").kind == "rocm"  # torch.cuda on HIP is ROCm
    assert detect.detect("auto").kind == "rocm"


# Identity.

def test_environment_on_this_machine_for_real():
    env = detect.environment(host.CpuDevice())
    assert env["rbench_version"] and set(env["git"]) == {"sha", "dirty"}
    for key in ("python", "torch", "torchvision", "triton", "cuda", "cudnn", "hip", "miopen", "rbench"):
        assert key in env["software"]
    assert env["software"]["torch"] == torch.__version__
    machine = env["host"]
    assert machine["cpu"] and machine["cpu_cores"] >= 1 and machine["os"] and machine["kernel"] and machine["memory_bytes"] > 0
    assert env["device"]["kind"] == "cpu" and env["device"]["threads"] >= 1
    assert env["driver"]["unavailable"] is True and env["driver"]["reason"]
    assert env["gpus"] == []


@pytest.fixture
def two_gpus(monkeypatch):
    clock = FakeClock()
    a = FakeGpu(clock, uuid="GPU-aaaaaaaa-0000-4000-8000-000000000000", bus_id="00000000:18:00.0")
    b = FakeGpu(clock, uuid="GPU-bbbbbbbb-0000-4000-8000-000000000000", bus_id="00000000:2A:00.0",
                unsupported={"nvmlDeviceGetEccMode", "nvmlDeviceGetPowerManagementLimit"})
    m = fake_nvml([a, b])
    monkeypatch.setitem(sys.modules, "pynvml", m)
    return m, a, b


def props(**kw):
    return types.SimpleNamespace(**kw)


def test_torch_index_to_nvml_handle(monkeypatch, two_gpus):
    nvml, a, b = two_gpus
    uuid = lambda h: nvml.nvmlDeviceGetUUID(h)  # noqa: E731
    monkeypatch.setattr(base, "cuda_properties", lambda i: props(uuid=b.uuid[4:]))
    h, how = nvidia.nvml_handle(nvml, 0)
    assert (uuid(h), how) == (b.uuid, "uuid")
    monkeypatch.setattr(base, "cuda_properties", lambda i: props(uuid=None, pci_domain_id=0, pci_bus_id=0x2A,
                                                                      pci_device_id=0))
    h, how = nvidia.nvml_handle(nvml, 0)
    assert (uuid(h), how) == (b.uuid, "pci_bus_id")
    monkeypatch.setattr(base, "cuda_properties", lambda i: props())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert uuid(nvidia.nvml_handle(nvml, 0)[0]) == b.uuid
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", a.uuid)
    assert nvidia.nvml_handle(nvml, 0)[1] == "CUDA_VISIBLE_DEVICES uuid"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    h, how = nvidia.nvml_handle(nvml, 1)
    assert uuid(h) == b.uuid and how.startswith("index")


def test_nvml_inventory_fields(monkeypatch, two_gpus):
    nvml, a, b = two_gpus
    monkeypatch.setattr(base, "cuda_properties", lambda i: props(uuid=(b.uuid if i == 0 else a.uuid)[4:]))
    inv = nvidia.nvml_inventory([0, 1])
    assert inv["driver"] == {"source": "nvml", "version": "550.54.15", "cuda_driver": "12.4", "nvml": "12.550.54.15"}
    first, second = inv["gpus"]
    assert first["name"] == "NVIDIA H100 80GB HBM3"  # bytes from old pynvml decoded
    assert (first["uuid"], first["torch_index"], first["nvml_index"]) == (a.uuid, 1, 0)
    assert (second["uuid"], second["torch_index"], second["mapped_by"]) == (b.uuid, 0, "uuid")
    assert first["memory_bytes"] == 80 * 2 ** 30 and first["compute_capability"] == "9.0"
    assert first["power_limit_w"] == 700 and first["default_power_limit_w"] == 700
    assert first["clocks_mhz"] == {"sm_max": 1980, "mem_max": 2619, "sm_application": 1755, "mem_application": 2619,
                                   "sm_default_application": 1755}
    assert first["ecc"] == {"current": True, "pending": True}
    assert first["mig"] == {"current": False, "pending": False}
    assert first["pcie"] == {"generation": 5, "generation_max": 5, "width": 16, "width_max": 16}
    assert first["pci_bus_id"] == "00000000:18:00.0" and first["vbios"] and first["persistence_mode"] is True
    assert "unavailable" not in first
    # What a GPU does not support is None with the reason, never a made-up value.
    assert second["ecc"] is None and second["power_limit_w"] is None
    assert second["unavailable"] == {"ecc": "nvmlDeviceGetEccMode: not supported by this GPU or driver",
                                     "power_limit_w": "nvmlDeviceGetPowerManagementLimit: not supported by this "
                                                      "GPU or driver"}
    assert nvml.inits == 0  # shut down again


def test_nvml_inventory_lists_mig_instances(monkeypatch):
    gpu = FakeGpu(FakeClock(), mig=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([gpu]))
    monkeypatch.setattr(base, "cuda_properties", lambda i: props(uuid="MIG"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-" + gpu.uuid[4:])
    (g,) = nvidia.nvml_inventory([0])["gpus"]
    assert g["mig"]["current"] is True
    assert g["mig"]["instances"] == [{"uuid": "MIG-" + gpu.uuid[4:], "memory_bytes": 10 * 2 ** 30}]
    assert g["torch_index"] == 0 and g["mapped_by"] == "CUDA_VISIBLE_DEVICES uuid"


def test_environment_of_a_cuda_device_carries_its_identity(monkeypatch, two_gpus):
    nvml, a, b = two_gpus
    p = props(uuid=a.uuid[4:], total_memory=80 * 2 ** 30, major=9, minor=0, multi_processor_count=132)
    monkeypatch.setattr(base, "cuda_properties", lambda i: p)
    monkeypatch.setattr(nvidia.CudaDevice, "_props", property(lambda self: p))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    env = detect.environment(nvidia.CudaDevice(0))
    d = env["device"]
    assert d["kind"] == "cuda" and d["compute_capability"] == "9.0" and d["count"] == 1
    assert d["uuid"] == a.uuid and d["power_limit_w"] == 700 and d["clocks_mhz"]["sm_max"] == 1980
    assert d["ecc"]["current"] is True and d["mig"]["current"] is False and d["pcie"]["generation"] == 5
    assert env["driver"]["version"] == "550.54.15" and env["driver"]["cuda_driver"] == "12.4"
    assert len(env["gpus"]) == 2


def test_environment_without_nvml_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([], init_error=9))
    inv = nvidia.nvml_inventory([0])
    assert inv == {"driver": {"unavailable": True, "reason": "NVML: the NVIDIA driver is not loaded"}, "gpus": []}


def test_amdsmi_inventory_fields(monkeypatch):
    gpu = FakeGpu(FakeClock(), name="AMD Instinct MI300X", uuid="0eff74a1-0000-1000-80ed-2a16d9c0a1b2",
                  sm_clock=2100, sm_clock_max=2100, unsupported={"amdsmi_get_gpu_memory_partition"})
    smi = fake_amdsmi([gpu])
    monkeypatch.setitem(sys.modules, "amdsmi", smi)
    monkeypatch.setattr(base, "cuda_properties", lambda i: props(pci_domain_id=0, pci_bus_id=0x18, pci_device_id=0))
    inv = amd.amdsmi_inventory([0])
    assert inv["driver"] == {"source": "amdsmi", "version": "6.8.5"}
    (g,) = inv["gpus"]
    assert g["name"] == "AMD Instinct MI300X" and g["gfx_arch"] == "gfx942" and g["compute_units"] == 304
    assert g["uuid"] == gpu.uuid and g["pci_bus_id"] == "0000:18:00.0"
    assert g["memory_bytes"] == 196592 * 2 ** 20 and g["power_limit_w"] == 750
    assert g["clocks_mhz"] == {"gfx_max": 2100, "mem_max": 1300}
    assert g["compute_partition"] == "SPX" and g["pcie"]["width"] == 16
    assert g["memory_partition"] is None and "memory_partition" in g["unavailable"]
    assert (g["torch_index"], g["mapped_by"]) == (0, "pci_bus_id")
    assert smi.inits == 0


def test_amdsmi_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    inv = amd.amdsmi_inventory([0])
    assert inv["gpus"] == [] and "rbench[amd]" in inv["driver"]["reason"]
