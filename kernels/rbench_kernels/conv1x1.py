"""The bottleneck 1x1 convolution as a GEMM (N·P·Q x C) @ (C x K) with the fused BN/residual/ReLU epilogue.

Over NHWC input a 1x1 convolution is a plain matrix product: row m of A is the channel vector of
pixel (n, p·stride, q·stride).  With stride 1 the rows are contiguous, with stride 2 (the downsample
shortcut) they are gathered by the row index math; either way no im2col buffer is built.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._common import (
    bn_act_store,
    FAMILIES,
    channels_last,
    check_affine,
    check_devices,
    check_same_dtype,
    check_tensor,
    dot_precision,
    empty_output,
    gpu_family,
    interpreting,
    make_configs,
    prune_gemm_configs,
)


@triton.jit
def conv1x1_bn_act_kernel(
    # input x: logical (N, C, H, W), NHWC in memory (stride_xc == 1)
    x_ptr, stride_xn, stride_xc, stride_xh, stride_xw,
    # weight: (K, C)
    w_ptr, stride_wk, stride_wc,
    # folded BatchNorm: fp32 (K,)
    scale_ptr, shift_ptr,
    # residual: logical (N, K, P, Q); read only when HAS_RESIDUAL
    res_ptr, stride_rn, stride_rk, stride_rp, stride_rq,
    # output y: (N, K, P, Q) channels_last, i.e. a dense row-major (N·P·Q, K) matrix
    y_ptr,
    # sizes
    N, C, K, P, Q, conv_stride,
    # meta-parameters
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    M = N * P * Q
    # Grouped tile order (Triton matmul tutorial): GROUP_M row-tiles per weight column-tile.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(K, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Row m = (n·P + p)·Q + q of A is input pixel (n, p·stride, q·stride).
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    q = offs_m % Q
    p = (offs_m // Q) % P
    n = offs_m // (P * Q)
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
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K * stride_xc
        b_ptrs += BLOCK_K * stride_wc

    bn_act_store(acc, offs_m, offs_n, m_ok, n_ok, n, p, q, K, scale_ptr, shift_ptr,
                 res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, HAS_RESIDUAL, RELU)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) per GPU family, as in conv.py: "16" for
# fp16/bf16, "32" for fp32.  ResNet-50's 1x1 GEMMs are tall and skinny (M up to 802,816 at batch
# 256, K and C from 64 to 2048), so wide-M tiles dominate.  128x256 tiles spill on sm_90 with this
# epilogue (`python -m rbench_kernels.check`), so Hopper stops at 128x128.
CONFIGS: dict[str, dict[str, list[tuple[int, int, int, int, int]]]] = {
    "sm90": {
        "16": [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4)],
        "32": [(128, 64, 32, 4, 3), (64, 64, 32, 4, 3)],
    },
    "sm80": {
        "16": [(128, 128, 32, 4, 4), (128, 256, 32, 8, 3), (128, 64, 32, 4, 4), (64, 64, 32, 4, 4)],
        "32": [(128, 64, 32, 8, 3), (64, 64, 32, 4, 3)],
    },
    "gfx942": {
        "16": [(128, 128, 64, 8, 2), (256, 128, 64, 8, 2), (128, 64, 64, 4, 2), (64, 64, 64, 4, 2)],
        "32": [(128, 64, 32, 4, 2), (64, 64, 32, 4, 2)],
    },
}
assert set(CONFIGS) == set(FAMILIES)

# Under TRITON_INTERPRET=1 there is no autotuner (it needs a driver): one fixed config.  The
# interpreter pays per operation, not per element, so large tiles (few programs, few loop trips) run
# fastest; the tests' channel counts still straddle these blocks.
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}

AUTOTUNE_KEY = ["N", "C", "K", "P", "Q", "conv_stride", "HAS_RESIDUAL", "RELU", "DOT_PRECISION"]


def _prune(configs, named_args, **kwargs):
    a = {**named_args, **kwargs}
    return prune_gemm_configs(configs, a["N"] * a["P"] * a["Q"], a["K"], a["C"])


@functools.lru_cache(maxsize=None)
def _tuned(family: str, width: str):
    return triton.autotune(
        configs=make_configs(CONFIGS[family][width]), key=AUTOTUNE_KEY, prune_configs_by={"early_config_prune": _prune}
    )(conv1x1_bn_act_kernel)


def conv1x1_bn_act_out(
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
    """`conv1x1_bn_act` writing into `out` (a channels_last buffer) when given; see `conv1x1_bn_act`."""
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
    scale = check_affine(scale, "scale", K)
    shift = check_affine(shift, "shift", K)
    if residual is not None:
        check_tensor(residual, "residual", 4)
        check_same_dtype(x, residual, "residual")
        if tuple(residual.shape) != (N, K, P, Q):
            raise ValueError(f"residual must have the output's shape {(N, K, P, Q)}, got {tuple(residual.shape)}")
    check_devices({"x": x, "weight": weight, "scale": scale, "shift": shift, "residual": residual, "out": out})

    # NCHW inputs are converted to NHWC once here (a no-op for channels_last tensors).
    x = channels_last(x)
    w2 = weight.reshape(K, C)
    if residual is not None:
        residual = channels_last(residual)
    y = empty_output((N, K, P, Q), x, out)
    if y.numel() == 0:
        return y
    res = residual if residual is not None else y  # never read when HAS_RESIDUAL is False

    M = N * P * Q
    args = (
        x, *x.stride(),
        w2, *w2.stride(),
        scale, shift,
        res, *res.stride(),
        y,
        N, C, K, P, Q, stride,
    )
    meta = dict(
        HAS_RESIDUAL=residual is not None,
        RELU=bool(relu),
        UPCAST=interpreting() and x.dtype == torch.bfloat16,
        DOT_PRECISION=dot_precision(x.dtype, allow_tf32),
    )

    def grid(cfg):
        return (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(K, cfg["BLOCK_N"]),)

    if interpreting():
        conv1x1_bn_act_kernel[grid(INTERPRETER_CONFIG)](*args, **meta, **INTERPRETER_CONFIG)
    else:
        width = "32" if x.dtype == torch.float32 else "16"
        with torch.cuda.device(x.device):
            _tuned(gpu_family(x.device), width)[grid](*args, **meta)
    return y


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
) -> torch.Tensor:
    """y = act(conv2d(x, weight, stride) * scale[k] + shift[k] + residual) for a 1x1 kernel, as one GEMM.

    x (N, C, H, W); weight (K, C) or (K, C, 1, 1) in x's dtype; scale, shift fp32 (K,); residual
    (N, K, P, Q) or None, with P = ceil(H / stride), Q = ceil(W / stride) (padding is 0).  Returns
    (N, K, P, Q) in x's dtype, channels_last; accumulation in fp32 (tf32 only with allow_tf32=True for
    fp32 inputs).  NCHW inputs are converted to channels_last once per call.  Forward only.
    """
    return conv1x1_bn_act_out(
        x, weight, scale, shift, stride=stride, residual=residual, relu=relu, allow_tf32=allow_tf32
    )
