"""Which GPU a tensor is on, as the launchers need it: config family, multiprocessor count, TMA, device context.

One place asks torch about the device, by device type: CUDA and ROCm (both `torch.cuda`, told
apart by `torch.version.hip`), Intel XPU (`torch.xpu`), and under `TRITON_INTERPRET=1` the CPU.
A target without shipped configs (XPU, AMD GPUs other than CDNA3) gets an `UnsupportedTarget`
error that says so, instead of a crash in the wrong vendor's API.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ._common import FAMILIES, interpreting

# AMD architectures (the part of `gcnArchName` before any ':' feature flags) that run the gfx942
# configs: CDNA3 (MI300A/X, MI325X).  Others (CDNA2's gfx90a, RDNA) have no shipped configs.
ROCM_FAMILY = {"gfx940": "gfx942", "gfx941": "gfx942", "gfx942": "gfx942"}

# Under the interpreter: programs that stand in for a GPU's multiprocessors.  Small enough that
# the tests' tiny shapes exercise both the split-K launches and the persistent loops' several
# tiles per program.
INTERPRETER_SMS = 2


class UnsupportedTarget(ValueError):
    """The tensors are on a device that rbench_kernels has no configs for (a ValueError, as bad input)."""


@dataclass(frozen=True)
class Target:
    """What a launch needs to know about a device."""

    arch: str  # "sm90", "sm86", "gfx942", "gfx90a", "xpu", "interpreter", ...
    family: str | None  # the key into each kernel's CONFIGS; None: no configs shipped
    sms: int  # streaming multiprocessors / compute units: one wave of programs
    tma: bool  # tensor descriptors backed by the TMA engine (CUDA sm_90 and newer; the interpreter)
    reason: str = ""  # why family is None

    def require_family(self) -> str:
        """The config family, or UnsupportedTarget naming the device and what is supported."""
        if self.family is None:
            raise UnsupportedTarget(self.reason)
        return self.family


def _supported() -> str:
    return "configs are shipped for CUDA (sm_80 and sm_90 families) and ROCm gfx940/gfx941/gfx942 (CDNA3)"


def _cuda_target(device: torch.device) -> Target:
    props = torch.cuda.get_device_properties(device)
    if torch.version.hip is not None:
        arch = str(getattr(props, "gcnArchName", "") or "").split(":")[0] or "unknown-amd"
        family = ROCM_FAMILY.get(arch)
        reason = "" if family else f"AMD GPU {arch} ({props.name}) has no rbench_kernels configs: {_supported()}"
        return Target(arch, family, int(props.multi_processor_count), False, reason)
    major, minor = torch.cuda.get_device_capability(device)
    # Ampere/Ada and older take the sm80 configs (the autotuner drops any that do not fit)
    family = "sm90" if major >= 9 else "sm80"
    return Target(f"sm{major}{minor}", family, int(props.multi_processor_count), major >= 9)


def _xpu_target(device: torch.device) -> Target:
    name = "Intel XPU"
    with contextlib.suppress(Exception):
        name = torch.xpu.get_device_properties(device).name
    return Target("xpu", None, 1, False, f"{name} ({device}) has no rbench_kernels configs: {_supported()}")


# device type -> how to describe it; anything else is unsupported
_TARGETS = {"cuda": _cuda_target, "xpu": _xpu_target}


@functools.cache
def _target_cached(device: torch.device) -> Target:
    probe = _TARGETS.get(device.type)
    if probe is None:
        return Target(device.type, None, 1, False, f"tensors on {device} cannot run Triton kernels: {_supported()}")
    return probe(device)


def target(device: torch.device) -> Target:
    """The Target of `device` (cached per device); under the interpreter a CPU stand-in with TMA."""
    if interpreting():
        return Target("interpreter", None, INTERPRETER_SMS, True)
    if device.type in _TARGETS and device.index is None:
        device = torch.device(device.type, _current_index(device.type))
    return _target_cached(device)


def _current_index(device_type: str) -> int:
    module = getattr(torch, device_type, None)
    return int(module.current_device()) if module is not None else 0


def unsupported_reason(device: torch.device | str) -> str | None:
    """Why tensors on `device` cannot run rbench_kernels (no configs for it), or None when they can.

    Under TRITON_INTERPRET=1 every device is served by the interpreter."""
    tgt = target(torch.device(device))
    return None if tgt.family is not None or tgt.arch == "interpreter" else tgt.reason


def tma_refusal(tgt: Target, dtype: torch.dtype, precision: str) -> str:
    """Why the tensor-descriptor kernels cannot take a launch on `tgt` in `dtype` ('' when they can).

    IEEE fp32 (DOT_PRECISION "ieee") runs on the FMA units, where their tiles spill (the check)."""
    if not tgt.tma:
        return f"{tgt.arch} has no TMA (tensor descriptors need CUDA sm_90 or newer)"
    if dtype == torch.float32 and precision == "ieee":
        return "IEEE fp32 runs on the FMA units, where the descriptor kernels' tiles spill"
    return ""


def gpu_family(device: torch.device) -> str:
    """The config family for `device` ('sm80', 'sm90' or 'gfx942'); UnsupportedTarget where none is shipped."""
    family = target(device).require_family()
    assert family in FAMILIES
    return family


@contextlib.contextmanager
def device_context(device: torch.device) -> Iterator[None]:
    """Make `device` current while a kernel launches (Triton launches on the current device).

    torch.accelerator.device_index where it is the device's own accelerator (torch >= 2.8), else
    the device type's own module (torch.cuda.device, torch.xpu.device); nothing for the CPU.
    """
    if device.type == "cpu" or device.index is None:
        yield
        return
    acc = getattr(torch, "accelerator", None)
    current = acc.current_accelerator() if acc is not None and hasattr(acc, "current_accelerator") else None
    if current is not None and current.type == device.type and hasattr(acc, "device_index"):
        with acc.device_index(device.index):
            yield
        return
    module = getattr(torch, device.type, None)
    with module.device(device) if module is not None and hasattr(module, "device") else contextlib.nullcontext():
        yield


def ensure_allocator(device: torch.device) -> None:
    """Give Triton an allocator for the global scratch that in-kernel tensor descriptors need.

    `tl.make_tensor_descriptor` writes each program's TMA descriptor to global memory that Triton
    asks `triton.set_allocator`'s allocator for at launch.  An allocator the caller set is kept.
    """
    import triton

    try:
        from triton.runtime._allocation import NullAllocator, _allocator

        if not isinstance(_allocator.get(), NullAllocator):
            return
    except (ImportError, AttributeError):
        pass

    def alloc(size: int, alignment: int, stream: int | None) -> torch.Tensor:
        # on the current device of the launch's type (device_context made it the launch's own)
        return torch.empty(size, dtype=torch.int8, device=device.type)

    triton.set_allocator(alloc)
