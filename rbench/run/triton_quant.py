"""The triton backend at int8 and fp8: a torchvision ResNet quantized by rbench (`quantize`) on the quantized kernels.

`convert(model, precision)` takes the eval-mode ResNet in fp16 (the case's model for these precisions)
and builds a network whose activations stay one byte between layers:

- the stem (7x7 conv + BN + ReLU, one fp16 `conv_bn_act`) and its max-pool run in fp16, as in the
  fp16 backend; the pooled tensor is quantized once, in PyTorch, with its calibrated scale.  The stem
  stays fp16 by choice: 3 input channels make it a small, gather-bound share of the FLOPs (about 2 %
  of ResNet-50's), and quantizing the image itself costs the most accuracy;
- every convolution of the residual blocks is one quantized kernel call (`qconv`): int8/fp8 weights
  with per-output-channel scales, the epilogue's scale s_in * s_w[k] * bn_scale[k], its output
  quantized with the next tensor's calibrated scale; the residual (the block input, or the
  downsample's quantized output) enters the last conv's epilogue with its own scale;
- the last block writes fp32 (no out_scale); the global average pool and the classifier run in fp16
  PyTorch, like the fp16 backend: the classifier stays fp16 by choice (one small GEMM whose logits are
  what the gate and top-1 agreement read).

Grouped convolutions (ResNeXt) have no quantized kernel: those models are `unsupported`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchvision

from rbench.run import quantize, triton_backend
from rbench.run.models import RESNET_FAMILY
from rbench.run.triton_backend import ConversionError

PRECISIONS = tuple(quantize.QUANT_DTYPES)


def unsupported(case: Any, device: Any) -> str | None:
    """Why the triton backend cannot run this int8 / fp8 case, or None."""
    if case.model not in RESNET_FAMILY or case.model.startswith("resnext"):
        plain = ", ".join(m for m in RESNET_FAMILY if not m.startswith("resnext"))
        return (f"{case.precision} on the triton backend converts torchvision ResNets without grouped convolutions "
                f"({plain}); {case.model} is not one")
    if case.precision == "fp8" and getattr(device, "kind", "") == "cuda":
        major, minor = torch.cuda.get_device_capability(device.torch_device)
        if (major, minor) < (8, 9):
            return f"fp8 (e4m3) tensor cores need compute capability >= 8.9; this GPU is {major}.{minor}"
    return None


class QConv(triton_backend.FusedConv):
    """One quantized conv + folded BN (+ residual) (+ ReLU) kernel call; writes `out_scale`-quantized or fp32.

    FusedConv's fold and weight layout, then the weight quantized per output channel (dim 0 in both
    layouts) and the dequantization folded into BatchNorm's scale: s_in * s_w[k] * bn_scale[k], fp32."""

    def __init__(self, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d, relu: bool, dtype: torch.dtype,
                 in_scale: float, out_scale: float | None, where: str):
        if getattr(conv, "groups", 1) != 1:
            raise ConversionError(f"{where}: grouped convolutions have no int8/fp8 kernel (groups={conv.groups})")
        super().__init__(conv, bn, relu, where)
        weight, s_w = quantize.quantize_weight(self.weight, dtype)
        self.weight = weight.contiguous() if self.pointwise else weight.contiguous(memory_format=torch.channels_last)
        self.scale = (s_w * in_scale * self.scale).float().contiguous()
        self.out_scale = out_scale

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                residual_scale: float | None = None) -> torch.Tensor:
        k = triton_backend._kernels()
        if self.pointwise:
            return k.conv1x1_bn_act(x, self.weight, self.scale, self.shift, stride=self.stride, residual=residual,
                                    residual_scale=residual_scale, relu=self.relu, out_scale=self.out_scale)
        return k.conv_bn_act(x, self.weight, self.scale, self.shift, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, residual=residual, residual_scale=residual_scale,
                             relu=self.relu, out_scale=self.out_scale)

    def extra_repr(self) -> str:
        return f"weight={tuple(self.weight.shape)} {self.weight.dtype}, stride={self.stride}, out_scale={self.out_scale}"


def _block_convs(block: torch.nn.Module) -> list[tuple[torch.nn.Conv2d, torch.nn.BatchNorm2d]]:
    convs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    if isinstance(block, torchvision.models.resnet.Bottleneck):
        convs.append((block.conv3, block.bn3))
    return convs


def observed_tensors(model: torchvision.models.ResNet) -> dict[str, tuple[torch.nn.Module, bool]]:
    """Every tensor that is stored quantized, by name: the pooled stem output, each block's inner
    activations (a BN followed by its fused ReLU), its downsample's output and its output."""
    observed: dict[str, tuple[torch.nn.Module, bool]] = {"stem": (model.maxpool, False)}
    for where, block in _blocks(model):
        for i, (_, bn) in enumerate(_block_convs(block)[:-1]):
            observed[f"{where}.conv{i + 1}"] = (bn, True)
        if block.downsample is not None:
            observed[f"{where}.downsample"] = (block.downsample, False)
        observed[f"{where}.out"] = (block, False)
    return observed


def _blocks(model: torchvision.models.ResNet) -> list[tuple[str, torch.nn.Module]]:
    return [(f"layer{s}.{i}", b) for s in range(1, 5) for i, b in enumerate(getattr(model, f"layer{s}"))]


class QBlock(torch.nn.Module):
    """A BasicBlock or Bottleneck on quantized kernels: shortcut first; the last conv adds it with its scale."""

    def __init__(self, block: torch.nn.Module, where: str, scales: dict[str, float], in_scale: float,
                 dtype: torch.dtype, last: bool):
        super().__init__()
        convs = _block_convs(block)
        outs = [scales[f"{where}.conv{i + 1}"] for i in range(len(convs) - 1)] + [None if last else
                                                                                  scales[f"{where}.out"]]
        ins = [in_scale] + outs[:-1]
        self.convs = torch.nn.ModuleList(QConv(c, bn, True, dtype, s_in, s_out, f"{where}.conv{i + 1}")
                                         for i, ((c, bn), s_in, s_out) in enumerate(zip(convs, ins, outs)))
        self.downsample = None
        self.residual_scale = in_scale
        if block.downsample is not None:
            ds = block.downsample
            self.residual_scale = scales[f"{where}.downsample"]
            self.downsample = QConv(ds[0], ds[1], False, dtype, in_scale, self.residual_scale, f"{where}.downsample")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        *head, last = self.convs
        for conv in head:
            x = conv(x)
        return last(x, residual=shortcut, residual_scale=self.residual_scale)


class QuantResNet(torch.nn.Module):
    """A torchvision ResNet at int8 or fp8 on rbench_kernels (the module docstring); input and logits fp16."""

    def __init__(self, model: torch.nn.Module, precision: str, image_size: int, dtype: torch.dtype | None = None):
        super().__init__()
        base = triton_backend.convert(model)  # checks the structure; its fp16 stem is ours
        self.dtype = dtype or quantize.QUANT_DTYPES[precision]  # the operands' encoding (quantize.quant_dtype)
        amax = quantize.observe_ranges(model, observed_tensors(model), image_size)
        scales = {name: quantize.activation_scale(a, self.dtype) for name, a in amax.items()}
        self.scales = scales
        self.stem, self.maxpool_args = base.stem, base.maxpool_args
        self.register_buffer("stem_inv_scale", torch.tensor(1.0 / scales["stem"], dtype=torch.float32))
        blocks, s_in = [], scales["stem"]
        listed = _blocks(model)
        with torch.no_grad():
            for i, (where, block) in enumerate(listed):
                blocks.append(QBlock(block, where, scales, s_in, self.dtype, last=i == len(listed) - 1))
                s_in = scales[f"{where}.out"]
        self.blocks = torch.nn.ModuleList(blocks)
        self.register_buffer("fc_weight", base.fc_weight)
        self.register_buffer("fc_bias", base.fc_bias)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # the stem makes the entrance copy (channels_last, padded to 4 channels)
        x = F.max_pool2d(x, **self.maxpool_args)
        x = quantize.quantize_tensor(x, self.stem_inv_scale, self.dtype)
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=(2, 3)).to(self.fc_weight.dtype)
        return F.linear(x, self.fc_weight, self.fc_bias)


def convert(model: torch.nn.Module, precision: str, image_size: int, dtype: torch.dtype | None = None) -> QuantResNet:
    """`model` (eval-mode torchvision ResNet in fp16 on its device) calibrated and quantized to `precision`,
    in `dtype` (`quantize.quant_dtype` of the device; default the precision's OCP dtype)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not isinstance(model, torchvision.models.ResNet):
        raise ConversionError(f"{precision}: expected a torchvision ResNet, got {type(model).__name__}")
    if dtype is not None and (dtype not in quantize.QMAX or (dtype == torch.int8) != (precision == "int8")):
        raise ValueError(f"dtype {dtype} does not encode precision {precision!r}")
    return QuantResNet(model, precision, image_size, dtype)


def torch_unsupported(case: Any) -> str | None:
    """Why eager PyTorch and torch.compile cannot run an int8 / fp8 case (None for other precisions)."""
    if case.precision not in PRECISIONS:
        return None
    return (f"PyTorch has no {case.precision} convolution for a ResNet on a GPU: torch._int_mm and torch._scaled_mm "
            "are matrix products only, torch.ao's quantized convolutions run on the CPU (fbgemm/onednn) or as "
            f"fake-quant in fp32; {case.precision} runs on the triton backend")
