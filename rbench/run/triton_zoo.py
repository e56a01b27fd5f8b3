"""The triton backend for every family: torchvision's ResNets and the papers' networks (`rbench.run.zoo`).

`convert(model)` hands a torchvision ResNet (ResNet v1 included: it is one) to
`triton_backend.convert`, and converts a `ZooNet` here, block by block, through `BLOCKS`, a registry
from block type to converter. The fused pieces are `triton_backend`'s (`FusedConv`: conv + folded
BN + residual + ReLU in one kernel; `FusedBlock`: a torchvision block). What the papers add:

- plain blocks: every conv + BN + ReLU one kernel, no residual;
- option A shortcuts: the subsampled input is copied, once per downsampling block, into the first
  channels of a zero buffer kept between calls (one strided PyTorch copy; the zero channels are never
  rewritten), and that buffer is the last conv's `residual=`; the add and ReLU stay in its epilogue;
- pre-activation blocks (and Wide ResNets): the block's BN-ReLU on its input runs as two PyTorch ops
  (`addcmul` with the folded scale and shift, in place `relu_`), because the kernels fuse BN into a
  conv's output, not its input; every BN-ReLU inside the branch is fused into the conv before it,
  the last conv (no BN) takes the shortcut as `residual=`, and a projection shortcut is one
  `conv1x1_bn_act` with scale 1 and shift 0; the network's final BN-ReLU is the same two ops.

Stems (conv [+ BN + ReLU] [+ max-pool]) are one kernel plus PyTorch's max-pool; the pool and the
classifier are PyTorch, as for torchvision's ResNets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from rbench.run import triton_backend, zoo
from rbench.run.triton_backend import ConversionError, FusedBlock, FusedConv
from rbench.run.zoo.blocks import OptionA, PlainBlock, PreActBlock, ZooNet


def unsupported_model(name: str) -> str | None:
    """None for a torchvision ResNet or one of the papers' networks, else why the triton backend cannot run it."""
    if name in zoo.REGISTRY or triton_backend.unsupported_model(name) is None:
        return None
    return (f"the triton backend converts the ResNet families only (torchvision's ResNet, Wide ResNet and ResNeXt, "
            f"and the papers' networks: `rbench list`); {name} is not one")


def convert(model: nn.Module, allow_tf32: bool = False) -> nn.Module:
    """The eval-mode `model` as a module that runs on rbench_kernels; `ConversionError` for anything else."""
    if isinstance(model, torchvision.models.ResNet):
        return triton_backend.convert(model, allow_tf32=allow_tf32)
    if isinstance(model, ZooNet):
        return TritonZooNet(model, allow_tf32=allow_tf32)
    raise ConversionError(f"expected a torchvision ResNet or one of rbench's ZooNets, got {type(model).__name__}")


def bare_conv(conv: nn.Conv2d, relu: bool, where: str) -> FusedConv:
    """A convolution with no BatchNorm after it, as one kernel with scale 1 and shift 0 (exactly: eps 0)."""
    identity = nn.BatchNorm2d(conv.out_channels, eps=0.0, device=conv.weight.device).eval()
    return FusedConv(conv, identity, relu=relu, where=where)


class BnRelu(nn.Module):
    """relu(x * scale + shift) with a BatchNorm's folded statistics: `addcmul` and `relu_`, channels_last kept."""

    def __init__(self, bn: nn.BatchNorm2d, dtype: torch.dtype, where: str):
        super().__init__()
        if type(bn) is not nn.BatchNorm2d or bn.training:
            raise ConversionError(f"{where}: expected an eval-mode nn.BatchNorm2d, got {bn!r}")
        scale, shift = triton_backend._kernels().fold_bn(bn)
        # In the activations' dtype, as eager BatchNorm computes it: addcmul forms the result in fp32 and rounds once.
        self.register_buffer("scale", scale.to(dtype).view(1, -1, 1, 1))
        self.register_buffer("shift", shift.to(dtype).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale).relu_()


class PaddedShortcut(nn.Module):
    """Option A on the kernels' layout: the subsampled input in the first channels of a zeroed channels_last buffer."""

    def __init__(self, shortcut: OptionA):
        super().__init__()
        self.channels, self.stride = shortcut.in_channels, shortcut.stride
        self.out_channels = shortcut.out_channels
        self._buffers_by_shape: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sub = x[:, :, :: self.stride, :: self.stride]
        shape = (sub.shape[0], self.out_channels, sub.shape[2], sub.shape[3])
        key = (shape, x.dtype, x.device)
        buf = self._buffers_by_shape.get(key)
        if buf is None:
            buf = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last).zero_()
            self._buffers_by_shape[key] = buf
        buf[:, : self.channels].copy_(sub)
        return buf


class FusedResidual(nn.Module):
    """One block of the papers' networks: [BN-ReLU prologue], shortcut, then the convs; the last adds it.

    `shortcut`: "none" (plain block, no residual), "identity" (the block's input), or a module applied
    to the input (`PaddedShortcut`) or, with `reads_preact`, to the pre-activated input (projection).
    """

    def __init__(self, convs: list[FusedConv], shortcut: str | nn.Module, pre: BnRelu | None = None,
                 reads_preact: bool = False):
        super().__init__()
        self.pre = pre
        self.convs = nn.ModuleList(convs)
        self.kind = shortcut if isinstance(shortcut, str) else "module"
        self.shortcut = shortcut if isinstance(shortcut, nn.Module) else None
        self.reads_preact = reads_preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x if self.pre is None else self.pre(x)
        residual = {"none": None, "identity": x}.get(self.kind)
        if self.shortcut is not None:
            residual = self.shortcut(a if self.reads_preact else x)
        *head, last = self.convs
        for conv in head:
            a = conv(a)
        return last(a, residual=residual)


def _torchvision_block(block: nn.Module, where: str, dtype: torch.dtype) -> nn.Module:
    if not isinstance(block.downsample, OptionA):
        return FusedBlock(block, where)
    if type(block) is not BasicBlock:
        raise ConversionError(f"{where}: option A shortcuts are converted for BasicBlock only, got {type(block).__name__}")
    triton_backend._check_relu(block.relu, f"{where}.relu")
    convs = [FusedConv(block.conv1, block.bn1, relu=True, where=f"{where}.conv1"),
             FusedConv(block.conv2, block.bn2, relu=True, where=f"{where}.conv2")]
    return FusedResidual(convs, PaddedShortcut(block.downsample))


def _plain_block(block: PlainBlock, where: str, dtype: torch.dtype) -> nn.Module:
    triton_backend._check_relu(block.relu, f"{where}.relu")
    return FusedResidual([FusedConv(block.conv1, block.bn1, relu=True, where=f"{where}.conv1"),
                          FusedConv(block.conv2, block.bn2, relu=True, where=f"{where}.conv2")], "none")


def _preact_block(block: PreActBlock, where: str, dtype: torch.dtype) -> nn.Module:
    triton_backend._check_relu(block.relu, f"{where}.relu")
    if len(block.bns) != len(block.convs) - 1:
        raise ConversionError(f"{where}: expected one BatchNorm between each pair of convs")
    # Each inner BN-ReLU follows a conv: it is that conv's epilogue. The last conv has no BN.
    convs = [FusedConv(conv, bn, relu=True, where=f"{where}.convs.{i}")
             for i, (conv, bn) in enumerate(zip(block.convs, block.bns))]
    convs.append(bare_conv(block.convs[-1], relu=False, where=f"{where}.convs.{len(block.bns)}"))
    pre = None if block.bn1 is None else BnRelu(block.bn1, dtype, f"{where}.bn1")
    if block.shortcut is None:
        return FusedResidual(convs, "identity", pre)
    return FusedResidual(convs, bare_conv(block.shortcut, relu=False, where=f"{where}.shortcut"), pre,
                         reads_preact=True)


# Block type -> converter(block, where, activation dtype). Subclasses are found through their bases.
BLOCKS: dict[type, Callable[[Any, str, torch.dtype], nn.Module]] = {
    BasicBlock: _torchvision_block, Bottleneck: _torchvision_block,
    PlainBlock: _plain_block, PreActBlock: _preact_block,
}


def _converter(block: nn.Module, where: str) -> Callable[[Any, str, torch.dtype], nn.Module]:
    for kind in type(block).__mro__:
        if kind in BLOCKS:
            return BLOCKS[kind]
    raise ConversionError(f"{where}: no triton conversion for {type(block).__name__}; known: "
                          f"{', '.join(k.__name__ for k in BLOCKS)}")


class TritonZooNet(nn.Module):
    """A `ZooNet`'s inference forward pass on rbench_kernels (see the module docstring). Forward only."""

    def __init__(self, model: ZooNet, allow_tf32: bool = False):
        super().__init__()
        if model.training:
            raise ConversionError("the model is in training mode: the triton backend is inference only "
                                  "(BatchNorm is folded from running statistics); call model.eval() first")
        dtype = model.fc.weight.dtype
        with torch.no_grad():
            self.stem, self.maxpool_args = _stem(model.stem)
            self.blocks = nn.ModuleList(
                _converter(block, f"model.layers.{s}.{i}")(block, f"model.layers.{s}.{i}", dtype)
                for s, stage in enumerate(model.layers) for i, block in enumerate(stage))
            self.norm = None if model.norm is None else BnRelu(model.norm, dtype, "model.norm")
            if not isinstance(model.pool, nn.AdaptiveAvgPool2d) or model.pool.output_size not in (1, (1, 1)):
                raise ConversionError(f"model.pool: expected AdaptiveAvgPool2d(1), got {model.pool!r}")
            self.register_buffer("fc_weight", model.fc.weight.detach())
            self.register_buffer("fc_bias", None if model.fc.bias is None else model.fc.bias.detach())
        triton_backend.TritonResNet.set_allow_tf32(self, allow_tf32)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # the stem makes the entrance copy (channels_last, padded to 4 channels)
        if self.maxpool_args is not None:
            x = F.max_pool2d(x, **self.maxpool_args)
        for block in self.blocks:
            x = block(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.linear(x.mean(dim=(2, 3)), self.fc_weight, self.fc_bias)


def _stem(stem: nn.Sequential) -> tuple[FusedConv, dict[str, Any] | None]:
    """Conv2d [BatchNorm2d [ReLU]] [MaxPool2d] as one kernel and the max-pool's arguments."""
    layers = list(stem)
    kinds = [type(m) for m in layers]
    if kinds not in ([nn.Conv2d], [nn.Conv2d, nn.BatchNorm2d, nn.ReLU],
                     [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]):
        raise ConversionError(f"model.stem: expected Conv2d [BatchNorm2d ReLU [MaxPool2d]], got "
                              f"{[k.__name__ for k in kinds]}")
    conv = (FusedConv(layers[0], layers[1], relu=True, where="model.stem.0") if len(layers) > 1
            else bare_conv(layers[0], relu=False, where="model.stem.0"))
    if len(layers) < 4:
        return conv, None
    mp = layers[3]
    return conv, dict(kernel_size=mp.kernel_size, stride=mp.stride, padding=mp.padding, dilation=mp.dilation,
                      ceil_mode=mp.ceil_mode)
