"""The CIFAR-10 ResNets of He et al. (2015), section 4.2: 20 to 1202 layers, option A or B shortcuts, and plain nets.

Three stages of n blocks at 16, 32 and 64 channels (32, 16 and 8 px), depth 6n + 2, a 3x3 stem and
no max-pool. The blocks are torchvision's `BasicBlock`; where a stage begins (stride 2, twice the
channels) the shortcut is option A (`cifar_resnetN`: identity, subsampled, zero-padded channels; no
parameters: Table 6's 0.27M ... 19.4M) or option B (`cifar_resnetN_b`: a 1x1 projection with
BatchNorm). `cifar_plainN` has no shortcuts at all.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock

from rbench.run.zoo.blocks import OptionA, PlainBlock, ZooNet, cifar_stem, projection, stages
from rbench.run.zoo.entry import Family, ZooModel

PAPER = "He, Zhang, Ren, Sun: Deep Residual Learning for Image Recognition (CVPR 2016, arXiv:1512.03385), section 4.2"
CIFAR = Family("cifar_resnet", "CIFAR ResNets (option A shortcuts)", PAPER)
CIFAR_B = Family("cifar_resnet_b", "CIFAR ResNets (option B projection shortcuts)", PAPER)
CIFAR_PLAIN = Family("cifar_plain", "CIFAR plain networks", PAPER)
DEPTHS = (20, 32, 44, 56, 110, 1202)
PLAIN_DEPTHS = (20, 32, 44, 56, 110)
SHORTCUTS = {"A": OptionA, "B": projection}


def basic(option: str):
    """A factory of BasicBlocks whose shortcut across a change of shape is option `option`."""
    shortcut = SHORTCUTS[option]

    def make(cin: int, cout: int, stride: int) -> nn.Module:
        down = shortcut(cin, cout, stride) if stride != 1 or cin != cout else None
        return BasicBlock(cin, cout, stride, down)

    return make


def cifar_net(depth: int, block, num_classes: int = 10) -> ZooNet:
    """Depth 6n + 2: the stem, 3 stages of n two-conv blocks, the classifier."""
    if (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2, got {depth}")
    n = (depth - 2) // 6
    return ZooNet(cifar_stem(16), stages(block, 16, (16, 32, 64), (n, n, n), (1, 2, 2)), 64, num_classes)


MODELS = [
    *(ZooModel(f"cifar_resnet{d}", CIFAR, lambda d=d: cifar_net(d, basic("A")), 32, 10) for d in DEPTHS),
    *(ZooModel(f"cifar_resnet{d}_b", CIFAR_B, lambda d=d: cifar_net(d, basic("B")), 32, 10) for d in DEPTHS),
    *(ZooModel(f"cifar_plain{d}", CIFAR_PLAIN, lambda d=d: cifar_net(d, PlainBlock), 32, 10) for d in PLAIN_DEPTHS),
]
