"""Fused Triton kernels for ResNet inference: conv + folded BatchNorm + residual + ReLU in one pass.

The contract (DESIGN.md §3); `rbench_kernels.reference` has the same four functions in plain PyTorch:

    conv_bn_act(x, weight, scale, shift, *, stride=1, padding=0, dilation=1, groups=1,
                residual=None, relu=True, allow_tf32=False, out=None) -> Tensor
    conv1x1_bn_act(x, weight, scale, shift, *, stride=1, residual=None, relu=True,
                   allow_tf32=False, out=None) -> Tensor
    add_act(x, residual, *, relu=True, out=None) -> Tensor
    fold_bn(bn, conv_bias=None) -> tuple[Tensor, Tensor]

`out=` is an optional preallocated output (channels_last for 4-D results, of the result's shape,
dtype and device), written and returned; anything else raises ValueError naming `out`.

Under TRITON_INTERPRET=1 (set before this import) the kernels run on the CPU.  This package imports
only torch and triton, never rbench.
"""

from __future__ import annotations

from . import reference
from .add import add_act
from .bn import fold_bn
from .conv import conv_bn_act
from .conv1x1 import conv1x1_bn_act

__all__ = ["conv_bn_act", "conv1x1_bn_act", "add_act", "fold_bn", "reference"]
