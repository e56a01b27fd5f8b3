"""What the model registry knows of each of the papers' networks: builder, family, paper, input size, classes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Family:
    """A group of networks from one paper, as `rbench list` and the README show it."""

    key: str
    title: str
    paper: str


@dataclass(frozen=True)
class ZooModel:
    """One network: `build()` returns it randomly initialised (the caller seeds), for `num_classes` classes.

    `params` and `gmacs` (multiply-adds of one image at `image_size`, 10^9) are its cost metadata.
    """

    name: str
    family: Family
    build: Callable[[], nn.Module]
    image_size: int
    num_classes: int
    params: int = 0
    gmacs: float = 0.0
