"""The papers' ResNets that torchvision does not ship, by name: `REGISTRY` maps a name to its `ZooModel`.

Families, in the order `rbench list` shows them: ResNet v1 and the plain nets (He et al. 2015, ImageNet),
the CIFAR ResNets with option A and B shortcuts and their plain twins (same paper), pre-activation
ResNets (He et al. 2016), Wide ResNets (Zagoruyko and Komodakis 2016) and ResNeXt-29 (Xie et al. 2017).
Nothing is downloaded: `build(name)` returns a randomly initialised network (the caller seeds);
`stochastic_depth(model, p_L)` prepares any residual network for stochastic-depth training.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from rbench.run.zoo import cifar, imagenet_v1, preact, resnext_cifar, wide
from rbench.run.zoo.costs import COST
from rbench.run.zoo.depth import apply as stochastic_depth
from rbench.run.zoo.entry import Family, ZooModel

REGISTRY: dict[str, ZooModel] = {
    m.name: dataclasses.replace(m, params=COST[m.name][0], gmacs=COST[m.name][1])
    for module in (imagenet_v1, cifar, preact, wide, resnext_cifar) for m in module.MODELS
}
FAMILIES: tuple[Family, ...] = tuple(dict.fromkeys(m.family for m in REGISTRY.values()))

__all__ = ["FAMILIES", "REGISTRY", "Family", "ZooModel", "build", "stochastic_depth"]


def build(name: str) -> nn.Module:
    """The network `name`, randomly initialised; an unknown name lists the known ones."""
    try:
        entry = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; the papers' networks are: {', '.join(REGISTRY)}") from None
    return entry.build()
