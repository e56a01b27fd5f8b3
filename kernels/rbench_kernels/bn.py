"""Folding an eval-mode BatchNorm into the per-channel (scale, shift) that the conv epilogues apply."""

from __future__ import annotations

import torch


def fold_bn(bn: torch.nn.BatchNorm2d, conv_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), fp32 (K,), such that bn(conv(x) + conv_bias) == conv(x) * scale + shift in eval mode.

    scale = gamma / sqrt(running_var + eps), shift = beta + (conv_bias - running_mean) * scale, computed
    in float64 and rounded once.  A BatchNorm without affine parameters uses gamma = 1, beta = 0.  One
    without running statistics cannot be folded (its eval output depends on the batch).
    """
    if not isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"bn must be a torch.nn.BatchNorm2d, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn has no running statistics (track_running_stats=False); it cannot be folded")
    k = bn.running_mean.shape[0]
    if conv_bias is not None and (not isinstance(conv_bias, torch.Tensor) or tuple(conv_bias.shape) != (k,)):
        seen = tuple(conv_bias.shape) if isinstance(conv_bias, torch.Tensor) else type(conv_bias).__name__
        raise ValueError(f"conv_bias must be a tensor of shape ({k},) like bn's channels, got {seen}")
    with torch.no_grad():
        mean = bn.running_mean.detach().double()
        var = bn.running_var.detach().double()
        gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
        beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
        scale = gamma / torch.sqrt(var + bn.eps)
        bias = conv_bias.detach().to(device=mean.device, dtype=torch.float64) if conv_bias is not None else 0.0
        shift = beta + (bias - mean) * scale
    return scale.float().contiguous(), shift.float().contiguous()
