"""The interfaces every vendor file implements: a device (timing, memory), a telemetry source.

Every timing path goes through `Device.event()` and ends with `Device.synchronize()`: a timing that
does not synchronise measures the launch queue, not the work. A figure that cannot be read is
`unavailable(reason)` (or None with the reason kept), never guessed and never 0. Vendor libraries are
optional: `LibraryUnavailable` carries why one cannot be used.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from rbench.names import one_line


class HostEvent:
    """A timestamp on the host clock; correct only for devices whose work is done when the call returns."""

    def __init__(self, synchronize: Callable[[], None]):
        self._synchronize = synchronize
        self.t_ns: int | None = None

    def record(self) -> None:
        self._synchronize()
        self.t_ns = time.perf_counter_ns()

    def elapsed_time(self, end: HostEvent) -> float:
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
        raise NotImplementedError

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
        raise NotImplementedError

    def peak_memory(self) -> dict[str, int | str]:
        """Peak memory since the last reset: device allocated/reserved bytes, or the host's peak RSS."""
        raise NotImplementedError

    def release_memory(self) -> None:
        """Give cached allocations back so the next case starts clean (after an OOM, say)."""

    def gpu_target(self) -> str | None:
        """The compiler target of this GPU (`sm_90`, `gfx942`), None where there is none to tell."""
        return None

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

class AcceleratorDevice(Device):
    """A GPU driven through one of torch's accelerator modules (`torch.<torch_type>`: torch.cuda,
    torch.xpu): they share one API for events, synchronising and memory counters, so one class serves."""

    torch_type = "cuda"

    @property
    def api(self) -> Any:
        """The torch module this device is driven through, looked up when used (tests stand in for it)."""
        return getattr(torch, self.torch_type)

    @property
    def name(self) -> str:
        return self.api.get_device_name(self.index)

    def synchronize(self) -> None:
        self.api.synchronize(self.index)

    def event(self) -> Any:
        return self.api.Event(enable_timing=True)

    def reset_peak_memory(self) -> None:
        self.api.reset_peak_memory_stats(self.index)

    def peak_memory(self) -> dict[str, int | str]:
        return {"allocated": self.api.max_memory_allocated(self.index),
                "reserved": self.api.max_memory_reserved(self.index), "source": f"torch.{self.torch_type}"}

    def release_memory(self) -> None:
        self.api.empty_cache()

    def properties(self) -> dict[str, Any]:
        """This GPU's size and make for `describe()`; each module names its properties differently."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "index": self.index, **self.properties(), "count": self.api.device_count()}

class CudaApiDevice(AcceleratorDevice):
    """GPUs driven through `torch.cuda` (NVIDIA's CUDA and AMD's HIP): events, memory counters."""

    torch_type = "cuda"

    @cached_property
    def _props(self) -> Any:
        return torch.cuda.get_device_properties(self.index)

    def properties(self) -> dict[str, Any]:
        p = self._props
        return {"memory_bytes": p.total_memory, "multiprocessors": p.multi_processor_count}

class LibraryUnavailable(Exception):
    """A management library cannot be used on this machine; the message says why."""

def unavailable(reason: str) -> dict[str, Any]:
    return {"unavailable": True, "reason": reason}

def text(value: Any) -> Any:
    """Old pynvml releases return bytes where new ones return str."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value

def library_reason(exc: BaseException) -> str:
    """A vendor library's failure as one line (for `unavailable` reasons)."""
    return one_line(exc, 200)

def shut_down_quietly(library: Any, function: str) -> None:
    """Call a started library's shut-down `function`, ignoring its failure: once done with it there is
    nothing left to do about one."""
    try:
        getattr(library, function)()
    except Exception:  # noqa: BLE001
        pass

@contextlib.contextmanager
def shut_down_on_error(library: Any, function: str) -> Iterator[None]:
    """Inside: setting up on a started library; a failure shuts the library down before it goes on."""
    try:
        yield
    except Exception:
        getattr(library, function)()
        raise

def library_inventory(load: Callable[[], Any], shut_down: str,
                      read: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """`read(library)` between `load()` and the library's `shut_down` function; where the library
    cannot start, `{"driver": unavailable(why), "gpus": []}`."""
    try:
        library = load()
    except LibraryUnavailable as e:
        return {"driver": unavailable(str(e)), "gpus": []}
    try:
        return read(library)
    finally:
        shut_down_quietly(library, shut_down)

def number(v: Any) -> float | None:
    """`v` if it is a real number (not a bool, not "N/A"), else None."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

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

def cuda_properties(index: int) -> Any:
    """torch's properties of cuda:`index` (one place, so tests can stand in for a GPU)."""
    return torch.cuda.get_device_properties(index)

def visible_devices(*names: str) -> list[str] | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return [v.strip() for v in value.split(",") if v.strip()]
    return None

def pci_bus_id(props: Any, domain_digits: int) -> str | None:
    bus = getattr(props, "pci_bus_id", None)
    if bus is None:
        return None
    return (f"{getattr(props, 'pci_domain_id', 0):0{domain_digits}x}:{bus:02x}:"
            f"{getattr(props, 'pci_device_id', 0):02x}.0")

# Telemetry: where a monitor's readings come from, and a monitor that has none.

class Unavailable(Exception):
    """A reading that cannot be had; the message is the reason."""

@dataclass(frozen=True)
class Counter:
    """One reading of a cumulative energy counter, in the counter's own integer units."""

    raw: int
    joules_per_unit: float
    wrap: int | None  # the counter runs modulo this; None: unknown, and a decrease makes it unusable

class TelemetrySource:
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
    watches_clocks = False  # True: a median clock far below the first of `clock_references` is flagged
    # The `limits()` keys a window's clock is judged against, the first one known wins.
    clock_references: tuple[str, ...] = ("clock_max_mhz",)
    throttling: frozenset[str] = frozenset()  # throttle reasons that slow the clocks down: warned
    power_capping: frozenset[str] = frozenset()  # throttle reasons of the power cap: information
    lists_processes = False  # True: `processes()` can see other processes on the device

    def __init__(self) -> None:
        self.unavailable: dict[str, str] = {}
        self._identity: dict[str, Any] = {}  # which device, and how it was matched to torch's index
        self._limits: dict[str, Any] = {}

    def reason(self, exc: BaseException) -> str:
        return library_reason(exc)

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

class Monitor:
    """No telemetry source for this device: every figure is unavailable, with the reason."""

    def __init__(self, device: Any, reason: str = "no power telemetry source for this device"):
        self.device = device
        self.reason = reason

    def case_start(self) -> None:
        """Called as a case starts (before build and compilation): a monitor may note the device's state."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def result(self, images: int) -> dict[str, Any]:
        return {"power": unavailable(self.reason), "telemetry": None, "flags": {}, "warnings": []}

    def close(self) -> None:
        pass
