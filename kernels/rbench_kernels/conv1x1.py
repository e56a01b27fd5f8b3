"""The bottleneck 1x1 convolution as a GEMM (N·P·Q x C) @ (C x K) with the fused BN/residual/ReLU epilogue.

Over NHWC input a 1x1 convolution is a plain matrix product: row m of A is the channel vector of
pixel (n, p·stride, q·stride).  With stride 1 the rows are contiguous, with stride 2 (the downsample
shortcut) they are gathered by the row index math; either way no im2col buffer is built.  This file
holds the pointer kernel, which runs anywhere; on Hopper a stride-1 launch whose operands obey TMA's
rules takes `conv1x1_tma.py`'s descriptor-fed persistent kernel instead, by an explicit check.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import conv1x1_tma, qconv
from ._common import channels_last, check_same_dtype, check_tensor
from ._device import target
from ._gemm import (
    ConfigKind,
    ConfigRows,
    bn_act_store,
    config_kind,
    dot_acc,
    epilogue_operands,
    gemm_meta,
    grouped_tile,
    output_pixels,
    split_range,
)
from ._launch import GemmLauncher, Problem


@triton.jit
def conv1x1_bn_act_kernel(
    # input x: logical (N, C, H, W), NHWC in memory (stride_xc == 1)
    x_ptr, stride_xn, stride_xc, stride_xh, stride_xw,
    # weight: (K, C)
    w_ptr, stride_wk, stride_wc,
    # epilogue (_gemm.Epilogue.args): folded BatchNorm scale, shift fp32 (K,); residual (N, K, P, Q),
    # read only when HAS_RESIDUAL; output y (N, K, P, Q) channels_last, a row-major (N·P·Q, K)
    # matrix; fp32 partials (splits, N·P·Q, K), written instead when SPLIT_K
    scale_ptr, shift_ptr, res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, part_ptr,
    # sizes
    N, C, K, P, Q, conv_stride,
    # meta-parameters
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreting bf16, tl.dot on fp32 tiles: bf16 math there is on raw bits (triton#11584)
    SPLIT_K: tl.constexpr,  # a split of the reduction (program_id(1)) that stores fp32 partials
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), N * P * Q, K, BLOCK_M, BLOCK_N, GROUP_M)

    # Row m = (n·P + p)·Q + q of A is input pixel (n, p·stride, q·stride).
    offs_m, m_ok, n, p, q = output_pixels(pid_m, N, P, Q, BLOCK_M)
    a_rows = n * stride_xn + (p * conv_stride) * stride_xh + (q * conv_stride) * stride_xw
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < K
    # this program's channel blocks: all of them unless the launch splits the reduction
    k_lo, k_hi = split_range(tl.cdiv(C, BLOCK_K))
    offs_k = k_lo * BLOCK_K + tl.arange(0, BLOCK_K)
    a_ptrs = x_ptr + a_rows[:, None] + offs_k[None, :] * stride_xc
    b_ptrs = w_ptr + offs_k[:, None] * stride_wc + offs_n[None, :] * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(k_lo, k_hi):
        k_ok = offs_k < C - (kb - k_lo) * BLOCK_K
        a = tl.load(a_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = dot_acc(a, b, acc, UPCAST, DOT_PRECISION)
        a_ptrs += BLOCK_K * stride_xc
        b_ptrs += BLOCK_K * stride_wc

    bn_act_store(acc, offs_m, offs_n, m_ok, n_ok, n, p, q, N * P * Q, K, scale_ptr, shift_ptr,
                 res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, part_ptr,
                 HAS_RESIDUAL, RELU, SPLIT_K)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) per GPU family and kind of launch (ConfigKind),
# as in conv.py.  ResNet-50's 1x1 GEMMs are tall and skinny (M up to 802,816 at batch 256, K and C
# from 64 to 2048), so wide-M tiles dominate.  128x256 tiles spill on sm_90 with this epilogue
# (`python -m rbench_kernels.check`), so this kernel stops at 128x128 there (the TMA kernel's
# halved epilogue holds 128x256).  On sm_80, 64x64x32 w4 s3 spills 8 bytes in fp32 under Triton
# 3.6, so its fp32 sibling has 8 warps.
CONFIGS: ConfigRows = {
    "sm90": {
        ConfigKind.HALF: [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4)],
        ConfigKind.SMALL: [(64, 64, 64, 4, 4), (32, 64, 32, 4, 4), (64, 32, 32, 4, 4), (32, 32, 32, 4, 4)],
        ConfigKind.FP32: [(128, 64, 32, 4, 3), (64, 64, 32, 4, 3)],
    },
    "sm80": {
        ConfigKind.HALF: [(128, 128, 32, 4, 4), (128, 256, 32, 8, 3), (128, 64, 32, 4, 4), (64, 64, 32, 4, 4)],
        ConfigKind.SMALL: [(64, 64, 32, 4, 4), (32, 64, 32, 4, 4), (64, 32, 32, 4, 4), (32, 32, 32, 4, 4)],
        ConfigKind.FP32: [(128, 64, 32, 8, 3), (64, 64, 32, 8, 3)],
    },
    "gfx942": {
        ConfigKind.HALF: [(128, 128, 64, 8, 2), (256, 128, 64, 8, 2), (128, 64, 64, 4, 2), (64, 64, 64, 4, 2)],
        ConfigKind.SMALL: [(64, 64, 64, 4, 2), (32, 64, 32, 4, 2), (32, 32, 32, 4, 2), (32, 32, 16, 4, 2)],
        ConfigKind.FP32: [(128, 64, 32, 4, 2), (64, 64, 32, 4, 2)],
    },
}

# the layer's geometry; the batch is left to the launcher's M buckets (_launch.py)
AUTOTUNE_KEY = ["C", "K", "P", "Q", "conv_stride", "HAS_RESIDUAL", "RELU", "DOT_PRECISION", "SPLIT_K"]

# the reduction runs over the C input channels
_launch = GemmLauncher(conv1x1_bn_act_kernel, CONFIGS, AUTOTUNE_KEY,
                       problem=lambda a: Problem(a["N"], a["P"], a["Q"], a["K"], a["C"]))


def path(x: torch.Tensor, w2: torch.Tensor, stride: int, ep, precision: str) -> tuple[str, str]:
    """("tma", "") when conv1x1_tma takes the launch, else ("pointer", why not): decided, never a crash.

    x is the channels_last input, w2 the (K, C) weight, ep the checked epilogue operands, precision
    the launch's DOT_PRECISION."""
    why = conv1x1_tma.tma_unsupported(x, w2, stride, ep, target(x.device), precision)
    return ("pointer", why) if why else ("tma", "")


def conv1x1_bn_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    stride: int = 1,
    residual: torch.Tensor | None = None,
    relu: bool = True,
    allow_tf32: bool = False,
    out: torch.Tensor | None = None,
    residual_scale: float | None = None,
    out_scale: float | None = None,
) -> torch.Tensor:
    """y = act(conv2d(x, weight, stride) * scale[k] + shift[k] + residual) for a 1x1 kernel, as one GEMM.

    x (N, C, H, W); weight (K, C) or (K, C, 1, 1) in x's dtype; scale, shift fp32 (K,); residual
    (N, K, P, Q) or None, with P = ceil(H / stride), Q = ceil(W / stride) (padding is 0).  Returns
    (N, K, P, Q) in x's dtype, channels_last: a new tensor, or `out`, a preallocated channels_last
    (N, K, P, Q) tensor of x's dtype on x's device, written and returned.  Accumulation in fp32 (tf32
    only with allow_tf32=True for fp32 inputs).  NCHW inputs are converted to channels_last once per
    call.  Forward only.

    int8 / float8_e4m3fn(uz) operands go to `qconv.conv1x1_bn_act_q` (see `conv_bn_act`): `residual_scale`
    scales the quantized residual, `out_scale` quantizes the output into x's dtype (fp32 without it).
    """
    if qconv.quantized(x, out_scale, residual_scale):
        return qconv.conv1x1_bn_act_q(x, weight, scale, shift, stride=stride, residual=residual,
                                      residual_scale=residual_scale, relu=relu, out_scale=out_scale, out=out)
    check_tensor(x, "x", 4)
    check_tensor(weight, "weight", (2, 4))
    check_same_dtype(x, weight, "weight")
    N, C, H, W = x.shape
    if weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1):
        raise ValueError(f"weight must be (K, C) or (K, C, 1, 1), got {tuple(weight.shape)}")
    K = weight.shape[0]
    if weight.shape[1] != C:
        raise ValueError(f"weight must be (K, C={C}) for x {tuple(x.shape)}, got {tuple(weight.shape)}")
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    # a 1x1 kernel with padding 0 samples pixels 0, stride, 2·stride, ...
    P = (H - 1) // stride + 1
    Q = (W - 1) // stride + 1
    ep = epilogue_operands(x, weight, scale, shift, residual, out, (N, K, P, Q))

    # NCHW inputs are converted to NHWC once here (a no-op for channels_last tensors).
    x = channels_last(x)
    w2 = weight.reshape(K, C)
    meta = gemm_meta(x.dtype, ep.residual, relu, allow_tf32)
    kind = config_kind(x.dtype)
    if path(x, w2, stride, ep, meta["DOT_PRECISION"])[0] == "tma":
        conv1x1_tma.launch(x, w2, ep, meta, kind)
    else:
        _launch((x, *x.stride(), w2, *w2.stride()), (N, C, K, P, Q, stride), ep, meta, kind=kind, device=x.device)
    return ep.y
