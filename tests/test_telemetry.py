"""Telemetry over a timed window: NVML and amdsmi against stand-ins at the library boundary, RAPL against a
fake sysfs, the CPU path for real, the unavailable reasons, the counter/sample cross-check and the flags."""

from __future__ import annotations

import os
import re
import sys
import time
import types

import pytest
from fake_smi import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    FakeClock,
    FakeGpu,
    fake_amdsmi,
    fake_nvml,
)
from rich.console import Console

from rbench import console
from rbench.hw import amd, base, detect, host, nvidia, sampling
from rbench.run import measure
from rbench.spec import Policy


@pytest.fixture
def clock():
    return FakeClock(1000.0)


def install_nvml(monkeypatch, *gpus, **kw):
    m = fake_nvml(list(gpus), **kw)
    monkeypatch.setitem(sys.modules, "pynvml", m)
    return m


def torch_sees(monkeypatch, **props):
    """What torch.cuda.get_device_properties would say about cuda:0 on the GPU machine."""
    monkeypatch.setattr(base, "cuda_properties", lambda index: types.SimpleNamespace(**props))


def nvml_monitor(monkeypatch, clock, gpu=None, **gpu_kw):
    gpu = gpu or FakeGpu(clock, **gpu_kw)
    m = install_nvml(monkeypatch, gpu)
    torch_sees(monkeypatch, uuid=gpu.uuid[4:])
    mon = detect.monitor_for(nvidia.CudaDevice(0), rate_hz=0)
    assert isinstance(mon, sampling.SamplingMonitor), getattr(mon, "reason", None)
    mon.clock = clock
    return mon, m


def window(mon, clock, seconds, step=0.05):
    """A timed window of `seconds` on the fake clock, sampled every `step` s."""
    mon.start()
    for _ in range(round(seconds / step)):
        clock.advance(step)
        mon.tick()
    mon.stop()


def test_counter_energy_is_power_times_window(monkeypatch, clock):
    mon, _ = nvml_monitor(monkeypatch, clock, power_w=300.0)
    window(mon, clock, 5.0)
    r = mon.result(images=1000)
    p = r["power"]
    assert p["method"] == "counter" and "nvmlDeviceGetTotalEnergyConsumption" in p["source"]
    assert p["energy_j"] == pytest.approx(1500.0, rel=0.02)  # within one 0.1 s update of 300 W
    assert p["avg_w"] == pytest.approx(300.0, rel=0.02)
    assert p["peak_w"] == pytest.approx(300.0)
    assert p["j_per_image"] == pytest.approx(p["energy_j"] / 1000)
    assert p["images_per_j"] == pytest.approx(1000 / p["energy_j"])
    assert p["counter_update_s"] == pytest.approx(0.1)
    assert p["counter_error_bound"] == pytest.approx(2 * 0.1 / 5.0)
    assert p["cross_check"]["relative_difference"] < 0.05
    assert r["flags"] == {"window_too_short": False, "energy_counter_disagrees": False, "throttled": False,
                          "clocks_below_max": False, "other_processes_at_start": None, "other_processes": None}
    assert r["warnings"] == []
    t = r["telemetry"]
    assert t["source"] == "nvml" and t["name"] == "NVIDIA H100 80GB HBM3" and t["mapped_by"] == "uuid"
    assert t["clock_mhz"]["median"] == 1980 and t["clock_max_mhz"] == 1980 and t["power_limit_w"] == 700
    assert t["temperature_c"]["max"] == 61 and t["utilization_pct"]["mean"] == 98
    assert t["throttle_reasons"] == {}


def test_counter_wrap_around_is_unwrapped(monkeypatch, clock):
    # 50 J before the 64-bit millijoule counter wraps; the window spends 1500 J.
    start = 2 ** 64 - 50_000 - round(300.0 * 1000.0 * 1000)
    mon, m = nvml_monitor(monkeypatch, clock, power_w=300.0, energy_start=start)
    before = m.nvmlDeviceGetTotalEnergyConsumption(m.nvmlDeviceGetHandleByIndex(0))
    window(mon, clock, 5.0)
    after = m.nvmlDeviceGetTotalEnergyConsumption(m.nvmlDeviceGetHandleByIndex(0))
    assert after < before  # it did wrap
    assert mon.result(100)["power"]["energy_j"] == pytest.approx(1500.0, rel=0.02)


def test_unsupported_counter_falls_back_to_integrated_samples(monkeypatch, clock):
    mon, _ = nvml_monitor(monkeypatch, clock, power_w=250.0, unsupported={"nvmlDeviceGetTotalEnergyConsumption"})
    window(mon, clock, 4.0)
    r = mon.result(500)
    p = r["power"]
    assert p["method"] == "samples"
    assert "not supported" in p["source"] and "Volta" in p["source"]
    assert p["energy_j"] == pytest.approx(1000.0, rel=1e-6)
    assert p["energy_counter_j"] is None
    assert r["flags"]["energy_counter_disagrees"] is None and r["flags"]["window_too_short"] is False


def test_no_counter_and_no_power_is_unavailable_with_both_reasons_never_zero(monkeypatch, clock):
    mon, _ = nvml_monitor(monkeypatch, clock, unsupported={"nvmlDeviceGetTotalEnergyConsumption",
                                                           "nvmlDeviceGetPowerUsage"})
    window(mon, clock, 2.0)
    p = mon.result(100)["power"]
    assert p["unavailable"] is True
    assert "energy_j" not in p and "avg_w" not in p
    assert "nvmlDeviceGetTotalEnergyConsumption: not supported" in p["reason"]
    assert "power readings: not supported" in p["reason"]


def test_counter_and_samples_disagreeing_is_flagged_and_warned(monkeypatch, clock):
    mon, _ = nvml_monitor(monkeypatch, clock, power_w=300.0, reading_scale=0.6)
    window(mon, clock, 5.0)
    r = mon.result(100)
    cc = r["power"]["cross_check"]
    assert cc["relative_difference"] == pytest.approx(0.4, abs=0.02)
    assert cc["tolerance"] == pytest.approx(sampling.DISAGREEMENT + 0.5 * 1.0 / 5.0)
    assert r["flags"]["energy_counter_disagrees"] is True
    assert any("disagree" in w for w in r["warnings"])
    assert r["power"]["energy_j"] == pytest.approx(1500.0, rel=0.02)  # the counter is still the figure


def test_window_shorter_than_counter_updates_is_warned(monkeypatch, clock):
    mon, _ = nvml_monitor(monkeypatch, clock, power_w=300.0, update_s=0.1)
    window(mon, clock, 0.4)
    r = mon.result(10)
    assert r["flags"]["window_too_short"] is True
    assert any("too short" in w for w in r["warnings"])
    assert r["power"]["counter_error_bound"] == pytest.approx(0.5)


def test_counter_that_never_advances_is_not_reported_as_zero(monkeypatch, clock):
    mon, _ = nvml_monitor(monkeypatch, clock, power_w=300.0, update_s=10.0)
    window(mon, clock, 1.0)
    p = mon.result(10)["power"]
    assert p["method"] == "samples" and "did not advance" in p["source"]
    assert p["energy_j"] == pytest.approx(300.0)


@pytest.mark.parametrize("mask, throttled, names", [
    (0x40 | 0x8, True, ["hw_slowdown", "hw_thermal_slowdown"]),
    (0x20, True, ["sw_thermal_slowdown"]),
    (0x80, True, ["hw_power_brake_slowdown"]),
    (0x4, False, []),  # the power cap: information (power_capped_share), not a warning
    (0x1, False, []),  # idle is not throttling
    (0x2, False, []),  # held at the application clock: shown in throttle_reasons, not a throttle
])
def test_throttle_reasons_flag_and_warn(monkeypatch, clock, mask, throttled, names):
    mon, _ = nvml_monitor(monkeypatch, clock, throttle=mask)
    window(mon, clock, 1.0)
    r = mon.result(10)
    assert r["flags"]["throttled"] is throttled
    assert all(v == 1.0 for v in r["telemetry"]["throttle_reasons"].values())
    warned = [w for w in r["warnings"] if "throttled" in w]
    assert bool(warned) is throttled
    for name in names:
        assert f"{name} 100% of the window" in warned[0]


def test_power_cap_is_information_with_its_share_of_the_window(monkeypatch, clock):
    """An H100 at its 700 W cap at large batch, at 1410 MHz: normal, so no warning (issue 18, item 9)."""
    gpu = FakeGpu(clock, throttle=0x4, sm_clock=1410, power_w=700.0)
    mon, _ = nvml_monitor(monkeypatch, clock, gpu=gpu)
    mon.start()
    for i in range(20):  # capped for the first 15 of the 20 samples in the window
        gpu.throttle = 0x4 if i < 15 else 0x0
        clock.advance(0.05)
        mon.tick()
    mon.stop()
    r = mon.result(10)
    assert r["telemetry"]["power_capped_share"] == pytest.approx(15 / 20)
    assert r["telemetry"]["throttle_reasons"]["sw_power_cap"] == pytest.approx(15 / 20)
    assert r["flags"]["throttled"] is False and r["flags"]["clocks_below_max"] is False
    assert r["warnings"] == []


@pytest.mark.parametrize("sm_clock, application, below", [
    (1410, 1755, False),  # 80 % of the application clock: power management at work, not a warning
    (1200, 1755, True),  # 68 %: locked or held-down clocks
    (1200, None, True),  # no application clock: judged against the 1980 MHz maximum
])
def test_clock_far_below_the_application_clock_is_flagged(monkeypatch, clock, sm_clock, application, below):
    gpu = FakeGpu(clock, sm_clock=sm_clock, sm_clock_max=1980,
                  unsupported=set() if application else {"nvmlDeviceGetApplicationsClock"})
    mon, _ = nvml_monitor(monkeypatch, clock, gpu=gpu)
    window(mon, clock, 1.0)
    r = mon.result(10)
    assert r["flags"]["clocks_below_max"] is below
    reference = application or 1980
    assert r["telemetry"]["clock_reference"] == ("application_clock_mhz" if application else "clock_max_mhz")
    warned = [w for w in r["warnings"] if f"{reference} MHz" in w]
    assert bool(warned) is below


@pytest.mark.parametrize("pids, others", [
    ([os.getpid()], []),
    ([os.getpid(), 4242], [4242]),
    ([1, 77], [77]),  # a container's pid namespace hides our pid: one of the two is this process
    ([], None),  # we are on the GPU, so an empty list means NVML cannot show processes
])
def test_other_processes_on_the_gpu(monkeypatch, clock, pids, others):
    mon, _ = nvml_monitor(monkeypatch, clock, pids=pids)
    window(mon, clock, 1.0)
    r = mon.result(10)
    assert r["telemetry"].get("other_processes") == others
    assert r["flags"]["other_processes"] is (None if others is None else bool(others))
    assert any("other processes" in w for w in r["warnings"]) is bool(others)


def test_other_processes_on_the_gpu_when_the_case_starts(monkeypatch, clock):
    """A leftover worker of a killed run still on the GPU as the next case builds and autotunes (issue 18, item 10)."""
    gpu = FakeGpu(clock, pids=[os.getpid(), 4242])
    mon, _ = nvml_monitor(monkeypatch, clock, gpu=gpu)
    mon.case_start()
    gpu.pids = [os.getpid()]  # gone by the timed window
    window(mon, clock, 1.0)
    r = mon.result(10)
    assert r["telemetry"]["other_processes_at_start"] == [4242] and r["telemetry"]["other_processes"] == []
    assert r["flags"]["other_processes_at_start"] is True and r["flags"]["other_processes"] is False
    (warned,) = [w for w in r["warnings"] if "other processes" in w]
    assert "when the case started (pid 4242" in warned and "autotuning" in warned


def test_a_process_seen_during_the_window_is_named(monkeypatch, clock):
    mon, _ = nvml_monitor(monkeypatch, clock, pids=[os.getpid(), os.getppid()])
    mon.case_start()
    window(mon, clock, 1.0)
    r = mon.result(10)
    assert r["flags"]["other_processes_at_start"] is True and r["flags"]["other_processes"] is True
    during = next(w for w in r["warnings"] if "during the window" in w)
    assert f"pid {os.getppid()} " in during  # with its command line, which this host can read


def test_mig_instance_measures_the_parent_gpu_and_says_so(monkeypatch, clock):
    gpu = FakeGpu(clock, mig=True)
    install_nvml(monkeypatch, gpu)
    torch_sees(monkeypatch, uuid="not-an-nvml-uuid")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-" + gpu.uuid[4:])
    mon = detect.monitor_for(nvidia.CudaDevice(0), rate_hz=0)
    mon.clock = clock
    window(mon, clock, 2.0)
    r = mon.result(10)
    assert r["telemetry"]["mig"] is True and r["telemetry"]["mapped_by"] == "CUDA_VISIBLE_DEVICES uuid"
    assert r["telemetry"]["mig_instance_uuid"].startswith("MIG-")
    assert r["power"]["energy_j"] == pytest.approx(600.0, rel=0.05)  # the parent's counter
    assert r["telemetry"]["utilization_pct"]["mean"] == 98  # asked of the instance, not the parent
    assert r["flags"]["mig_shared_power"] is True
    assert any("MIG" in w for w in r["warnings"])


@pytest.mark.parametrize("error, reason", [
    (NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so not found"),
    (NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
    (NVML_ERROR_NO_PERMISSION, "no permission"),
])
def test_nvml_that_cannot_start_gives_the_reason(monkeypatch, clock, error, reason):
    install_nvml(monkeypatch, FakeGpu(clock), init_error=error)
    mon = detect.monitor_for(nvidia.CudaDevice(0))
    mon.start()
    mon.stop()
    r = mon.result(100)
    assert r["power"]["unavailable"] is True and r["power"]["reason"].startswith("NVML: ")
    assert reason in r["power"]["reason"]
    assert r["warnings"] == [] and r["telemetry"] is None


def test_pynvml_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    r = detect.monitor_for(nvidia.CudaDevice(0)).result(1)
    assert "pynvml (nvidia-ml-py) is not installed" in r["power"]["reason"]


def test_nvml_is_shut_down_as_often_as_it_is_started(monkeypatch, clock):
    mon, m = nvml_monitor(monkeypatch, clock)
    assert m.inits == 1
    window(mon, clock, 0.5)
    mon.close()
    assert m.inits == 0


def test_sampler_thread_samples_at_its_rate_and_stops(monkeypatch):
    gpu = FakeGpu(time.perf_counter, update_s=0.02)
    install_nvml(monkeypatch, gpu)
    torch_sees(monkeypatch, uuid=gpu.uuid[4:])
    mon = detect.monitor_for(nvidia.CudaDevice(0), rate_hz=50)
    mon.start()
    time.sleep(0.4)
    mon.stop()
    assert mon._thread is None
    r = mon.result(10)
    assert 5 <= r["telemetry"]["samples"] <= 24  # ~20 at 50 Hz plus the two ends; fewer on a busy machine
    assert r["power"]["energy_j"] == pytest.approx(300.0 * r["power"]["window_s"], rel=0.25)
    mon.close()


def test_rate_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(sampling.RATE_ENV, "5")
    assert sampling.sample_rate() == 5.0
    monkeypatch.setenv(sampling.RATE_ENV, "fast")
    assert sampling.sample_rate() == sampling.DEFAULT_RATE_HZ


# AMD.

def amd_monitor(monkeypatch, clock, gpu=None, **kw):
    gpu = gpu or FakeGpu(clock, name="AMD Instinct MI300X", sm_clock=2100, sm_clock_max=2100)
    smi = fake_amdsmi([gpu], **kw)
    monkeypatch.setitem(sys.modules, "amdsmi", smi)
    torch_sees(monkeypatch, pci_domain_id=0, pci_bus_id=0x18, pci_device_id=0)
    mon = detect.monitor_for(amd.RocmDevice(0), rate_hz=0)
    assert isinstance(mon, sampling.SamplingMonitor), getattr(mon, "reason", None)
    mon.clock = clock
    return mon, smi


@pytest.mark.parametrize("legacy_key", [False, True])
def test_amdsmi_energy_counter(monkeypatch, clock, legacy_key):
    mon, smi = amd_monitor(monkeypatch, clock, legacy_key=legacy_key)
    window(mon, clock, 3.0)
    r = mon.result(300)
    assert r["power"]["method"] == "counter" and "amdsmi" in r["power"]["source"]
    # The counter moves every 0.1 s: the difference is good to one update at each end.
    assert abs(r["power"]["energy_j"] - 900.0) <= r["power"]["counter_error_bound"] * 900.0
    assert r["telemetry"]["mapped_by"] == "pci_bus_id" and r["telemetry"]["name"] == "AMD Instinct MI300X"
    assert r["telemetry"]["clock_mhz"]["median"] == 2100 and r["telemetry"]["power_limit_w"] == 750
    assert r["flags"]["clocks_below_max"] is False and r["flags"]["energy_counter_disagrees"] is False
    assert "throttle" in r["telemetry"]["unavailable"]
    mon.close()
    assert smi.inits == 0


def test_amdsmi_counter_not_supported_uses_socket_power(monkeypatch, clock):
    mon, _ = amd_monitor(monkeypatch, clock, gpu=FakeGpu(clock, power_w=500.0,
                                                          unsupported={"amdsmi_get_energy_count"}))
    window(mon, clock, 2.0)
    p = mon.result(100)["power"]
    assert p["method"] == "samples" and "amdsmi_get_energy_count" in p["source"]
    assert p["energy_j"] == pytest.approx(1000.0)


def test_amdsmi_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    r = detect.monitor_for(amd.RocmDevice(0)).result(1)
    assert "amdsmi is not installed" in r["power"]["reason"] and "rbench[amd]" in r["power"]["reason"]


@pytest.mark.parametrize("kind", ["xpu", "mps"])
def test_devices_without_a_power_source_say_why(kind):
    r = detect.monitor_for(detect.DEVICES[kind]()).result(1)
    assert r["power"]["unavailable"] is True and len(r["power"]["reason"]) > 20


# CPU.

def test_cpu_for_real_on_this_machine():
    """RAPL where readable (energy > 0), else unavailable with the reason; other processes' CPU time either way."""
    mon = detect.monitor_for(host.CpuDevice())
    mon.start()
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass
    mon.stop()
    r = mon.result(images=64)
    p = r["power"]
    if p.get("unavailable"):
        assert "RAPL" in p["reason"]
    else:
        assert p["energy_j"] > 0 and p["avg_w"] > 0 and "RAPL" in p["source"]
    assert r["telemetry"]["source"] == "cpu"
    assert r["telemetry"]["other_cpu_cores"] is None or r["telemetry"]["other_cpu_cores"] >= 0
    assert r["flags"]["other_processes"] in (True, False, None)
    mon.close()


def make_rapl(root, packages=("package-0",), energy=0, max_range=262_143_328_850):
    for i, name in enumerate(packages):
        zone = root / f"intel-rapl:{i}"
        zone.mkdir(parents=True)
        (zone / "name").write_text(name + "\n")
        (zone / "energy_uj").write_text(f"{energy}\n")
        (zone / "max_energy_range_uj").write_text(f"{max_range}\n")
        sub = root / f"intel-rapl:{i}:0"  # the core sub-zone: part of the package, not added again
        sub.mkdir()
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text("5\n")
    return root


def set_rapl(root, i, uj):
    (root / f"intel-rapl:{i}" / "energy_uj").write_text(f"{uj}\n")


def test_rapl_sums_packages_and_unwraps(tmp_path, clock):
    root = make_rapl(tmp_path / "powercap", packages=("package-0", "package-1", "psys"),
                     energy=999_000_000, max_range=1_000_000_000)
    mon = sampling.SamplingMonitor(host.CpuDevice(), host.CpuSource(powercap=root,
                                                                              cpufreq=tmp_path / "none"),
                                    rate_hz=0, clock=clock)
    mon.start()
    uj = 999_000_000
    for _ in range(20):  # 20 x 50 ms at 100 W per package: 5 J each step, wrapping at 1000 J
        clock.advance(0.05)
        uj = (uj + 5_000_000) % 1_000_000_001
        set_rapl(root, 0, uj)
        set_rapl(root, 1, uj)
        set_rapl(root, 2, 10 ** 9)  # psys overlaps the packages and is ignored
        mon.tick()
    mon.stop()
    p = mon.result(images=200)["power"]
    assert p["method"] == "counter" and "RAPL" in p["source"]
    assert p["energy_j"] == pytest.approx(200.0, abs=1e-3)  # 2 packages x 100 W x 1 s
    assert p["domains_j"] == pytest.approx({"package-0": 100.0, "package-1": 100.0}, abs=1e-3)
    assert p["avg_w"] == pytest.approx(200.0, abs=0.01) and p["peak_w"] == pytest.approx(200.0, abs=0.01)
    assert p["peak_from"] == "counter intervals"


def test_rapl_reasons(tmp_path, monkeypatch):
    assert "does not exist" in host.rapl_domains(tmp_path / "absent")[1]
    (tmp_path / "empty").mkdir()
    assert "no intel-rapl zones" in host.rapl_domains(tmp_path / "empty")[1]
    root = make_rapl(tmp_path / "pc")
    assert host.rapl_domains(root) == ({"package-0": root / "intel-rapl:0"}, None)

    real = host._read_int

    def denied(path):
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(host, "_read_int", denied)
    _, reason = host.rapl_domains(root)
    assert "permission denied" in reason and "root" in reason
    source = host.CpuSource(powercap=root)
    mon = sampling.SamplingMonitor(host.CpuDevice(), source, rate_hz=0)
    mon.start()
    mon.stop()
    assert mon.result(1)["power"] == {"unavailable": True, "reason": reason}


def test_measure_run_brackets_exactly_the_timed_window(clock):
    """The monitor's first sample comes after warm-up and its last after the final synchronise."""
    events = []

    class Source(base.TelemetrySource):
        def sample(self):
            events.append("sample")
            return {"power_w": 100.0}

    class Device:
        def synchronize(self):
            events.append("sync")

        def event(self):
            return base.HostEvent(lambda: None)

    mon = sampling.SamplingMonitor(Device(), Source(), rate_hz=0, clock=clock)

    def step(i):
        clock.advance(0.01)
        events.append("step")

    timing = measure.run(step, Device(), Policy(warmup_iters=2, warmup_s=0.0, min_iters=3, min_s=0.0, max_s=5.0),
                         window=mon, clock=clock)
    first, last = events.index("sample"), len(events) - 1 - events[::-1].index("sample")
    assert events[first - 2:first] == ["step", "sync"]  # warm-up finished and synchronised
    assert events[first + 1:last].count("step") == timing.iters
    assert events[last - 1] == "sync"
    r = mon.result(timing.iters)
    assert r["power"]["method"] == "samples" and r["power"]["window_s"] == pytest.approx(0.03)


# The final table.

def render(records):
    c = Console(width=220, record=True)
    c.print(console.run_table(records))
    return c.export_text(), console.notes(records)


def ok_record(**kw):
    return {"status": "ok", "reason": "", "model": "resnet50", "batch_size": 64, "precision": "fp16",
            "backend": "eager", "mode": "inference", "throughput_ips": 3000.0, "latency_ms": {"p50": 20, "p99": 22},
            "tflops": 24.0, "peak_memory_bytes": 2 ** 30, **kw}


def test_table_shows_watts_joules_and_warnings(monkeypatch, clock):
    mon, _ = nvml_monitor(monkeypatch, clock, power_w=350.0, throttle=0x40, sm_clock=1200)
    window(mon, clock, 3.0)
    gpu = ok_record(**mon.result(images=9000))
    cpu = ok_record(batch_size=1, power=base.unavailable("RAPL not exposed: /sys/class/powercap does not exist"),
                    warnings=[])
    table, notes = render([gpu, cpu])
    assert re.search(r"350 W, 0\.117 J/img", table)
    gpu_row = next(line for line in table.splitlines() if "350 W" in line)
    assert "⚠" in gpu_row
    assert "unavailable [3]" in table
    assert "[1] warning: clocks throttled (hw_thermal_slowdown 100% of the window)" in notes
    assert "[2] warning: clock 1200 MHz, below 75% of its 1755 MHz application clock" in notes
    assert "[3] power unavailable: RAPL not exposed" in notes
