"""Fused convolution + folded BatchNorm + residual add + ReLU as one implicit GEMM over NHWC input.

The GEMM view: rows are the M = N·P·Q output pixels, columns the K output channels, and the reduction
runs over the R·S·C/groups input taps of each output.  The conv output never goes to memory unfused:
the epilogue applies scale/shift, adds the residual and clamps before the single store.
"""

from __future__ import annotations

import functools
from typing import Sequence

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
    pair,
    prune_gemm_configs,
)


@triton.jit
def conv_bn_act_kernel(
    # input x: logical (N, C, H, W), NHWC in memory (stride_xc == 1)
    x_ptr, stride_xn, stride_xc, stride_xh, stride_xw,
    # weight: logical (K, C // groups, R, S), (K, R, S, C // groups) in memory
    w_ptr, stride_wk, stride_wc, stride_wr, stride_ws,
    # folded BatchNorm: fp32 (K,)
    scale_ptr, shift_ptr,
    # residual: logical (N, K, P, Q); read only when HAS_RESIDUAL
    res_ptr, stride_rn, stride_rk, stride_rp, stride_rq,
    # output y: (N, K, P, Q) channels_last, i.e. a dense row-major (N·P·Q, K) matrix
    y_ptr,
    # sizes
    N, C, H, W, K, P, Q,
    # geometry
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, C_PER_G, K_PER_G,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr,
    GROUPED: tl.constexpr, FLAT_K: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    M = N * P * Q
    # Tiles in groups of GROUP_M row-tiles per column-tile, so that the weight tile stays in L2
    # while consecutive programs sweep over pixels.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(K, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Rows: output pixel m = (n·P + p)·Q + q reads input pixel (p·stride - pad + r·dil, ...).
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    q = offs_m % Q
    p = (offs_m // Q) % P
    n = offs_m // (P * Q)
    ih0 = p * stride_h - pad_h
    iw0 = q * stride_w - pad_w
    x_rows = x_ptr + n * stride_xn

    # Columns: output channels.  The reduction of this tile spans the input channels of every group
    # its output channels belong to, [c_lo, c_lo + CT); weight taps of other groups are masked to
    # zero, which makes the (C, K) operand block-diagonal.  This keeps tl.dot's dimensions >= 16
    # when a group has only a few channels (ResNeXt: 4 to 32 per group).  With groups == 1 the span
    # is simply [0, C).
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < K
    k_first = pid_n * BLOCK_N
    k_last = tl.minimum(k_first + BLOCK_N, K) - 1
    g_first = k_first // K_PER_G
    c_lo = g_first * C_PER_G
    CT = (k_last // K_PER_G - g_first + 1) * C_PER_G
    # channel of the span, relative to the first channel of column k's group
    col_c0 = c_lo - (offs_n // K_PER_G) * C_PER_G
    w_cols = w_ptr + offs_n * stride_wk + col_c0 * stride_wc

    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FLAT_K:
        # Few channels per tap (the 3-channel stem): the reduction index runs over (r, s, c)
        # flattened, c fastest, so a 7x7x3 filter is 147 taps instead of 49 blocks of one channel.
        KT = R * S * CT
        for k0 in range(0, KT, BLOCK_K):
            kk = k0 + offs_k
            k_ok = kk < KT
            c = kk % CT
            rs = kk // CT
            r = rs // S
            s = rs % S
            ih = ih0[:, None] + (r * dil_h)[None, :]
            iw = iw0[:, None] + (s * dil_w)[None, :]
            a_mask = m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a = tl.load(
                x_rows[:, None] + ih * stride_xh + iw * stride_xw + (c_lo + c)[None, :] * stride_xc,
                mask=a_mask, other=0.0,
            )
            b_mask = k_ok[:, None] & n_ok[None, :]
            if GROUPED:
                wc = col_c0[None, :] + c[:, None]
                b_mask = b_mask & (wc >= 0) & (wc < C_PER_G)
            b = tl.load(
                w_cols[None, :] + (c * stride_wc + r * stride_wr + s * stride_ws)[:, None],
                mask=b_mask, other=0.0,
            )
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    else:
        # One loop over (tap, channel block): a single flat loop lets Triton pipeline the loads.
        num_cb = tl.cdiv(CT, BLOCK_K)
        for i in range(0, R * S * num_cb):
            rs = i // num_cb
            cb = i - rs * num_cb
            r = rs // S
            s = rs - r * S
            ih = ih0 + r * dil_h
            iw = iw0 + s * dil_w
            row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            c = cb * BLOCK_K + offs_k
            c_ok = c < CT
            a = tl.load(
                (x_rows + ih * stride_xh + iw * stride_xw)[:, None] + (c_lo + c)[None, :] * stride_xc,
                mask=row_ok[:, None] & c_ok[None, :], other=0.0,
            )
            b_mask = c_ok[:, None] & n_ok[None, :]
            if GROUPED:
                wc = col_c0[None, :] + c[:, None]
                b_mask = b_mask & (wc >= 0) & (wc < C_PER_G)
            b = tl.load(
                w_cols[None, :] + c[:, None] * stride_wc + (r * stride_wr + s * stride_ws),
                mask=b_mask, other=0.0,
            )
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)

    bn_act_store(acc, offs_m, offs_n, m_ok, n_ok, n, p, q, K, scale_ptr, shift_ptr,
                 res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, HAS_RESIDUAL, RELU)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) per GPU family and kind of launch:
#   "16"     fp16/bf16 dense convolutions (groups == 1, at least 16 channels);
#   "32"     fp32 (IEEE and tf32), which needs twice the shared memory per stage;
#   "gather" the stem's flattened taps and grouped convolutions, any dtype: their operand tiles are
#            element-wise gathers with per-element masks, which need more registers, so these use
#            smaller tiles per warp.
# Every entry is cross-compiled by `python -m rbench_kernels.check`, which fails on register
# spills; (64, 64, 32, 4, 3) for example spills in tf32 on sm_80 and so is not shipped there.
# Hopper runs 64-row warpgroup MMAs (wgmma); AMD's stream pipeliner wants num_stages=2.
CONFIGS: dict[str, dict[str, list[tuple[int, int, int, int, int]]]] = {
    "sm90": {
        "16": [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4)],
        "32": [(128, 64, 32, 8, 3), (64, 64, 32, 4, 3)],
        "gather": [(128, 64, 32, 8, 3), (64, 64, 32, 4, 3)],
    },
    "sm80": {
        "16": [(128, 128, 64, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 4)],
        "32": [(128, 64, 32, 8, 3)],
        "gather": [(128, 64, 32, 8, 3)],
    },
    "gfx942": {
        "16": [(128, 128, 64, 8, 2), (128, 128, 32, 4, 2), (128, 64, 64, 4, 2), (64, 64, 64, 4, 2)],
        "32": [(128, 64, 32, 4, 2), (64, 64, 32, 4, 2)],
        "gather": [(128, 64, 32, 4, 2), (64, 64, 32, 4, 2)],
    },
}
assert set(CONFIGS) == set(FAMILIES)

# Under TRITON_INTERPRET=1 there is no autotuner (it needs a driver): one fixed config.  The
# interpreter pays per operation, not per element, so large tiles (few programs, few loop trips) run
# fastest; the tests' channel counts still straddle these blocks.
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}

AUTOTUNE_KEY = [
    "N", "C", "H", "W", "K", "P", "Q", "stride_h", "stride_w", "pad_h", "pad_w", "dil_h", "dil_w",
    "C_PER_G", "K_PER_G", "R", "S", "HAS_RESIDUAL", "RELU", "DOT_PRECISION",
]


def _prune(configs, named_args, **kwargs):
    a = {**named_args, **kwargs}
    m = a["N"] * a["P"] * a["Q"]
    return prune_gemm_configs(configs, m, a["K"], a["R"] * a["S"] * a["C_PER_G"])


def flat_taps(c_per_g: int, k_per_g: int) -> bool:
    """Few input channels per tile (the 3-channel stem): flatten (r, s, c) so that tl.dot's
    reduction block is not mostly padding.  A tile of grouped output channels reads the channels
    of all its groups, at least 16 // k_per_g of them."""
    return c_per_g * max(1, 16 // k_per_g) < 16


def config_kind(dtype: torch.dtype, grouped: bool, flat_k: bool) -> str:
    """Which CONFIGS list a launch uses (see CONFIGS)."""
    if grouped or flat_k:
        return "gather"
    return "32" if dtype == torch.float32 else "16"


@functools.lru_cache(maxsize=None)
def _tuned(family: str, kind: str):
    return triton.autotune(
        configs=make_configs(CONFIGS[family][kind]), key=AUTOTUNE_KEY, prune_configs_by={"early_config_prune": _prune}
    )(conv_bn_act_kernel)


def conv_bn_act_out(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    residual: torch.Tensor | None = None,
    relu: bool = True,
    allow_tf32: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`conv_bn_act` writing into `out` (a channels_last buffer) when given; see `conv_bn_act`."""
    check_tensor(x, "x", 4)
    check_tensor(weight, "weight", 4)
    check_same_dtype(x, weight, "weight")
    N, C, H, W = x.shape
    K, c_per_g, R, S = weight.shape
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if C % groups or K % groups:
        raise ValueError(
            f"groups={groups} must divide both x's channels and weight's output channels, "
            f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    if c_per_g != C // groups:
        raise ValueError(
            f"weight must have shape (K, C // groups, R, S) = (K, {C // groups}, R, S) for x {tuple(x.shape)} "
            f"and groups={groups}, got {tuple(weight.shape)}"
        )
    (sh, sw), (ph, pw), (dh, dw) = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    if min(sh, sw) < 1 or min(ph, pw) < 0 or min(dh, dw) < 1:
        raise ValueError(f"need stride >= 1, padding >= 0, dilation >= 1; got {stride=}, {padding=}, {dilation=}")
    P = (H + 2 * ph - dh * (R - 1) - 1) // sh + 1
    Q = (W + 2 * pw - dw * (S - 1) - 1) // sw + 1
    if P < 1 or Q < 1:
        raise ValueError(
            f"output would be empty: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
            f"{stride=}, {padding=}, {dilation=} give P={P}, Q={Q}"
        )
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
    weight = channels_last(weight)
    if residual is not None:
        residual = channels_last(residual)
    y = empty_output((N, K, P, Q), x, out)
    if y.numel() == 0:
        return y
    res = residual if residual is not None else y  # never read when HAS_RESIDUAL is False

    k_per_g = K // groups
    M = N * P * Q
    args = (
        x, *x.stride(),
        weight, *weight.stride(),
        scale, shift,
        res, *res.stride(),
        y,
        N, C, H, W, K, P, Q,
        sh, sw, ph, pw, dh, dw, c_per_g, k_per_g,
    )
    meta = dict(
        R=R, S=S,
        GROUPED=groups > 1,
        FLAT_K=flat_taps(c_per_g, k_per_g),
        HAS_RESIDUAL=residual is not None,
        RELU=bool(relu),
        UPCAST=interpreting() and x.dtype == torch.bfloat16,
        DOT_PRECISION=dot_precision(x.dtype, allow_tf32),
    )

    def grid(cfg):
        return (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(K, cfg["BLOCK_N"]),)

    if interpreting():
        conv_bn_act_kernel[grid(INTERPRETER_CONFIG)](*args, **meta, **INTERPRETER_CONFIG)
    else:
        kind = config_kind(x.dtype, meta["GROUPED"], meta["FLAT_K"])
        with torch.cuda.device(x.device):
            _tuned(gpu_family(x.device), kind)[grid](*args, **meta)
    return y


def conv_bn_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    residual: torch.Tensor | None = None,
    relu: bool = True,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """y = act(conv2d(x, weight) * scale[k] + shift[k] + residual), one kernel, output written once.

    x (N, C, H, W) and weight (K, C // groups, R, S) share a dtype (float32, float16, bfloat16);
    scale and shift are fp32 (K,), e.g. from `fold_bn`; residual is (N, K, P, Q) in x's dtype or None.
    stride/padding/dilation are ints or pairs, as in torch.nn.functional.conv2d.  Accumulation is fp32
    (tf32 tensor cores for fp32 inputs only with allow_tf32=True).  Returns (N, K, P, Q) in x's dtype,
    channels_last.  NCHW inputs are accepted and converted to channels_last once per call, so keep
    activations and weights channels_last to avoid the copy.  Forward only: no autograd.
    """
    return conv_bn_act_out(
        x, weight, scale, shift, stride=stride, padding=padding, dilation=dilation, groups=groups,
        residual=residual, relu=relu, allow_tf32=allow_tf32,
    )
