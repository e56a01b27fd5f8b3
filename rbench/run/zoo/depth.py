"""Stochastic depth (Huang et al., 2016) for training: each residual block's branch is skipped per mini-batch.

`apply(model, survival_last)` wraps every residual block of any residual network (torchvision's
BasicBlock and Bottleneck, the pre-activation and wide blocks of `rbench.run.zoo`) in `Skippable`,
with survival probability p_l = 1 - l / L * (1 - p_L) for block l of L: 1 at the input, linearly
down to `survival_last` at the last block. In training, a block whose draw fails does not compute its
branch at all (forward and backward): the step runs only its shortcut (then the ReLU of a
post-activation block), which is where stochastic depth's shorter training time comes from. A
block that survives scales its branch by 1 / p_l, so the expected output matches the network
without stochastic depth and inference (eval mode) is exactly the unwrapped network. Under
torch.compile each block's draw is a graph break (the draw must not be traced into a constant).

Why not `torchvision.ops.StochasticDepth`: it computes the branch and then multiplies it by a
Bernoulli mask, so a dropped block costs as much as a kept one and a benchmark of it would
measure the full network's training time, not stochastic depth's.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from rbench.run.zoo.blocks import PreActBlock


@dataclass(frozen=True)
class Split:
    """A residual block taken apart: `enter(x)` -> (branch input, shortcut); `branch`; `finish(sum)`."""

    enter: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    branch: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    finish: Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _post_enter(b: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, x if b.downsample is None else b.downsample(x)


def _basic(b: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    return b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x)))))


def _bottleneck(b: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    return b.bn3(b.conv3(b.relu(b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x))))))))


def _preact_enter(b: PreActBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = b.preactivate(x)
    return a, b.residual(x, a)


# Block type -> how to take it apart; subclasses are found through their bases.
SPLITS: dict[type, Split] = {
    # Out of place: a dropped block's shortcut may be its input, which autograd still needs as it was.
    BasicBlock: Split(_post_enter, _basic, lambda b, y: torch.relu(y)),
    Bottleneck: Split(_post_enter, _bottleneck, lambda b, y: torch.relu(y)),
    PreActBlock: Split(_preact_enter, lambda b, a: b.branch(a), lambda b, y: y),
}


def split_of(block: nn.Module) -> Split | None:
    for kind in type(block).__mro__:
        if kind in SPLITS:
            return SPLITS[kind]
    return None


class Skippable(nn.Module):
    """A residual block that, in training, survives with probability `survival` (one draw per mini-batch)."""

    def __init__(self, block: nn.Module, survival: float, rng: random.Random):
        super().__init__()
        split = split_of(block)
        if split is None:
            raise ValueError(f"{type(block).__name__} is not a residual block stochastic depth knows")
        self.block, self.survival, self.split, self.rng = block, survival, split, rng
        self.dropped = 0  # mini-batches in which this block's branch was skipped (for tests and curiosity)

    @torch.compiler.disable
    def survives(self) -> bool:
        """This mini-batch's draw. Never traced: torch.compile would bake one draw into the graph; this
        way it breaks the graph here and guards on the outcome, so every step draws afresh."""
        kept = self.rng.random() < self.survival
        self.dropped += not kept
        return kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.block(x)
        inp, shortcut = self.split.enter(self.block, x)
        if not self.survives():
            return self.split.finish(self.block, shortcut)
        return self.split.finish(self.block, self.split.branch(self.block, inp) / self.survival + shortcut)

    def extra_repr(self) -> str:
        return f"survival={self.survival:.4f}"


def survival_probabilities(blocks: int, survival_last: float) -> list[float]:
    """p_l = 1 - l / L * (1 - p_L) for l = 1 .. L (Huang et al., eq. 4)."""
    return [1 - i / blocks * (1 - survival_last) for i in range(1, blocks + 1)]


def apply(model: nn.Module, survival_last: float, seed: int = 0) -> nn.Module:
    """`model` with every residual block wrapped in `Skippable` (in place; returned for chaining).

    Raises ValueError for a survival probability outside (0, 1] or a network with no residual block.
    """
    if not 0 < survival_last <= 1:
        raise ValueError(f"stochastic_depth is the last block's survival probability, in (0, 1]; got {survival_last}")
    sites = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if split_of(child) is not None]
    if not sites:
        raise ValueError(f"stochastic depth drops residual blocks, and this {type(model).__name__} has none "
                         "(a plain network?)")
    rng = random.Random(seed)
    for (parent, name, child), p in zip(sites, survival_probabilities(len(sites), survival_last)):
        setattr(parent, name, Skippable(child, p, rng))
    return model
