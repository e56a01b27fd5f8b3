"""Fused convolution + folded BatchNorm + residual add + ReLU as one implicit GEMM over NHWC input.

The GEMM view: rows are the M = N·P·Q output pixels, columns the K output channels, and the reduction
runs over the R·S·C/groups input taps of each output.  The conv output never goes to memory unfused:
the epilogue applies scale/shift, adds the residual and clamps before the single store.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from . import conv_tma, qconv
from ._common import channels_last, check_same_dtype, check_tensor, pair
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
def conv_bn_act_kernel(
    # input x: logical (N, C, H, W), NHWC in memory (stride_xc == 1)
    x_ptr, stride_xn, stride_xc, stride_xh, stride_xw,
    # weight: logical (K, C // groups, R, S), (K, R, S, C // groups) in memory
    w_ptr, stride_wk, stride_wc, stride_wr, stride_ws,
    # epilogue (_gemm.Epilogue.args): folded BatchNorm scale, shift fp32 (K,); residual (N, K, P, Q),
    # read only when HAS_RESIDUAL; output y (N, K, P, Q) channels_last, a row-major (N·P·Q, K)
    # matrix; fp32 partials (splits, N·P·Q, K), written instead when SPLIT_K
    scale_ptr, shift_ptr, res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, part_ptr,
    # sizes
    N, C, H, W, K, P, Q,
    # geometry
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, C_PER_G, K_PER_G,
    # meta-parameters
    R: tl.constexpr, S: tl.constexpr,
    GROUPED: tl.constexpr, FLAT_K: tl.constexpr,
    TAP_C: tl.constexpr,  # FLAT_K with C_PER_G a power of two (the stem padded to 4 channels), else 0
    HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreting bf16, tl.dot on fp32 tiles: bf16 math there is on raw bits (triton#11584)
    SPLIT_K: tl.constexpr,  # a split of the reduction (program_id(1)) that stores fp32 partials
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), N * P * Q, K, BLOCK_M, BLOCK_N, GROUP_M)

    # Rows: output pixel m = (n·P + p)·Q + q reads input pixel (p·stride - pad + r·dil, ...).
    offs_m, m_ok, n, p, q = output_pixels(pid_m, N, P, Q, BLOCK_M)
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
        if TAP_C > 0:
            # a compile-time power of two: c and the tap are a mask and a shift, and each tap's
            # channels one vector load (README: the stem)
            CT = TAP_C
        KT = R * S * CT
        kb_lo, kb_hi = split_range(tl.cdiv(KT, BLOCK_K))  # this program's share of the reduction
        for kb in range(kb_lo, kb_hi):
            kk = kb * BLOCK_K + offs_k
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
            acc = dot_acc(a, b, acc, UPCAST, DOT_PRECISION)
    else:
        # One loop over (tap, channel block): a single flat loop lets Triton pipeline the loads.
        num_cb = tl.cdiv(CT, BLOCK_K)
        i_lo, i_hi = split_range(R * S * num_cb)  # this program's share of the reduction
        for i in range(i_lo, i_hi):
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
            acc = dot_acc(a, b, acc, UPCAST, DOT_PRECISION)

    bn_act_store(acc, offs_m, offs_n, m_ok, n_ok, n, p, q, N * P * Q, K, scale_ptr, shift_ptr,
                 res_ptr, stride_rn, stride_rk, stride_rp, stride_rq, y_ptr, part_ptr,
                 HAS_RESIDUAL, RELU, SPLIT_K)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) per GPU family and kind of launch (ConfigKind):
# HALF for fp16/bf16 dense convolutions (groups == 1, at least 16 channels), FP32 for fp32 (IEEE and
# tf32), GATHER for the stem's flattened taps and grouped convolutions in any dtype.
# Every entry is cross-compiled by `python -m rbench_kernels.check` under Triton 3.8 and 3.6, which
# fails on register spills: on sm_80, 128x64x32 w8 s3 spills 24 bytes in tf32 (split-K and grouped
# builds) and 64x64x32 w4 s2 in fp32, so sm_80's fp32 and gather tiles take 16-deep K blocks; on
# sm_90 the gathers' 128x64x32 w8 s3 spills 32 bytes in grouped fp32 and 128x64x16 w8 s3 in the
# fp32 stem under Triton 3.6, so sm_90 gathers in 64-row tiles.
# Hopper runs 64-row warpgroup MMAs (wgmma); AMD's stream pipeliner wants num_stages=2.
CONFIGS: ConfigRows = {
    "sm90": {
        ConfigKind.HALF: [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4)],
        ConfigKind.SMALL: [(64, 64, 64, 4, 4), (64, 32, 64, 4, 4), (32, 64, 32, 4, 4)],
        ConfigKind.FP32: [(128, 64, 32, 8, 3), (64, 64, 32, 4, 3)],
        ConfigKind.GATHER: [(64, 64, 16, 4, 3), (64, 32, 32, 4, 3)],
    },
    "sm80": {
        ConfigKind.HALF: [(128, 128, 64, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 4)],
        ConfigKind.SMALL: [(64, 64, 32, 4, 4), (64, 32, 32, 4, 4), (32, 64, 32, 4, 4)],
        ConfigKind.FP32: [(128, 64, 16, 8, 3)],
        ConfigKind.GATHER: [(128, 64, 16, 8, 3)],
    },
    "gfx942": {
        ConfigKind.HALF: [(128, 128, 64, 8, 2), (128, 128, 32, 4, 2), (128, 64, 64, 4, 2), (64, 64, 64, 4, 2)],
        ConfigKind.SMALL: [(64, 64, 64, 4, 2), (64, 32, 64, 4, 2), (32, 64, 32, 4, 2)],
        ConfigKind.FP32: [(128, 64, 32, 4, 2), (64, 64, 32, 4, 2)],
        ConfigKind.GATHER: [(128, 64, 32, 4, 2), (64, 64, 32, 4, 2)],
    },
}

# the layer's geometry; the batch is left to the launcher's M buckets (_launch.py)
AUTOTUNE_KEY = [
    "C", "H", "W", "K", "P", "Q", "stride_h", "stride_w", "pad_h", "pad_w", "dil_h", "dil_w",
    "C_PER_G", "K_PER_G", "R", "S", "HAS_RESIDUAL", "RELU", "DOT_PRECISION", "SPLIT_K",
]

# the reduction runs over R·S taps of C/groups channels
_launch = GemmLauncher(conv_bn_act_kernel, CONFIGS, AUTOTUNE_KEY,
                       problem=lambda a: Problem(a["N"], a["P"], a["Q"], a["K"], a["C_PER_G"], a["R"] * a["S"], a["FLAT_K"]))


def flat_taps(c_per_g: int, k_per_g: int) -> bool:
    """Few input channels per tile (the 3-channel stem): flatten (r, s, c) so that tl.dot's
    reduction block is not mostly padding.  A tile of grouped output channels reads the channels
    of all its groups, at least 16 // k_per_g of them."""
    return c_per_g * max(1, 16 // k_per_g) < 16


def tap_channels(c_per_g: int, groups: int, flat: bool) -> int:
    """TAP_C: the flattened taps' channel count as a compile-time constant where it is a power of two
    (4: the stem with its input padded from 3 channels, `pad_channels`), else 0 (a run-time count)."""
    return c_per_g if flat and groups == 1 and c_per_g & (c_per_g - 1) == 0 else 0


def pad_channels(t: torch.Tensor, channels: int = 4) -> torch.Tensor:
    """A channels_last copy of the 4-D `t` with zero channels appended up to `channels`.

    For the stem: pad the network's 3-channel input and the stem's weight to 4 channels once, at the
    entrance, and `conv_bn_act` runs its flattened taps with a compile-time channel count (TAP_C):
    a quarter fewer instructions per output tile on sm_90 than with 3 (README: the stem).  The zero
    channels add nothing to the result."""
    check_tensor(t, "t", 4)
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < t.shape[1]:
        raise ValueError(f"channels must be an int >= t's {t.shape[1]} channels, got {channels!r}")
    n, c, h, w = t.shape
    out = torch.zeros((n, channels, h, w), dtype=t.dtype, device=t.device).contiguous(memory_format=torch.channels_last)
    out[:, :c].copy_(t)
    return out


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
    out: torch.Tensor | None = None,
    residual_scale: float | None = None,
    out_scale: float | None = None,
) -> torch.Tensor:
    """y = act(conv2d(x, weight) * scale[k] + shift[k] + residual), one kernel, output written once.

    x (N, C, H, W) and weight (K, C // groups, R, S) share a dtype (float32, float16, bfloat16);
    scale and shift are fp32 (K,), e.g. from `fold_bn`; residual is (N, K, P, Q) in x's dtype or None.
    stride/padding/dilation are ints or pairs, as in torch.nn.functional.conv2d.  Accumulation is fp32
    (tf32 tensor cores for fp32 inputs only with allow_tf32=True).  Returns (N, K, P, Q) in x's dtype,
    channels_last: a new tensor, or `out`, a preallocated channels_last (N, K, P, Q) tensor of x's
    dtype on x's device, written and returned.  NCHW inputs are accepted and converted to
    channels_last once per call, so keep activations and weights channels_last to avoid the copy.
    Forward only: no autograd.

    int8 / float8_e4m3fn(uz) x and weight (groups 1) go to `qconv.conv_bn_act_q`: int32 / fp32 accumulation,
    residual in x's dtype times `residual_scale`, output quantized by `out_scale` into x's dtype (fp32
    without it); scale then folds the dequantization s_x * s_w[k] * bn_scale[k].
    """
    if qconv.quantized(x, out_scale, residual_scale):
        return qconv.conv_bn_act_q(x, weight, scale, shift, stride=stride, padding=padding, dilation=dilation,
                                   groups=groups, residual=residual, residual_scale=residual_scale, relu=relu,
                                   out_scale=out_scale, out=out)
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
    ep = epilogue_operands(x, weight, scale, shift, residual, out, (N, K, P, Q))

    # NCHW inputs are converted to NHWC once here (a no-op for channels_last tensors).
    x = channels_last(x)
    weight = channels_last(weight)
    k_per_g = K // groups
    grouped, flat_k = groups > 1, flat_taps(c_per_g, k_per_g)
    kind = config_kind(x.dtype, gather=grouped or flat_k)
    geometry = (sh, sw, ph, pw, dh, dw)
    meta = gemm_meta(x.dtype, ep.residual, relu, allow_tf32)
    if path(x, weight, geometry, groups, ep, meta["DOT_PRECISION"])[0] == "tma":
        conv_tma.launch(x, weight, geometry, ep, meta, kind)
        return ep.y
    meta.update(R=R, S=S, GROUPED=grouped, FLAT_K=flat_k, TAP_C=tap_channels(c_per_g, groups, flat_k))
    operands = (x, *x.stride(), weight, *weight.stride())
    _launch(operands, (N, C, H, W, K, P, Q, *geometry, c_per_g, k_per_g), ep, meta, kind=kind, device=x.device)
    return ep.y


def path(x: torch.Tensor, weight: torch.Tensor, geometry: tuple[int, ...], groups: int, ep,
         precision: str) -> tuple[str, str]:
    """("tma", "") when conv_tma's tap descriptors take the launch, else ("gather", why not).

    x and weight are channels_last, geometry (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w),
    precision the launch's DOT_PRECISION."""
    why = conv_tma.tma_unsupported(x, weight, geometry, groups, ep, target(x.device), precision)
    return ("gather", why) if why else ("tma", "")
