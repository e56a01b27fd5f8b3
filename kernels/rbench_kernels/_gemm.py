"""What the convolution kernels share as GEMMs: config kinds, epilogue operands, tile order, fused epilogue.

Every convolution kernel (`conv.py`'s implicit GEMM, `conv_tma.py`'s tap descriptors, `conv1x1.py`
and `conv1x1_tma.py`'s plain GEMMs) computes an (N·P·Q) x K output matrix, rows the output pixels
and columns the output channels, in BLOCK_M x BLOCK_N tiles, then either applies the folded
BatchNorm, residual and ReLU before a single NHWC store or, in a split-K launch, stores its fp32
partial sum for `splitk.py` to finish.  How they are launched is `_launch.py`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._common import (
    channels_last,
    check_affine,
    check_devices,
    check_same_dtype,
    check_tensor,
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
    # fp16/bf16 launches too small to fill the device with 128x128 tiles (batch 1, layer4 at any
    # batch): small tiles and short reductions, which split-K multiplies into a wave (_launch.py)
    SMALL = "small"


def config_kind(dtype: torch.dtype, gather: bool = False) -> ConfigKind:
    """The config kind of a launch with inputs of `dtype` (see ConfigKind)."""
    if gather:
        return ConfigKind.GATHER
    return ConfigKind.FP32 if dtype == torch.float32 else ConfigKind.HALF


ConfigRows = dict[str, dict[ConfigKind, list[tuple[int, int, int, int, int]]]]


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


@dataclass
class Epilogue:
    """The output of a convolution and what its epilogue applies: y = act(acc * scale + shift + residual).

    y is the (N, K, P, Q) channels_last output, a row-major (N·P·Q, K) matrix; residual is None or
    channels_last in y's shape.  `args(part)` gives the kernels' epilogue arguments, in order:
    scale_ptr, shift_ptr, res_ptr and its 4 strides, y_ptr, part_ptr (the fp32 split-K partials).
    """

    scale: torch.Tensor
    shift: torch.Tensor
    residual: torch.Tensor | None
    y: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.y.shape)  # (N, K, P, Q)

    def args(self, part: torch.Tensor | None) -> tuple:
        res = self.residual if self.residual is not None else self.y  # never read without HAS_RESIDUAL
        return (self.scale, self.shift, res, *res.stride(), self.y, part if part is not None else self.scale)


def epilogue_operands(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: object,
    shift: object,
    residual: torch.Tensor | None,
    out: torch.Tensor | None,
    shape: tuple[int, int, int, int],
) -> Epilogue:
    """Check what every launcher takes besides x, weight and geometry.

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
    return Epilogue(scale, shift, None if residual is None else channels_last(residual), y)


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
def split_range(total):
    """This program's share [lo, hi) of `total` reduction steps: split program_id(1) of num_programs(1).

    Balanced, so that no split is empty while there are at least as many steps as splits; a launch
    without split-K has one split, the whole range."""
    ks = tl.program_id(1)
    splits = tl.num_programs(1)
    return ks * total // splits, (ks + 1) * total // splits


@triton.jit
def bn_act(acc, offs_n, n_ok, scale_ptr, shift_ptr, res, HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr):
    """The epilogue's math in fp32 on an accumulator tile: BatchNorm affine, + residual tile, ReLU."""
    scale = tl.load(scale_ptr + offs_n, mask=n_ok, other=0.0)
    shift = tl.load(shift_ptr + offs_n, mask=n_ok, other=0.0)
    y = acc * scale[None, :] + shift[None, :]
    if HAS_RESIDUAL:
        y += res.to(tl.float32)
    if RELU:
        y = tl.maximum(y, 0.0)
    return y


@triton.jit
def store_partial(acc, offs_m, offs_n, m_ok, n_ok, M, K, part_ptr):
    """A split-K program's fp32 partial sum, to (split, row, column) of the (splits, M, K) buffer."""
    part = part_ptr + tl.program_id(1) * M * K
    tl.store(part + offs_m[:, None] * K + offs_n[None, :], acc, mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def bn_act_store(acc, offs_m, offs_n, m_ok, n_ok, n, p, q, M, K, scale_ptr, shift_ptr,
                 res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, part_ptr,
                 HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, SPLIT_K: tl.constexpr):
    """How the pointer kernels finish a tile, rows the output pixels (n, p, q), columns the output
    channels: with SPLIT_K the fp32 partial sum (`store_partial`); otherwise the epilogue (`bn_act`)
    and one store in the output dtype into the dense row-major (N·P·Q, K) output (NHWC)."""
    if SPLIT_K:
        store_partial(acc, offs_m, offs_n, m_ok, n_ok, M, K, part_ptr)
    else:
        out_mask = m_ok[:, None] & n_ok[None, :]
        res = acc
        if HAS_RESIDUAL:
            res_rows = n * stride_rn + p * stride_rp + q * stride_rq
            res = tl.load(res_ptr + res_rows[:, None] + offs_n[None, :] * stride_rk, mask=out_mask, other=0.0)
        y = bn_act(acc, offs_n, n_ok, scale_ptr, shift_ptr, res, HAS_RESIDUAL, RELU)
        tl.store(y_ptr + offs_m[:, None] * K + offs_n[None, :], y.to(y_ptr.dtype.element_ty), mask=out_mask)
