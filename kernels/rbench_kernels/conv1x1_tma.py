"""The stride-1 1x1 convolution on Hopper: a persistent GEMM fed by TMA tensor descriptors.

Over dense NHWC input a stride-1 1x1 convolution is the plain product (N·H·W, C) @ (C, K).  Here
both operands and the output move through tensor descriptors (`tl.make_tensor_descriptor`): the
copy engine (TMA: UTMALDG / UTMASTG in SASS) fetches whole boxes into shared memory for the warpgroup
MMAs instead of every thread computing addresses and masks, and out-of-bounds boxes are clipped or
zero-filled by the hardware.  The grid is persistent: one program per SM walks the tiles in grouped
order, so that one tile's epilogue overlaps the next tile's loads.  The epilogue (BN affine,
residual, ReLU) runs on the accumulator; 256-wide tiles store in two halves to stay in registers.

`conv1x1.py` decides between this path and its pointer kernel (`tma_unsupported`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import Target, ensure_allocator, tma_refusal
from ._gemm import ConfigKind, ConfigRows, Epilogue, bn_act, dot_acc, grouped_tile, split_range, store_partial
from ._launch import GemmLauncher, Problem


@triton.jit
def _epilogue_store(acc, off_m, off_n, K, scale_ptr, shift_ptr, r_desc, y_desc,
                    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr):
    """bn_act on one accumulator tile, the residual tile loaded and the result stored by TMA."""
    offs_n = off_n + tl.arange(0, acc.shape[1])
    res = acc
    if HAS_RESIDUAL:
        res = r_desc.load([off_m, off_n])
    y = bn_act(acc, offs_n, offs_n < K, scale_ptr, shift_ptr, res, HAS_RESIDUAL, RELU)
    y_desc.store([off_m, off_n], y.to(y_desc.dtype))


@triton.jit
def conv1x1_tma_kernel(
    # x: dense NHWC, the row-major (N·P·Q, C) matrix A; weight (K, C) row-major
    x_ptr, w_ptr,
    # epilogue (_gemm.Epilogue.args): scale, shift fp32 (K,); residual and y dense NHWC (N·P·Q, K)
    # matrices (the residual's strides are not read); fp32 split-K partials
    scale_ptr, shift_ptr, res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, part_ptr,
    # sizes
    N, C, K, P, Q,
    # meta-parameters
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreting bf16, tl.dot on fp32 tiles: bf16 math there is on raw bits (triton#11584)
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    M = N * P * Q
    # 256-wide tiles run their epilogue in two 128-wide halves (fewer live registers)
    HALVES: tl.constexpr = 2 if BLOCK_N >= 256 else 1
    EPI_N: tl.constexpr = BLOCK_N // HALVES
    a_desc = tl.make_tensor_descriptor(x_ptr, shape=[M, C], strides=[C, 1], block_shape=[BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(w_ptr, shape=[K, C], strides=[C, 1], block_shape=[BLOCK_N, BLOCK_K])
    y_desc = tl.make_tensor_descriptor(y_ptr, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, EPI_N])
    r_desc = tl.make_tensor_descriptor(res_ptr, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, EPI_N])

    # this program's share of the reduction (all of it unless the launch splits K)
    k_lo, k_hi = split_range(tl.cdiv(C, BLOCK_K))
    num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(K, BLOCK_N)
    # persistent: program i takes tiles i, i + programs, ...; flatten lets the pipeliner prefetch
    # the next tile's operands while this one's epilogue runs
    for tile in tl.range(tl.program_id(0), num_tiles, tl.num_programs(0), flatten=True):
        pid_m, pid_n = grouped_tile(tile, M, K, BLOCK_M, BLOCK_N, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_lo, k_hi):
            a = a_desc.load([off_m, ki * BLOCK_K])
            b = b_desc.load([off_n, ki * BLOCK_K])
            acc = dot_acc(a, b.T, acc, UPCAST, DOT_PRECISION)

        if SPLIT_K:
            offs_m = off_m + tl.arange(0, BLOCK_M)
            offs_n = off_n + tl.arange(0, BLOCK_N)
            store_partial(acc, offs_m, offs_n, offs_m < M, offs_n < K, M, K, part_ptr)
        elif HALVES == 2:
            left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, EPI_N)), (0, 2, 1)))
            _epilogue_store(left, off_m, off_n, K, scale_ptr, shift_ptr, r_desc, y_desc, HAS_RESIDUAL, RELU)
            _epilogue_store(right, off_m, off_n + EPI_N, K, scale_ptr, shift_ptr, r_desc, y_desc,
                            HAS_RESIDUAL, RELU)
        else:
            _epilogue_store(acc, off_m, off_n, K, scale_ptr, shift_ptr, r_desc, y_desc, HAS_RESIDUAL, RELU)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), Hopper only (the copy engine is sm_90's).
# 128x256x64 with 8 warps (two warpgroups, 128 accumulator registers each) holds its epilogue in
# registers because it stores in halves; 4 stages of it would need more than 227 KB of shared
# memory.  SMALL tiles feed split-K launches.  All checked by `python -m rbench_kernels.check`.
CONFIGS: ConfigRows = {
    "sm90": {
        ConfigKind.HALF: [(128, 256, 64, 8, 3), (128, 128, 64, 8, 3), (64, 128, 64, 4, 4), (128, 64, 64, 4, 4)],
        ConfigKind.SMALL: [(64, 64, 64, 4, 4), (64, 32, 64, 4, 4), (64, 32, 32, 4, 4)],
        ConfigKind.FP32: [(128, 128, 32, 8, 3), (128, 64, 32, 4, 3)],
    },
}

AUTOTUNE_KEY = ["C", "K", "HAS_RESIDUAL", "RELU", "DOT_PRECISION", "SPLIT_K"]

_launch = GemmLauncher(
    conv1x1_tma_kernel, CONFIGS, AUTOTUNE_KEY, families=("sm90",), persistent=True,
    problem=lambda a: Problem(a["N"], a["P"], a["Q"], a["K"], a["C"]),
)


def _aligned(t: torch.Tensor) -> bool:
    """TMA's rules for a row-major matrix: 16-byte aligned base and row pitch, unit inner stride."""
    e = t.element_size()
    return t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and (t.stride(0) * e) % 16 == 0


def _pixel_rows(t: torch.Tensor) -> torch.Tensor:
    """A channels_last (N, C, H, W) tensor as the (N·H·W, C) matrix of its pixels (a view when dense)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def tma_unsupported(x: torch.Tensor, w2: torch.Tensor, stride: int, ep: Epilogue, tgt: Target,
                    precision: str) -> str:
    """Why this path cannot take the launch ('' when it can): the explicit check before any launch.

    x is the (N, C, H, W) input after its channels_last conversion, w2 the (K, C) weight, precision
    the launch's DOT_PRECISION."""
    refusal = tma_refusal(tgt, x.dtype, precision)
    if refusal:
        return refusal
    if stride != 1:
        return "stride 2 samples every other pixel: the pointer kernel (README: the strided 1x1)"
    if not x.is_contiguous(memory_format=torch.channels_last):
        return "x is not dense NHWC"
    n, c, h, w = x.shape
    k = w2.shape[0]
    operands = {"x": _pixel_rows(x), "weight": w2, "y": _pixel_rows(ep.y)}
    if ep.residual is not None:
        operands["residual"] = _pixel_rows(ep.residual)
    bad = [name for name, t in operands.items() if t.dim() != 2 or not _aligned(t)]
    if bad:
        return f"{', '.join(bad)} break TMA's 16-byte rules (C={c}, K={k}, {x.dtype})"
    return ""


def launch(x: torch.Tensor, w2: torch.Tensor, ep: Epilogue, meta: dict, kind: ConfigKind) -> None:
    """Run the TMA path (after `tma_unsupported` said yes)."""
    n, c, h, w = x.shape
    k = w2.shape[0]
    device = x.device
    _launch((x, w2), (n, c, k, h, w), ep, meta, kind=kind, device=device,
            before=lambda: ensure_allocator(device))

