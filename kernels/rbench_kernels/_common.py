"""What every launcher checks: interpreter or GPU, the arguments, the output buffer."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# 32-bit index arithmetic in the kernels: every tensor must have fewer elements than this.
MAX_NUMEL = 2**31 - 1

# GPU families with their own configs; `check.py` cross-compiles each of these targets.
FAMILIES = ("sm80", "sm90", "gfx942")


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (`TRITON_INTERPRET=1`), read at call time.

    The autotuner needs a GPU driver, so launchers then use one fixed config.  Note that
    `@triton.jit` reads the variable when the kernel module is imported: set it before
    importing rbench_kernels.
    """
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int or a pair of ints, as torch.nn.functional.conv2d accepts for stride/padding/dilation."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def check_tensor(t: object, name: str, ndim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """`t` is a tensor with `ndim` dimensions and a supported dtype."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
    if t.dtype not in DTYPES:
        raise ValueError(f"{name} has unsupported dtype {t.dtype}; supported: float32, float16, bfloat16")
    if t.numel() > MAX_NUMEL:
        raise ValueError(f"{name} has {t.numel()} elements (shape {tuple(t.shape)}); at most 2**31-1 are supported")
    return t


def check_same_dtype(x: torch.Tensor, other: torch.Tensor, name: str) -> None:
    if other.dtype != x.dtype:
        raise ValueError(f"{name} has dtype {other.dtype} but x has dtype {x.dtype}; they must match")


def check_affine(t: object, name: str, k: int) -> torch.Tensor:
    """A folded BatchNorm vector: fp32, shape (k,)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1 or t.shape[0] != k:
        raise ValueError(f"{name} must have shape ({k},) (one per output channel), got {tuple(t.shape)}")
    if t.dtype != torch.float32:
        raise ValueError(f"{name} must be float32 (use fold_bn), got {t.dtype}")
    return t.contiguous()


def check_devices(tensors: dict[str, torch.Tensor | None]) -> torch.device:
    """All tensors on one device, and one that Triton can run on here."""
    present = {name: t for name, t in tensors.items() if t is not None}
    devices = {name: t.device for name, t in present.items()}
    if len(set(devices.values())) > 1:
        seen = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"all tensors must be on one device, got {seen}")
    device = next(iter(devices.values()))
    if device.type == "cpu" and not interpreting():
        raise ValueError(
            "x is on the CPU: the Triton kernels need a GPU tensor, or TRITON_INTERPRET=1 set before "
            "rbench_kernels is imported (use rbench_kernels.reference for plain PyTorch on the CPU)"
        )
    return device


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """NHWC memory for a 4-D tensor; a no-op when it already is (NCHW inputs are copied once here)."""
    return t.contiguous(memory_format=torch.channels_last)


def output(
    shape: tuple[int, ...],
    like: torch.Tensor,
    out: object = None,
    memory_format: torch.memory_format = torch.channels_last,
) -> torch.Tensor:
    """The result: a new dense tensor of `shape` in `like`'s dtype and device, or `out` checked to be one.

    `out` (the public functions' `out=`) must match shape, dtype and device exactly and be dense in
    `memory_format` (channels_last for 4-D results): the kernels write it as one flat array.
    """
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(
            f"out must be {like.dtype} of shape {tuple(shape)} on {like.device}, "
            f"got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    if not out.is_contiguous(memory_format=memory_format):
        layout = "channels_last" if memory_format == torch.channels_last else "contiguous (row-major)"
        raise ValueError(f"out must be {layout} and dense, got strides {out.stride()} for shape {tuple(out.shape)}")
    return out
