"""Helpers shared by the kernel launchers: interpreter detection, GPU family, argument checks."""

from __future__ import annotations

import os
from typing import Sequence

import torch
import triton
import triton.language as tl

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


def gpu_family(device: torch.device) -> str:
    """The config family for `device`: 'sm80' (Ampere/Ada and older), 'sm90' (Hopper and newer), 'gfx942' (AMD).

    Configs that do not fit a smaller GPU (e.g. shared memory on sm_86) are dropped by the
    autotuner, which scores a config that fails to launch as infinitely slow.
    """
    if torch.version.hip is not None:
        return "gfx942"
    major, _ = torch.cuda.get_device_capability(device)
    return "sm90" if major >= 9 else "sm80"


def dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """`tl.dot` input precision: tf32 only when asked for and the inputs are fp32."""
    return "tf32" if (dtype == torch.float32 and allow_tf32) else "ieee"


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


def empty_output(shape: tuple[int, int, int, int], like: torch.Tensor, out: torch.Tensor | None, name: str = "out"):
    """A channels_last output of `shape`, or `out` checked to be one (tests pass NaN-filled buffers)."""
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=torch.channels_last)
    if tuple(out.shape) != tuple(shape) or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(
            f"{name} must be {like.dtype} of shape {tuple(shape)} on {like.device}, "
            f"got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    if not out.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"{name} must be channels_last contiguous, got strides {out.stride()}")
    return out


def make_configs(rows: Sequence[tuple[int, ...]], group_m: int = 8) -> list[triton.Config]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) rows as triton.Configs."""
    return [
        triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m}, num_warps=w, num_stages=s
        )
        for bm, bn, bk, w, s in rows
    ]


def prune_gemm_configs(configs: list[triton.Config], m: int, n: int, reduction: int) -> list[triton.Config]:
    """Drop configs whose tiles are far larger than the problem; keep at least one."""
    limit_m = max(64, triton.next_power_of_2(m))
    limit_n = max(64, triton.next_power_of_2(n))
    limit_k = max(32, triton.next_power_of_2(reduction))
    kept = [
        c
        for c in configs
        if c.kwargs["BLOCK_M"] <= limit_m and c.kwargs["BLOCK_N"] <= limit_n and c.kwargs["BLOCK_K"] <= limit_k
    ]
    if kept:
        return kept
    return [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"])]


@triton.jit
def bn_act_store(acc, offs_m, offs_n, m_ok, n_ok, n, p, q, K, scale_ptr, shift_ptr,
                 res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr,
                 HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr):
    """The epilogue both convolution kernels share, in fp32: BatchNorm affine, residual, ReLU; then
    one store in the output dtype. Rows are output pixels (n, p, q), columns output channels; the
    output is a dense row-major (N·P·Q, K) matrix (NHWC)."""
    scale = tl.load(scale_ptr + offs_n, mask=n_ok, other=0.0)
    shift = tl.load(shift_ptr + offs_n, mask=n_ok, other=0.0)
    y = acc * scale[None, :] + shift[None, :]
    out_mask = m_ok[:, None] & n_ok[None, :]
    if HAS_RESIDUAL:
        res_rows = n * stride_rn + p * stride_rp + q * stride_rq
        res = tl.load(res_ptr + res_rows[:, None] + offs_n[None, :] * stride_rk, mask=out_mask, other=0.0)
        y += res.to(tl.float32)
    if RELU:
        y = tl.maximum(y, 0.0)
    tl.store(y_ptr + offs_m[:, None] * K + offs_n[None, :], y.to(y_ptr.dtype.element_ty), mask=out_mask)
