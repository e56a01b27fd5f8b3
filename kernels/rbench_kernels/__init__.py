"""Fused Triton kernels for ResNet inference: conv + folded BatchNorm + residual + ReLU in one pass.

The contract (DESIGN.md §3); `rbench_kernels.reference` has the same four functions in plain PyTorch:

    conv_bn_act(x, weight, scale, shift, *, stride=1, padding=0, dilation=1, groups=1,
                residual=None, relu=True, allow_tf32=False, out=None,
                residual_scale=None, out_scale=None) -> Tensor   # the scales: int8 / fp8 only
    conv1x1_bn_act(x, weight, scale, shift, *, stride=1, residual=None, relu=True,
                   allow_tf32=False, out=None, residual_scale=None, out_scale=None) -> Tensor
    add_act(x, residual, *, relu=True, out=None) -> Tensor
    fold_bn(bn, conv_bias=None) -> tuple[Tensor, Tensor]
    pad_channels(t, channels=4) -> Tensor        # the stem's input and weight, once at the entrance
    unsupported_reason(device) -> str | None     # why a device cannot run the kernels, or None

`out=` is an optional preallocated output (channels_last for 4-D results, of the result's shape,
dtype and device), written and returned; anything else raises ValueError naming `out`.  Tensors on
a device without shipped configs raise UnsupportedTarget (a ValueError).  `rbench_kernels.roofline`
gives each layer's and network's lower-bound time.

Under TRITON_INTERPRET=1 (set before this import) the kernels run on the CPU.  This package imports
only torch and triton, never rbench.
"""

from __future__ import annotations

from . import reference, roofline
from ._device import UnsupportedTarget, unsupported_reason
from .add import add_act
from .bn import fold_bn
from .conv import conv_bn_act, pad_channels
from .conv1x1 import conv1x1_bn_act

__all__ = ["conv_bn_act", "conv1x1_bn_act", "add_act", "fold_bn", "pad_channels", "reference", "roofline",
           "UnsupportedTarget", "unsupported_reason"]
