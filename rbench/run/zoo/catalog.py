"""Every model rbench builds, grouped by family with its cost: what `rbench list` shows.

Costs are metadata, read instantly rather than counted (counting the 1202-layer networks takes seconds
each): torchvision's from its weights' `num_params` and `_ops` (GMACs at 224 px), the papers' networks
from `rbench.run.zoo.costs`. Both are held to `count_params` and `count_flops` by the tests
(tests/test_models.py for torchvision's ResNets, tests/test_zoo.py for the zoo).
"""

from __future__ import annotations

from dataclasses import dataclass

import torchvision

from rbench.run import models, zoo


@dataclass(frozen=True)
class Entry:
    """One model as `rbench list` shows it: `gmacs` at `gmacs_px`; suites run it at `image_size` unless told."""

    name: str
    params: int
    gmacs: float
    gmacs_px: int
    image_size: int
    num_classes: int


@dataclass(frozen=True)
class Group:
    """A family: its title, where it comes from, its models."""

    title: str
    paper: str
    entries: tuple[Entry, ...]


def _torchvision(name: str) -> Entry:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    native = weights.transforms().crop_size[0]  # the size `_ops` is counted at (299 for inception_v3, ...)
    return Entry(name, int(weights.meta["num_params"]), float(weights.meta["_ops"]), native,
                 models.default_image_size(name), models.NUM_CLASSES)


def groups() -> list[Group]:
    """torchvision's ResNet family, then each of the papers' families, then torchvision's other models."""
    out = [Group("torchvision ResNet, Wide ResNet, ResNeXt (ImageNet)", "torchvision (ResNet v1.5: stride in the 3x3)",
                 tuple(_torchvision(n) for n in models.RESNET_FAMILY))]
    for family in zoo.FAMILIES:
        entries = tuple(Entry(m.name, m.params, m.gmacs, m.image_size, m.image_size, m.num_classes)
                        for m in zoo.REGISTRY.values() if m.family == family)
        out.append(Group(family.title, family.paper, entries))
    known = set(models.RESNET_FAMILY) | set(zoo.REGISTRY)
    others = tuple(_torchvision(n) for n in models.names() if n not in known)
    out.append(Group("torchvision, other classification models", "torchvision", others))
    return out
