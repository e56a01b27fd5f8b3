"""The bottleneck 1x1 convolution as a GEMM (N·P·Q x C) @ (C x K) with the fused BN/residual/ReLU epilogue.

Over NHWC input a 1x1 convolution is a plain matrix product: row m of A is the channel vector of
pixel (n, p·stride, q·stride).  With stride 1 the rows are contiguous, with stride 2 (the downsample
shortcut) they are gathered by the row index math; either way no im2col buffer is built.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import channels_last, check_same_dtype, check_tensor
from ._gemm import (
    ConfigKind,
    ConfigRows,
    GemmLauncher,
    bn_act_store,
    config_kind,
    dot_acc,
    epilogue_args,
    epilogue_operands,
    gemm_meta,
    grouped_tile,
    output_pixels,
)


@triton.jit
def conv1x1_bn_act_kernel(
    # input x: logical (N, C, H, W), NHWC in memory (stride_xc == 1)
    x_ptr, stride_xn, stride_xc, stride_xh, stride_xw,
    # weight: (K, C)
    w_ptr, stride_wk, stride_wc,
    # epilogue (_gemm.epilogue_args): folded BatchNorm scale, shift fp32 (K,); residual (N, K, P, Q),
    # read only when HAS_RESIDUAL; output y (N, K, P, Q) channels_last, a row-major (N·P·Q, K) matrix
    scale_ptr, shift_ptr, res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr,
    # sizes
    N, C, K, P, Q, conv_stride,
    # meta-parameters
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreting bf16, tl.dot on fp32 tiles: bf16 math there is on raw bits (triton#11584)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), N * P * Q, K, BLOCK_M, BLOCK_N, GROUP_M)

    # Row m = (n·P + p)·Q + q of A is input pixel (n, p·stride, q·stride).
    offs_m, m_ok, n, p, q = output_pixels(pid_m, N, P, Q, BLOCK_M)
    a_rows = n * stride_xn + (p * conv_stride) * stride_xh + (q * conv_stride) * stride_xw
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < K
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = x_ptr + a_rows[:, None] + offs_k[None, :] * stride_xc
    b_ptrs = w_ptr + offs_k[:, None] * stride_wc + offs_n[None, :] * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        k_ok = offs_k < C - k0
        a = tl.load(a_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = dot_acc(a, b, acc, UPCAST, DOT_PRECISION)
        a_ptrs += BLOCK_K * stride_xc
        b_ptrs += BLOCK_K * stride_wc

    bn_act_store(acc, offs_m, offs_n, m_ok, n_ok, n, p, q, K, scale_ptr, shift_ptr,
                 res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, HAS_RESIDUAL, RELU)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) per GPU family and kind of launch (ConfigKind),
# as in conv.py.  ResNet-50's 1x1 GEMMs are tall and skinny (M up to 802,816 at batch 256, K and C
# from 64 to 2048), so wide-M tiles dominate.  128x256 tiles spill on sm_90 with this epilogue
# (`python -m rbench_kernels.check`), so Hopper stops at 128x128.
CONFIGS: ConfigRows = {
    "sm90": {
        ConfigKind.HALF: [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4)],
        ConfigKind.FP32: [(128, 64, 32, 4, 3), (64, 64, 32, 4, 3)],
    },
    "sm80": {
        ConfigKind.HALF: [(128, 128, 32, 4, 4), (128, 256, 32, 8, 3), (128, 64, 32, 4, 4), (64, 64, 32, 4, 4)],
        ConfigKind.FP32: [(128, 64, 32, 8, 3), (64, 64, 32, 4, 3)],
    },
    "gfx942": {
        ConfigKind.HALF: [(128, 128, 64, 8, 2), (256, 128, 64, 8, 2), (128, 64, 64, 4, 2), (64, 64, 64, 4, 2)],
        ConfigKind.FP32: [(128, 64, 32, 4, 2), (64, 64, 32, 4, 2)],
    },
}

AUTOTUNE_KEY = ["N", "C", "K", "P", "Q", "conv_stride", "HAS_RESIDUAL", "RELU", "DOT_PRECISION"]

# the reduction runs over the C input channels
_launch = GemmLauncher(conv1x1_bn_act_kernel, CONFIGS, AUTOTUNE_KEY, reduction=lambda a: a["C"])


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
) -> torch.Tensor:
    """y = act(conv2d(x, weight, stride) * scale[k] + shift[k] + residual) for a 1x1 kernel, as one GEMM.

    x (N, C, H, W); weight (K, C) or (K, C, 1, 1) in x's dtype; scale, shift fp32 (K,); residual
    (N, K, P, Q) or None, with P = ceil(H / stride), Q = ceil(W / stride) (padding is 0).  Returns
    (N, K, P, Q) in x's dtype, channels_last: a new tensor, or `out`, a preallocated channels_last
    (N, K, P, Q) tensor of x's dtype on x's device, written and returned.  Accumulation in fp32 (tf32
    only with allow_tf32=True for fp32 inputs).  NCHW inputs are converted to channels_last once per
    call.  Forward only.
    """
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
    scale, shift, residual, y = epilogue_operands(x, weight, scale, shift, residual, out, (N, K, P, Q))

    # NCHW inputs are converted to NHWC once here (a no-op for channels_last tensors).
    x = channels_last(x)
    w2 = weight.reshape(K, C)
    args = (
        x, *x.stride(),
        w2, *w2.stride(),
        *epilogue_args(scale, shift, residual, y),
        N, C, K, P, Q, stride,
    )
    meta = gemm_meta(x.dtype, residual, relu, allow_tf32)
    _launch(args, meta, rows=N * P * Q, cols=K, device=x.device, kind=config_kind(x.dtype))
    return y
