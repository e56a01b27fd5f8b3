"""The triton backend: a torchvision ResNet's inference forward pass on `rbench_kernels`.

`convert(model)` reads an eval-mode torchvision ResNet once and builds a new module from plain tensors:

- every BatchNorm is folded into the preceding convolution's epilogue (`rbench_kernels.fold_bn`:
  per-channel fp32 scale and shift), and every conv+BN(+ReLU) becomes one kernel call:
  `conv1x1_bn_act` for 1x1 convolutions (stride 2 included), `conv_bn_act` for the rest (the 7x7/2
  stem, 3x3 convolutions, ResNeXt's grouped 3x3 convolutions);
- in each residual block the shortcut is computed first (the identity, or the downsample's 1x1
  conv+BN without ReLU), then the main path; the block's residual add and final ReLU run in the
  epilogue of its last convolution, so no separate add or activation kernel is launched;
- the stem's max-pool, the global average pool and the classifier run through PyTorch.

Activations stay channels_last from the stem to the pool: every kernel reads and writes NHWC and the
max-pool keeps the layout. The converted module holds the folded tensors and the layer geometry, and
no reference to the original model or its modules. Convolution weights are taken in the layout the
kernels read ((K, R, S, C/groups) in memory for `conv_bn_act`, a (K, C) matrix for `conv1x1_bn_act`);
where the model's parameter already has that layout (a channels_last model), the tensor shares its
storage instead of being copied, so the converted model costs no weight memory of its own.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchvision

from rbench.run.models import RESNET_FAMILY

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
STEM_CHANNELS = 4  # a 3-channel input is padded to this many channels (`rbench_kernels.pad_channels`)

_RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
_BLOCK_CHILDREN = {
    torchvision.models.resnet.BasicBlock: ("conv1", "bn1", "relu", "conv2", "bn2", "downsample"),
    torchvision.models.resnet.Bottleneck: ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "downsample"),
}


def unsupported_model(name: str) -> str | None:
    """None for the torchvision ResNet family, else why the triton backend cannot run `name`."""
    if name in RESNET_FAMILY:
        return None
    return (f"the triton backend converts only the torchvision ResNet family ({', '.join(RESNET_FAMILY)}); "
            f"{name} is not one")


def _nvidia_family(target: str | None, name: str) -> tuple[str | None, str | None]:
    if not target or not target.startswith("sm_"):
        return None, f"could not tell the compute capability of {name}"
    major, minor = int(target[3:-1]), int(target[-1])
    if major < 8:
        return None, f"Triton runs on NVIDIA GPUs of compute capability 8.0 or newer; {name} is {major}.{minor}"
    return ("sm90" if major >= 9 else "sm80"), None


def _amd_family(target: str | None, name: str) -> tuple[str | None, str | None]:
    if not target:
        return None, f"could not tell the gfx target of {name} (no gcnArchName)"
    return target, None


# Device kind -> (the rbench_kernels config family of its GPU, or None with the reason). Other kinds'
# family is the kind itself (`xpu`), which has configs only if rbench_kernels ships some.
FAMILY_OF = {"cuda": _nvidia_family, "rocm": _amd_family}


def unsupported_target(device: Any) -> str | None:
    """None when rbench_kernels ships Triton configs for `device`'s GPU, else why the backend cannot run there."""
    try:
        from rbench_kernels._common import FAMILIES  # at call time: see `_kernels`
    except ImportError as e:  # no triton on this machine, say
        return f"rbench_kernels cannot be imported here: {e}"
    resolve = FAMILY_OF.get(device.kind)
    target = device.gpu_target()
    family, reason = resolve(target, device.name) if resolve else (device.kind, None)
    if reason:
        return reason
    if family not in FAMILIES:
        return (f"rbench_kernels ships no Triton configs for {target or device.kind} ({device.name}); "
                f"it has configs for {', '.join(FAMILIES)}")
    return None


class ConversionError(ValueError):
    """The model is not an eval-mode torchvision ResNet this backend knows how to convert."""


def _kernels() -> Any:
    # Imported at call time, not at module import: Triton reads TRITON_INTERPRET when it is first
    # imported, and `rbench.run.backends` must stay importable on machines where triton is not wanted.
    import rbench_kernels

    return rbench_kernels


class FusedConv(torch.nn.Module):
    """act(conv(x) * scale + shift [+ residual]) as one `rbench_kernels` call; BatchNorm folded in.

    Buffers: `weight` in the model's dtype and the layout the kernel reads, `scale` and `shift` fp32 (K,).
    """

    def __init__(self, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d, relu: bool, where: str):
        super().__init__()
        _check_conv(conv, bn, where)
        scale, shift = _kernels().fold_bn(bn, conv.bias)
        weight = conv.weight.detach()
        self.pointwise = conv.kernel_size == (1, 1) and conv.padding == (0, 0) and conv.groups == 1 and (
            conv.stride[0] == conv.stride[1])
        if self.pointwise:
            # (K, C, 1, 1) in either memory format is a (K, C) matrix; reshape is a view when it can be.
            weight = weight.reshape(weight.shape[0], weight.shape[1]).contiguous()
            self.stride: Any = conv.stride[0]
        else:
            weight = weight.contiguous(memory_format=torch.channels_last)
            self.stride = conv.stride
        # A 3-channel stem reads its input padded to 4 channels: the flattened taps then have a compile-time
        # channel count, a quarter to two thirds fewer instructions per tile (README: the stem). The zero
        # channels add nothing; the padded weight is a copy (a few KB), the input's padding its entrance copy.
        self.pad_to = STEM_CHANNELS if not self.pointwise and conv.in_channels == 3 and conv.groups == 1 else None
        if self.pad_to:
            weight = _kernels().pad_channels(weight, self.pad_to)
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale.to(weight.device))
        self.register_buffer("shift", shift.to(weight.device))
        self.padding, self.dilation, self.groups = conv.padding, conv.dilation, conv.groups
        self.relu = relu
        self.allow_tf32 = False

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        k = _kernels()
        if self.pad_to:  # the network's entrance: one copy, NCHW or NHWC in, channels_last and padded out
            x = k.pad_channels(x, self.pad_to)
        if self.pointwise:
            return k.conv1x1_bn_act(x, self.weight, self.scale, self.shift, stride=self.stride,
                                    residual=residual, relu=self.relu, allow_tf32=self.allow_tf32)
        return k.conv_bn_act(x, self.weight, self.scale, self.shift, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, groups=self.groups, residual=residual, relu=self.relu,
                             allow_tf32=self.allow_tf32)

    def extra_repr(self) -> str:
        kind = "conv1x1_bn_act" if self.pointwise else "conv_bn_act"
        geometry = f"stride={self.stride}" if self.pointwise else (
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}")
        if self.pad_to:
            geometry += f", input padded to {self.pad_to} channels"
        return f"{kind}, weight={tuple(self.weight.shape)} {self.weight.dtype}, {geometry}, relu={self.relu}"


class FusedBlock(torch.nn.Module):
    """A BasicBlock or Bottleneck: shortcut first, then the main path; its last conv adds and clamps."""

    def __init__(self, block: torch.nn.Module, where: str):
        super().__init__()
        _check_children(block, _BLOCK_CHILDREN[type(block)], where)
        _check_relu(block.relu, f"{where}.relu")
        bottleneck = isinstance(block, torchvision.models.resnet.Bottleneck)
        convs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
        if bottleneck:
            convs.append((block.conv3, block.bn3))
        # Every conv but the last has its own ReLU; the last one's ReLU follows the residual add.
        self.convs = torch.nn.ModuleList(
            FusedConv(conv, bn, relu=True, where=f"{where}.conv{i + 1}") for i, (conv, bn) in enumerate(convs))
        self.downsample = None
        if block.downsample is not None:
            ds = block.downsample
            if not (isinstance(ds, torch.nn.Sequential) and len(ds) == 2
                    and isinstance(ds[0], torch.nn.Conv2d) and isinstance(ds[1], torch.nn.BatchNorm2d)):
                raise ConversionError(f"{where}.downsample: expected Sequential(Conv2d, BatchNorm2d), got {ds!r}")
            self.downsample = FusedConv(ds[0], ds[1], relu=False, where=f"{where}.downsample")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        *head, last = self.convs
        for conv in head:
            x = conv(x)
        return last(x, residual=shortcut)


class TritonResNet(torch.nn.Module):
    """A torchvision ResNet's inference forward pass on rbench_kernels (see the module docstring).

    Forward only: there are no backward kernels, and the module has no parameters to train.
    Input: (N, 3, H, W) in the model's dtype; output: logits (N, num_classes).
    """

    def __init__(self, model: torch.nn.Module, allow_tf32: bool = False):
        super().__init__()
        if not isinstance(model, torchvision.models.ResNet):
            raise ConversionError(f"expected a torchvision ResNet, got {type(model).__name__}")
        if model.training:
            raise ConversionError("the model is in training mode: the triton backend is inference only "
                                  "(BatchNorm is folded from running statistics); call model.eval() first")
        _check_children(model, _RESNET_CHILDREN, "model")
        _check_relu(model.relu, "model.relu")
        if not isinstance(model.maxpool, torch.nn.MaxPool2d) or model.maxpool.return_indices:
            raise ConversionError(f"model.maxpool: expected MaxPool2d, got {model.maxpool!r}")
        pool = model.avgpool
        if not isinstance(pool, torch.nn.AdaptiveAvgPool2d) or pool.output_size not in (1, (1, 1)):
            raise ConversionError(f"model.avgpool: expected AdaptiveAvgPool2d((1, 1)), got {pool!r}")
        if not isinstance(model.fc, torch.nn.Linear):
            raise ConversionError(f"model.fc: expected Linear, got {model.fc!r}")

        with torch.no_grad():
            self.stem = FusedConv(model.conv1, model.bn1, relu=True, where="model.conv1")
            mp = model.maxpool
            self.maxpool_args = dict(kernel_size=mp.kernel_size, stride=mp.stride, padding=mp.padding,
                                     dilation=mp.dilation, ceil_mode=mp.ceil_mode)
            blocks = []
            for stage in ("layer1", "layer2", "layer3", "layer4"):
                for i, block in enumerate(getattr(model, stage)):
                    where = f"model.{stage}.{i}"
                    if type(block) not in _BLOCK_CHILDREN:
                        raise ConversionError(f"{where}: expected a torchvision BasicBlock or Bottleneck, "
                                              f"got {type(block).__name__}")
                    blocks.append(FusedBlock(block, where))
            self.blocks = torch.nn.ModuleList(blocks)
            self.register_buffer("fc_weight", model.fc.weight.detach())
            self.register_buffer("fc_bias", None if model.fc.bias is None else model.fc.bias.detach())
        self.set_allow_tf32(allow_tf32)
        self.eval()

    def set_allow_tf32(self, allow: bool) -> None:
        """TF32 tensor cores for fp32 convolutions (the `tf32` precision); ignored for fp16/bf16."""
        for m in self.modules():
            if isinstance(m, FusedConv):
                m.allow_tf32 = bool(allow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The stem makes the one copy at the entrance (padded to 4 channels); channels_last from here to the pool.
        x = self.stem(x)
        x = F.max_pool2d(x, **self.maxpool_args)
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=(2, 3))
        return F.linear(x, self.fc_weight, self.fc_bias)


def convert(model: torch.nn.Module, allow_tf32: bool = False) -> TritonResNet:
    """The eval-mode torchvision ResNet `model` as a module that runs on rbench_kernels.

    `model` is already in the case's dtype (fp32, fp16 or bf16) and on its device, ideally
    channels_last (then no weight is copied). Raises `ConversionError` (a ValueError) for a model in
    training mode or of a structure other than torchvision's ResNet/BasicBlock/Bottleneck.
    """
    return TritonResNet(model, allow_tf32=allow_tf32)


def _check_children(module: torch.nn.Module, expected: tuple[str, ...], where: str) -> None:
    names = tuple(name for name, _ in module.named_children())
    extra = [n for n in names if n not in expected]
    missing = [n for n in expected if n not in names and getattr(module, n, "absent") is not None]
    if extra or missing:
        raise ConversionError(f"{where}: unexpected structure for {type(module).__name__} "
                              f"(extra modules: {extra or 'none'}; missing: {missing or 'none'})")


def _check_relu(module: Any, where: str) -> None:
    if type(module) is not torch.nn.ReLU:
        raise ConversionError(f"{where}: expected nn.ReLU (fused into the conv epilogue), got {module!r}")


def _check_conv(conv: Any, bn: Any, where: str) -> None:
    if type(conv) is not torch.nn.Conv2d:
        raise ConversionError(f"{where}: expected nn.Conv2d, got {type(conv).__name__}")
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ConversionError(f"{where}: only explicit zero padding is supported, got "
                              f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")
    if type(bn) is not torch.nn.BatchNorm2d:
        raise ConversionError(f"{where}: expected the conv to be followed by nn.BatchNorm2d, got {type(bn).__name__}")
    if bn.training:
        raise ConversionError(f"{where}: BatchNorm is in training mode; the triton backend is inference only")
    if bn.num_features != conv.out_channels:
        raise ConversionError(f"{where}: BatchNorm has {bn.num_features} channels, the conv {conv.out_channels}")
