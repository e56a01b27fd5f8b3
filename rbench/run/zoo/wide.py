"""Wide Residual Networks (Zagoruyko and Komodakis, 2016) on CIFAR: WRN-d-k.

Pre-activation basic blocks (`PreActBlock`, B(3,3) in the paper) in three stages of (d - 4) / 6
blocks at 16k, 32k and 64k channels, a bare 3x3 stem of 16 channels, a bias-free 1x1 projection
where the shape changes, and a final BN-ReLU. No dropout (the paper's best CIFAR figures use none
for these widths; it would not change the cost).
"""

from __future__ import annotations

from rbench.run.zoo.blocks import PreActBlock, ZooNet, cifar_stem, stages
from rbench.run.zoo.entry import Family, ZooModel

WRN = Family("wrn", "Wide ResNets (CIFAR)", "Zagoruyko, Komodakis: Wide Residual Networks (BMVC 2016, arXiv:1605.07146)")


def wrn(depth: int, k: int, num_classes: int = 10) -> ZooNet:
    if (depth - 4) % 6:
        raise ValueError(f"a Wide ResNet has depth 6n + 4, got {depth}")
    n = (depth - 4) // 6
    widths = (16 * k, 32 * k, 64 * k)
    return ZooNet(cifar_stem(16, norm=False), stages(PreActBlock, 16, widths, (n, n, n), (1, 2, 2)), widths[-1],
                  num_classes, final_norm=True)


MODELS = [ZooModel(f"wrn_{d}_{k}", WRN, lambda d=d, k=k: wrn(d, k), 32, 10) for d, k in ((16, 8), (28, 10), (40, 4))]
