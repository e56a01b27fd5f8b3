"""The truth the quantized kernels are tested against: int8 in exact integer arithmetic, fp8 emulated in fp32.

`rbench_kernels.reference.conv_bn_act` / `conv1x1_bn_act` hand int8 and fp8 operands here.  int8: the
convolution is a sum over taps of int64 matrix products on the CPU (exact, whatever the device), then
the kernels' fp32 epilogue, operation for operation (`qconv`'s module docstring).  fp8: every product
of two e4m3 values is exact in fp32, so an fp32 convolution of the widened operands is the kernel's
sum up to summation order; the epilogue and the rounding to e4m3 (torch's, nearest even) are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._common import pair
from .qconv import QMAX, quant_output, scale_value


def int_conv(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
             dilation: tuple[int, int]) -> torch.Tensor:
    """conv2d of int8 x (N, C, H, W) and weight (K, C, R, S) in int64 on the CPU: exact integer sums."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    k, _, r, s = weight.shape
    xp = F.pad(x.cpu().to(torch.int64), (pw, pw, ph, ph))
    w = weight.cpu().to(torch.int64)
    h, wd = xp.shape[2], xp.shape[3]
    p = (h - dh * (r - 1) - 1) // sh + 1
    q = (wd - dw * (s - 1) - 1) // sw + 1
    acc = torch.zeros((x.shape[0], k, p, q), dtype=torch.int64)
    for i in range(r):
        for j in range(s):
            taps = xp[:, :, i * dh:i * dh + sh * (p - 1) + 1:sh, j * dw:j * dw + sw * (q - 1) + 1:sw]
            acc += torch.einsum("nchw,kc->nkhw", taps, w[:, :, i, j])
    return acc


def quantize(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 y (already multiplied by 1 / out_scale) to int8 (half to even, [-127, 127]) or e4m3 (nearest even)."""
    y = y.clamp(-QMAX[dtype], QMAX[dtype])
    return torch.round(y).to(dtype) if dtype == torch.int8 else y.to(dtype)


def conv_bn_act_q(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *,
                  stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                  dilation: int | Sequence[int] = 1, residual: torch.Tensor | None = None,
                  residual_scale: float | None = None, relu: bool = True, out_scale: float | None = None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """The quantized `conv_bn_act` (qconv's epilogue), computed on the CPU and returned on x's device."""
    geometry = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    if x.dtype == torch.int8:
        acc = int_conv(x, weight, *geometry).to(torch.float32)
    else:
        acc = F.conv2d(x.cpu().float(), weight.cpu().float(), None, *geometry)
    y = acc * scale.cpu().view(1, -1, 1, 1)
    y = y + shift.cpu().view(1, -1, 1, 1)
    if residual is not None:
        rs = torch.tensor(scale_value(residual_scale, "residual_scale"), dtype=torch.float32)
        y = y + residual.cpu().float() * rs
    if relu:
        y = torch.relu(y)
    if out_scale is not None:
        y = quantize(y * torch.tensor(1.0 / scale_value(out_scale, "out_scale"), dtype=torch.float32), x.dtype)
    result = quant_output(tuple(y.shape), x, out_scale is not None, out)
    return result.copy_(y.to(result.device))
