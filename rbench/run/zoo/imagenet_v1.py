"""The original ImageNet ResNets of He et al. (2015): v1 bottlenecks and the plain nets of the degradation experiment.

- `resnet50_v1`, `resnet101_v1`, `resnet152_v1`: torchvision's ResNet with the stride of each
  downsampling bottleneck moved from the 3x3 to the first 1x1 convolution, as in the paper
  (Table 1: 3.8, 7.6 and 11.3 x 10^9 multiply-adds; torchvision's "v1.5" costs 4.1, 7.8, 11.5).
  The parameters are the same; the network stays a torchvision ResNet, so every tool that reads one
  (the triton backend's converter) reads it.
- `plain18`, `plain34`: the same stacks as ResNet-18/34 without any shortcut (section 4.1).
"""

from __future__ import annotations

import torchvision
from torch import nn

from rbench.run.zoo.blocks import PlainBlock, ZooNet, imagenet_stem, stages
from rbench.run.zoo.entry import Family, ZooModel

V1 = Family("resnet_v1", "ResNet v1 (stride in the first 1x1)",
            "He, Zhang, Ren, Sun: Deep Residual Learning for Image Recognition (CVPR 2016, arXiv:1512.03385)")
PLAIN = Family("plain", "Plain networks (no shortcuts)", V1.paper + ", section 4.1")


def resnet_v1(depth: int, num_classes: int = 1000) -> torchvision.models.ResNet:
    """torchvision's ResNet-`depth` with the downsampling stride in the first 1x1 of its bottleneck."""
    model = torchvision.models.get_model(f"resnet{depth}", weights=None, num_classes=num_classes)
    for stage in (model.layer2, model.layer3, model.layer4):
        block = stage[0]
        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    return model


def plain(depths: tuple[int, ...], num_classes: int = 1000) -> nn.Module:
    """The plain counterpart of a BasicBlock ResNet: conv-BN-ReLU all the way, stride 2 where stages begin."""
    return ZooNet(imagenet_stem(64), stages(PlainBlock, 64, (64, 128, 256, 512), depths, (1, 2, 2, 2)), 512,
                  num_classes)


MODELS = [
    *(ZooModel(f"resnet{d}_v1", V1, lambda d=d: resnet_v1(d), 224, 1000) for d in (50, 101, 152)),
    ZooModel("plain18", PLAIN, lambda: plain((2, 2, 2, 2)), 224, 1000),
    ZooModel("plain34", PLAIN, lambda: plain((3, 4, 6, 3)), 224, 1000),
]
