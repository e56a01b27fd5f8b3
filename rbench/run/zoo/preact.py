"""Pre-activation ResNets (He et al., 2016, "Identity Mappings"): BN-ReLU-conv blocks on an untouched identity path.

ImageNet (`preact_resnet18` ... `preact_resnet200`): the stem of ResNet v1 (7x7/2 conv, BN, ReLU,
max-pool), then four stages whose first block takes the stem's BN-ReLU as its own (no second one),
the stride in the 3x3 convolution, and a final BN-ReLU before the pool. CIFAR (`preact_resnet164`,
`preact_resnet1001`): a bare 3x3 stem and three stages of n bottleneck blocks (depth 9n + 2) at 64,
128 and 256 output channels (1.7M and 10.2M parameters). Projection shortcuts, where the shape
changes, are 1x1 convolutions of the pre-activated input.
"""

from __future__ import annotations

from rbench.run.zoo.blocks import PreActBlock, PreActBottleneck, ZooNet, cifar_stem, imagenet_stem, stages
from rbench.run.zoo.entry import Family, ZooModel

PAPER = "He, Zhang, Ren, Sun: Identity Mappings in Deep Residual Networks (ECCV 2016, arXiv:1603.05027)"
PREACT = Family("preact", "Pre-activation ResNets (ImageNet)", PAPER)
PREACT_CIFAR = Family("preact_cifar", "Pre-activation ResNets (CIFAR, bottleneck)", PAPER)
IMAGENET_DEPTHS = {18: (PreActBlock, (2, 2, 2, 2)), 34: (PreActBlock, (3, 4, 6, 3)),
                   50: (PreActBottleneck, (3, 4, 6, 3)), 101: (PreActBottleneck, (3, 4, 23, 3)),
                   152: (PreActBottleneck, (3, 8, 36, 3)), 200: (PreActBottleneck, (3, 24, 36, 3))}


def preact_imagenet(depth: int, num_classes: int = 1000) -> ZooNet:
    block, depths = IMAGENET_DEPTHS[depth]
    widths = tuple(w * block.expansion for w in (64, 128, 256, 512))
    first = [True]

    def make(cin: int, cout: int, stride: int) -> PreActBlock:
        preact, first[0] = not first[0], False  # the stem's BN-ReLU pre-activates the first block
        return block(cin, cout, stride, preact=preact)

    return ZooNet(imagenet_stem(64), stages(make, 64, widths, depths, (1, 2, 2, 2)), widths[-1], num_classes,
                  final_norm=True)


def preact_cifar(depth: int, num_classes: int = 10) -> ZooNet:
    if (depth - 2) % 9:
        raise ValueError(f"a pre-activation bottleneck CIFAR ResNet has depth 9n + 2, got {depth}")
    n = (depth - 2) // 9
    return ZooNet(cifar_stem(16, norm=False), stages(PreActBottleneck, 16, (64, 128, 256), (n, n, n), (1, 2, 2)),
                  256, num_classes, final_norm=True)


MODELS = [
    *(ZooModel(f"preact_resnet{d}", PREACT, lambda d=d: preact_imagenet(d), 224, 1000) for d in IMAGENET_DEPTHS),
    *(ZooModel(f"preact_resnet{d}", PREACT_CIFAR, lambda d=d: preact_cifar(d), 32, 10) for d in (164, 1001)),
]
