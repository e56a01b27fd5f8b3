"""What the two convolution kernels share as GEMMs: tile order, fused epilogue, config kinds, launch path.

Both `conv.py` (implicit GEMM) and `conv1x1.py` (plain GEMM) compute an (N·P·Q) x K output matrix,
rows the output pixels and columns the output channels, in BLOCK_M x BLOCK_N tiles, then apply the
folded BatchNorm, residual and ReLU before a single NHWC store.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import triton
import triton.language as tl

from ._common import (
    FAMILIES,
    channels_last,
    check_affine,
    check_devices,
    check_same_dtype,
    check_tensor,
    gpu_family,
    interpreting,
    output,
)


class ConfigKind(enum.Enum):
    """Which list of tile configs a launch autotunes over: `CONFIGS[family][kind]` in each kernel file."""

    # fp16/bf16 dense convolutions and GEMMs: 2-byte operands, the largest tensor-core tiles
    HALF = "half"
    # fp32 inputs, IEEE or tf32: 4-byte operands need twice the shared memory per pipeline stage
    FP32 = "fp32"
    # conv.py only, any dtype: the stem's flattened taps and grouped convolutions, whose operand
    # tiles are element-wise gathers with per-element masks; they need more registers, so smaller
    # tiles per warp
    GATHER = "gather"


def config_kind(dtype: torch.dtype, gather: bool = False) -> ConfigKind:
    """The config kind of a launch with inputs of `dtype` (see ConfigKind)."""
    if gather:
        return ConfigKind.GATHER
    return ConfigKind.FP32 if dtype == torch.float32 else ConfigKind.HALF


ConfigRows = dict[str, dict[ConfigKind, list[tuple[int, int, int, int, int]]]]

# Under TRITON_INTERPRET=1 there is no autotuner (it needs a driver): one fixed config.  The
# interpreter pays per operation, not per element, so large tiles (few programs, few loop trips) run
# fastest; the tests' channel counts still straddle these blocks.
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}


def dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """`tl.dot` input precision: tf32 only when asked for and the inputs are fp32."""
    return "tf32" if (dtype == torch.float32 and allow_tf32) else "ieee"


def upcast(dtype: torch.dtype) -> bool:
    """The kernels' UPCAST flag: bf16 operand tiles go to fp32 before `tl.dot`, only when interpreting.

    Triton's interpreter computes bf16 arithmetic and `tl.dot` on the raw bits instead of the values
    (triton issue 11584), so there the tiles are upcast first (`dot_acc`); loads, stores and the
    epilogue stay bf16.  Compiled kernels never upcast: native bf16 `tl.dot` is tested on a GPU.
    """
    return interpreting() and dtype == torch.bfloat16


def gemm_meta(dtype: torch.dtype, residual: torch.Tensor | None, relu: bool, allow_tf32: bool) -> dict:
    """The meta-parameters both kernels take for their operands and epilogue."""
    return dict(
        HAS_RESIDUAL=residual is not None,
        RELU=bool(relu),
        UPCAST=upcast(dtype),
        DOT_PRECISION=dot_precision(dtype, allow_tf32),
    )


def epilogue_operands(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: object,
    shift: object,
    residual: torch.Tensor | None,
    out: torch.Tensor | None,
    shape: tuple[int, int, int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Check what both launchers take besides x, weight and geometry; return (scale, shift, residual, y).

    scale and shift must be fp32 (K,), residual None or the output's `shape` (N, K, P, Q) in x's
    dtype, all on one device; `out` None or a channels_last buffer of `shape`.  The residual comes
    back channels_last, y is the output tensor (`out` itself when given).
    """
    n, k, p, q = shape
    scale = check_affine(scale, "scale", k)
    shift = check_affine(shift, "shift", k)
    if residual is not None:
        check_tensor(residual, "residual", 4)
        check_same_dtype(x, residual, "residual")
        if tuple(residual.shape) != shape:
            raise ValueError(f"residual must have the output's shape {shape}, got {tuple(residual.shape)}")
    check_devices({"x": x, "weight": weight, "scale": scale, "shift": shift, "residual": residual})
    y = output(shape, x, out)
    return scale, shift, None if residual is None else channels_last(residual), y


def epilogue_args(
    scale: torch.Tensor, shift: torch.Tensor, residual: torch.Tensor | None, y: torch.Tensor
) -> tuple:
    """The kernels' epilogue arguments, in order: scale_ptr, shift_ptr, res_ptr and its 4 strides, y_ptr."""
    res = residual if residual is not None else y  # never read when HAS_RESIDUAL is False
    return (scale, shift, res, *res.stride(), y)


@triton.jit
def grouped_tile(pid, rows, cols, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Program `pid`'s tile (pid_m, pid_n) of a rows x cols output, in grouped order (Triton's matmul tutorial).

    Programs run in groups of GROUP_M row-tiles per column-tile, so that a weight column-tile stays
    in L2 while consecutive programs sweep over output pixels.
    """
    num_pid_m = tl.cdiv(rows, BLOCK_M)
    num_pid_n = tl.cdiv(cols, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def output_pixels(pid_m, N, P, Q, BLOCK_M: tl.constexpr):
    """Row-tile `pid_m` of the N·P·Q output pixels: (offs_m, m_ok, n, p, q), row m = (n·P + p)·Q + q."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < N * P * Q
    q = offs_m % Q
    p = (offs_m // Q) % P
    n = offs_m // (P * Q)
    return offs_m, m_ok, n, p, q


@triton.jit
def dot_acc(a, b, acc, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """acc + a @ b in fp32.  UPCAST (see `upcast`): when interpreting, bf16 tiles are converted to fp32
    first, because Triton's interpreter computes bf16 tl.dot on raw bits (triton issue 11584)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


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


def _prune(
    reduction: Callable[[dict], int], configs: list[triton.Config], named_args: dict, **kwargs
) -> list[triton.Config]:
    a = {**named_args, **kwargs}
    return prune_gemm_configs(configs, a["N"] * a["P"] * a["Q"], a["K"], reduction(a))


class GemmLauncher:
    """The launch path of a kernel over an (N·P·Q) x K output in BLOCK_M x BLOCK_N tiles (1-D grid).

    Interpreting, it runs INTERPRETER_CONFIG (the autotuner needs a driver); on a GPU it autotunes
    over `configs[family][kind]` for the device's family, pruning tiles far larger than the problem;
    `reduction(args)` gives the length of the reduction from the kernel's named arguments.  Each
    (family, kind) gets its own autotuner, built on first use, with its own tuning cache.
    """

    def __init__(self, kernel: Any, configs: ConfigRows, key: list[str], reduction: Callable[[dict], int]) -> None:
        # kernel: a @triton.jit function (an InterpretedFunction when interpreting)
        if set(configs) != set(FAMILIES) or any(not set(kinds) <= set(ConfigKind) for kinds in configs.values()):
            raise ValueError(f"configs must map each of {FAMILIES} to lists keyed by ConfigKind")
        self.kernel, self.configs, self.key = kernel, configs, key
        self.prune = functools.partial(_prune, reduction)
        self._tuned: dict[tuple[str, ConfigKind], triton.runtime.Autotuner] = {}

    def tuned(self, family: str, kind: ConfigKind) -> triton.runtime.Autotuner:
        """The autotuned kernel for a GPU family and config kind."""
        if (family, kind) not in self._tuned:
            self._tuned[family, kind] = triton.autotune(
                configs=make_configs(self.configs[family][kind]), key=self.key,
                prune_configs_by={"early_config_prune": self.prune},
            )(self.kernel)
        return self._tuned[family, kind]

    def __call__(self, args: tuple, meta: dict, *, rows: int, cols: int, device: torch.device,
                 kind: ConfigKind) -> None:
        """Launch over a `rows` x `cols` output (nothing to do when it is empty)."""
        if rows == 0 or cols == 0:
            return

        def grid(cfg):
            return (triton.cdiv(rows, cfg["BLOCK_M"]) * triton.cdiv(cols, cfg["BLOCK_N"]),)

        if interpreting():
            self.kernel[grid(INTERPRETER_CONFIG)](*args, **meta, **INTERPRETER_CONFIG)
        else:
            with torch.cuda.device(device):
                self.tuned(gpu_family(device), kind)[grid](*args, **meta)
