"""The truth the kernels are tested against: the same four functions in plain PyTorch.

The math runs in fp32 (float64 for float64 inputs, which tests use for an exact reference), with
TF32 off, and the result is cast to x's dtype once, like the kernels.  Outputs are channels_last
(4-D); `out=` is checked and written as the kernels do.  The signatures are the kernels' own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from . import qconv, qreference
from ._common import output


@contextlib.contextmanager
def _ieee_fp32(device: torch.device) -> Iterator[None]:
    """cuDNN convolutions default to TF32 on Ampere and newer; the reference must not."""
    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        saved = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = saved
    else:
        saved = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = saved


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _result(y: torch.Tensor, like: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """y cast to like's dtype, channels_last when 4-D; written into `out`, checked as the kernels do, when given."""
    fmt = torch.channels_last if y.dim() == 4 else torch.contiguous_format
    return output(tuple(y.shape), like, out, fmt).copy_(y)


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
    """act(conv2d(x, weight) * scale + shift + residual); allow_tf32 is accepted and ignored (always IEEE).

    int8 / float8_e4m3fn(uz) operands: `qreference` (exact integer arithmetic for int8, fp32 emulation for fp8)."""
    if qconv.quantized(x, out_scale, residual_scale):
        return qreference.conv_bn_act_q(x, weight, scale, shift, stride=stride, padding=padding, dilation=dilation,
                                        residual=residual, residual_scale=residual_scale, relu=relu,
                                        out_scale=out_scale, out=out)
    dt = _compute_dtype(x)
    with torch.no_grad(), _ieee_fp32(x.device):
        y = F.conv2d(x.to(dt), weight.to(dt), None, stride, padding, dilation, groups)
        y = y * scale.to(dt).view(1, -1, 1, 1) + shift.to(dt).view(1, -1, 1, 1)
        if residual is not None:
            y = y + residual.to(dt)
        if relu:
            y = torch.relu(y)
    return _result(y, x, out)


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
    """`conv_bn_act` with a (K, C) or (K, C, 1, 1) weight and padding 0."""
    w4 = weight.reshape(weight.shape[0], weight.shape[1], 1, 1)
    return conv_bn_act(x, w4, scale, shift, stride=stride, residual=residual, relu=relu, out=out,
                       residual_scale=residual_scale, out_scale=out_scale)


def add_act(
    x: torch.Tensor, residual: torch.Tensor, *, relu: bool = True, out: torch.Tensor | None = None
) -> torch.Tensor:
    """act(x + residual) in fp32, cast to x's dtype."""
    dt = _compute_dtype(x)
    y = x.to(dt) + residual.to(dt)
    if relu:
        y = torch.relu(y)
    return _result(y, x, out)


def fold_bn(bn: torch.nn.BatchNorm2d, conv_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) in fp32 from the running statistics, computed in fp32 the textbook way."""
    with torch.no_grad():
        mean, var = bn.running_mean.float(), bn.running_var.float()
        gamma = bn.weight.float() if bn.weight is not None else torch.ones_like(mean)
        beta = bn.bias.float() if bn.bias is not None else torch.zeros_like(mean)
        scale = gamma * torch.rsqrt(var + bn.eps)
        shift = beta - mean * scale
        if conv_bias is not None:
            shift = shift + conv_bias.float() * scale
    return scale.contiguous(), shift.contiguous()
