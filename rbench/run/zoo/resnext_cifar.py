"""ResNeXt-29 on CIFAR (Xie et al., 2017, section 5.3): cardinality x bottleneck width, 8x64d and 16x64d.

A 3x3 stem of 64 channels (BN, ReLU), three stages of three bottlenecks with 256, 512 and 1024
output channels, each a 1x1 reduction to cardinality x d channels (d = 64 at the first stage,
doubling per stage), a grouped 3x3 convolution (the stride), and a 1x1 expansion; projection
shortcuts (1x1 conv + BN) where the shape changes. The blocks are torchvision's `Bottleneck`
(whose `groups` and `base_width` express exactly this), so they convert as torchvision's ResNeXt does.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import Bottleneck

from rbench.run.zoo.blocks import BlockFactory, ZooNet, cifar_stem, projection, stages
from rbench.run.zoo.entry import Family, ZooModel

RESNEXT = Family("resnext_cifar", "ResNeXt-29 (CIFAR)",
                 "Xie, Girshick, Dollar, Tu, He: Aggregated Residual Transformations for Deep Neural Networks "
                 "(CVPR 2017, arXiv:1611.05431)")


def block(cardinality: int, width: int) -> BlockFactory:
    """ResNeXt bottlenecks of `cardinality` groups of `width` channels at 256 output channels (scaled with them)."""

    def make(cin: int, cout: int, stride: int) -> nn.Module:
        down = projection(cin, cout, stride) if stride != 1 or cin != cout else None
        # torchvision's width per group: planes * base_width / 64, with planes = cout / 4.
        return Bottleneck(cin, cout // 4, stride, down, groups=cardinality, base_width=width)

    return make


def resnext29(cardinality: int, width: int, num_classes: int = 10) -> ZooNet:
    return ZooNet(cifar_stem(64), stages(block(cardinality, width), 64, (256, 512, 1024), (3, 3, 3), (1, 2, 2)), 1024,
                  num_classes)


MODELS = [ZooModel(f"resnext29_{c}x64d", RESNEXT, lambda c=c: resnext29(c, 64), 32, 10) for c in (8, 16)]
