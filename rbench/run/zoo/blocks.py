"""The building blocks the papers' networks share: the network skeleton, option A shortcuts, plain and
pre-activation blocks.

Post-activation residual blocks are torchvision's own `BasicBlock` and `Bottleneck` (conv-BN-ReLU,
the residual added before the last ReLU), so that every network built from them converts to the
triton backend's fused kernels exactly as torchvision's ResNets do. What torchvision lacks is here:

- `ZooNet`: stem -> stages of blocks -> [final BN-ReLU] -> global average pool -> fc, for any depth,
  width or number of stages (CIFAR networks have three stages and no max-pool);
- `OptionA`: the parameter-free shortcut of He et al. (2015) for CIFAR: identity, stride-2
  subsampling and zero-padded extra channels;
- `PlainBlock`: a residual block without its shortcut (the degradation experiment's plain nets);
- `PreActBlock`, `PreActBottleneck`: BN-ReLU-conv order with an identity path that nothing touches
  (He et al., 2016); a projection shortcut, when the shape changes, is a bias-free 1x1 convolution
  of the pre-activated input, without BatchNorm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BlockFactory = Callable[[int, int, int], nn.Module]  # (in_channels, out_channels, stride) -> block


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Option B: a 1x1 convolution (with the block's stride) and BatchNorm, torchvision's `downsample`."""
    return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class OptionA(nn.Module):
    """The identity shortcut across a change of shape: every `stride`-th pixel, channels zero-padded.

    Channels [0, in_channels) carry the input; [in_channels, out_channels) are zero. No parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A pads channels, it cannot drop them ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}, zero-padded channels"


class PlainBlock(nn.Module):
    """Two 3x3 conv-BN-ReLU layers and no shortcut: ResNet's BasicBlock with its identity path removed."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the shortcut; no activation after the addition.

    `preact=False` leaves out the first BN-ReLU: the block right after a stem that ends in BN-ReLU
    would otherwise apply it twice. `shortcut` is None (identity) or a 1x1 convolution that reads
    the pre-activated input. Wide ResNets are this block at width k.
    """

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1, preact: bool = True):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin) if preact else None
        self.relu = nn.ReLU(inplace=False)
        convs, widths = self.layers(cin, cout, stride)
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(nn.BatchNorm2d(w) for w in widths)  # before every conv but the first
        self.shortcut = conv1x1(cin, cout, stride) if stride != 1 or cin != cout else None

    @classmethod
    def layers(cls, cin: int, cout: int, stride: int) -> tuple[list[nn.Conv2d], list[int]]:
        """The branch's convolutions and the widths between them."""
        return [conv3x3(cin, cout, stride), conv3x3(cout, cout)], [cout]

    def preactivate(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.bn1 is None else self.relu(self.bn1(x))

    def residual(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The shortcut: the block's input itself, or the projection of its pre-activated input."""
        return x if self.shortcut is None else self.shortcut(a)

    def branch(self, a: torch.Tensor) -> torch.Tensor:
        """The residual branch from the pre-activated input: conv, then BN-ReLU-conv for every later conv."""
        a = self.convs[0](a)
        for bn, conv in zip(self.bns, self.convs[1:]):
            a = conv(self.relu(bn(a)))
        return a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.preactivate(x)
        return self.branch(a) + self.residual(x, a)


class PreActBottleneck(PreActBlock):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (the stride), BN-ReLU-conv1x1 to 4x the width, plus the shortcut."""

    expansion = 4

    @classmethod
    def layers(cls, cin: int, cout: int, stride: int) -> tuple[list[nn.Conv2d], list[int]]:
        width = cout // cls.expansion
        return [conv1x1(cin, width), conv3x3(width, width, stride), conv1x1(width, cout)], [width, width]


class ZooNet(nn.Module):
    """stem -> `layers` (stages of blocks) -> [BN-ReLU, pre-activation nets] -> average pool -> fc.

    `stem` is a Sequential of Conv2d [BatchNorm2d ReLU] [MaxPool2d]; `norm`, when present, is the
    final BatchNorm of a pre-activation network (its ReLU follows).
    """

    def __init__(self, stem: nn.Sequential, layers: nn.Sequential, features: int, num_classes: int,
                 final_norm: bool = False):
        super().__init__()
        self.stem = stem
        self.layers = layers
        self.norm = nn.BatchNorm2d(features) if final_norm else None
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(features, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        if self.norm is not None:
            x = self.relu(self.norm(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def stages(block: BlockFactory, stem_channels: int, widths: Sequence[int], depths: Sequence[int],
           strides: Sequence[int]) -> nn.Sequential:
    """Stages of `depths[i]` blocks of `widths[i]` output channels; the first block of a stage has its stride."""
    out, cin = [], stem_channels
    for width, depth, stride in zip(widths, depths, strides):
        blocks = []
        for i in range(depth):
            blocks.append(block(cin, width, stride if i == 0 else 1))
            cin = width
        out.append(nn.Sequential(*blocks))
    return nn.Sequential(*out)


def imagenet_stem(channels: int = 64) -> nn.Sequential:
    """7x7/2 conv, BN, ReLU, 3x3/2 max-pool: 224 px -> 56 px."""
    return nn.Sequential(nn.Conv2d(3, channels, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))


def cifar_stem(channels: int, norm: bool = True) -> nn.Sequential:
    """3x3 conv [+ BN + ReLU]; pre-activation networks leave the BN-ReLU to their first block."""
    layers: list[nn.Module] = [conv3x3(3, channels)]
    if norm:
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _init(model: nn.Module) -> None:
    """He (fan-out) initialisation of convolutions, BatchNorm at gamma 1 and beta 0, as torchvision does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
