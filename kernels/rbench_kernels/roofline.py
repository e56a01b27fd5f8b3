"""A roofline for every convolution the kernels run: FLOPs, compulsory bytes, intensity, lower-bound time.

A fused layer must at least read its input, weights and residual and write its output once (plus
the fp32 BatchNorm scale and shift), each at its dtype's width, and must execute 2·MACs FLOPs; on
a device with peak `flops` FLOP/s and `bandwidth` bytes/s it cannot finish faster than
max(FLOPs / flops, bytes / bandwidth).  A network's bound is the sum of its layers' bounds (each
layer is its own kernel).  `resnet_layers` lists the convolutions of torchvision's ResNet family
as the triton backend runs them (residual and ReLU fused into each block's last convolution); the
pooling layers and the classifier are not convolutions and not counted.

    from rbench_kernels import roofline
    layers = roofline.resnet_layers("resnet50", batch=256)
    roofline.network_bound(layers, device="h100-sxm").seconds   # lower bound per forward pass
    roofline.layer_bound(layers[0], flops=989e12, bandwidth=3.35e12)
    roofline.device_for("NVIDIA H100 80GB HBM3")                # "h100-sxm"; None if unlisted

Imports nothing but the standard library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

DTYPE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4, "tf32": 4}


@dataclass(frozen=True)
class Device:
    """Peak dense FLOP/s (fp16/bf16 tensor cores, no sparsity) and memory bandwidth, bytes/s."""

    name: str
    flops: float
    bandwidth: float


# vendors' datasheet peaks: dense fp16 tensor-core FLOP/s, HBM bytes/s
DEVICES = {
    "h100-sxm": Device("NVIDIA H100 SXM", 989e12, 3.35e12),
    "h200": Device("NVIDIA H200", 989e12, 4.8e12),
    "a100": Device("NVIDIA A100 SXM", 312e12, 2.0e12),
    "mi300x": Device("AMD Instinct MI300X", 1307e12, 5.3e12),
}


@dataclass(frozen=True)
class ConvSizes:
    """The sizes of any convolution: batch n, input channels c and size h x w, output channels k, kernel r x s.

    `ConvLayer` adds what a roofline needs; the kernel tests' shapes add conv2d's geometry."""

    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int


@dataclass(frozen=True)
class ConvLayer(ConvSizes):
    """One fused convolution: act(conv(x) * scale + shift [+ residual])."""

    stride: int = 1
    padding: int = 0
    groups: int = 1
    residual: bool = False
    relu: bool = True
    dtype: str = "fp16"

    @property
    def p(self) -> int:
        return (self.h + 2 * self.padding - self.r) // self.stride + 1

    @property
    def q(self) -> int:
        return (self.w + 2 * self.padding - self.s) // self.stride + 1

    @property
    def macs(self) -> int:
        return self.n * self.p * self.q * self.k * (self.c // self.groups) * self.r * self.s

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def bytes_moved(self) -> dict[str, int]:
        """The compulsory traffic, by operand: each read or written once at its dtype's width."""
        e = DTYPE_BYTES[self.dtype]
        out = self.n * self.k * self.p * self.q * e
        return {
            "input": self.n * self.c * self.h * self.w * e,
            "weights": self.k * (self.c // self.groups) * self.r * self.s * e,
            "affine": 2 * self.k * 4,  # folded BatchNorm scale and shift, fp32
            "residual": out if self.residual else 0,
            "output": out,
        }

    @property
    def bytes(self) -> int:
        return sum(self.bytes_moved().values())


@dataclass(frozen=True)
class Bound:
    """A layer's (or network's) roofline lower bound on a device."""

    flops: int
    bytes: int
    compute_s: float  # flops / peak FLOP/s
    memory_s: float  # bytes / bandwidth
    seconds: float  # the bound: the larger of the two, per layer

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else float("inf")

    @property
    def limit(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory"


def _peaks(device: str | Device | None, flops: float | None, bandwidth: float | None) -> tuple[float, float]:
    if isinstance(device, str):
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)} (or pass flops= and bandwidth=)")
        device = DEVICES[device]
    if device is not None:
        flops = device.flops if flops is None else flops
        bandwidth = device.bandwidth if bandwidth is None else bandwidth
    if not flops or not bandwidth or flops <= 0 or bandwidth <= 0:
        raise ValueError("need a device or positive flops= (FLOP/s) and bandwidth= (bytes/s)")
    return float(flops), float(bandwidth)


# GPU names as torch.cuda.get_device_name reports them -> DEVICES key: the first rule whose text the name
# contains (any case) and none of its exclusions does.  Other parts of a family have other peaks and no
# entry: H100 PCIe (756 TFLOP/s, 2.0 TB/s) and the NVL cards (835 TFLOP/s dense), GH200.
GPU_NAMES = (
    ("h100", ("pcie", "nvl"), "h100-sxm"),
    ("h200", ("nvl", "gh200"), "h200"),
    ("a100", (), "a100"),
    ("mi300x", (), "mi300x"),
)


def device_for(name: str | None) -> str | None:
    """The DEVICES key for a GPU name ("NVIDIA H100 80GB HBM3" -> "h100-sxm"), None when none fits.

    None is the honest answer for an unlisted part: a bound from another card's peaks would be wrong.
    """
    low = (name or "").lower()
    for text, unless, key in GPU_NAMES:
        if text in low and not any(u in low for u in unless):
            return key
    return None


def layer_bound(layer: ConvLayer, *, device: str | Device | None = None, flops: float | None = None,
                bandwidth: float | None = None) -> Bound:
    """The roofline bound of one layer on `device` (a DEVICES name or a Device) or explicit peaks."""
    peak, bw = _peaks(device, flops, bandwidth)
    compute, memory = layer.flops / peak, layer.bytes / bw
    return Bound(layer.flops, layer.bytes, compute, memory, max(compute, memory))


@dataclass(frozen=True)
class NetworkBound:
    """A network's bound: the sum over its layers, and the throughput it caps."""

    layers: tuple[tuple[ConvLayer, Bound], ...]
    total: Bound
    batch: int

    @property
    def seconds(self) -> float:
        return self.total.seconds

    @property
    def images_per_s(self) -> float:
        """The most images per second the convolutions allow."""
        return self.batch / self.total.seconds if self.total.seconds else float("inf")


def network_bound(layers: Sequence[ConvLayer], *, device: str | Device | None = None, flops: float | None = None,
                  bandwidth: float | None = None) -> NetworkBound:
    """Per-layer bounds and their sum (layers run one after another, each bounded on its own)."""
    if not layers:
        raise ValueError("network_bound needs at least one layer")
    bounds = tuple((layer, layer_bound(layer, device=device, flops=flops, bandwidth=bandwidth)) for layer in layers)
    total = Bound(
        sum(b.flops for _, b in bounds), sum(b.bytes for _, b in bounds),
        sum(b.compute_s for _, b in bounds), sum(b.memory_s for _, b in bounds), sum(b.seconds for _, b in bounds),
    )
    return NetworkBound(bounds, total, layers[0].n)


# model -> (block, blocks per stage, groups, width per group), as torchvision builds them
MODELS = {
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnet34": ("basic", (3, 4, 6, 3), 1, 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 1, 64),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 1, 64),
    "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": ("bottleneck", (3, 4, 23, 3), 1, 128),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": ("bottleneck", (3, 4, 23, 3), 32, 8),
    "resnext101_64x4d": ("bottleneck", (3, 4, 23, 3), 64, 4),
}


def resnet_layers(model: str, batch: int, image: int = 224, dtype: str = "fp16") -> list[ConvLayer]:
    """Every convolution of torchvision's `model` at `batch` x 3 x image x image, in forward order."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}")
    block, stages, groups, width_per_group = MODELS[model]
    conv = ConvLayer("conv1", batch, 3, image, image, 64, 7, 7, 2, 3, dtype=dtype)
    layers = [conv]
    size = (conv.p + 2 - 3) // 2 + 1  # the 3x3/2 max pool, padding 1
    channels = 64
    for stage, blocks in enumerate(stages, start=1):
        planes = 64 * 2 ** (stage - 1)
        for b in range(blocks):
            stride = 2 if stage > 1 and b == 0 else 1
            at = f"layer{stage}.{b}"
            inner = (size - 1) // stride + 1  # after the block's strided convolution
            if block == "basic":
                out = planes
                body = [ConvLayer(f"{at}.conv1", batch, channels, size, size, planes, 3, 3, stride, 1),
                        ConvLayer(f"{at}.conv2", batch, planes, inner, inner, planes, 3, 3, 1, 1, residual=True)]
            else:
                width, out = planes * width_per_group // 64 * groups, planes * 4
                body = [ConvLayer(f"{at}.conv1", batch, channels, size, size, width, 1, 1),
                        ConvLayer(f"{at}.conv2", batch, width, size, size, width, 3, 3, stride, 1, groups),
                        ConvLayer(f"{at}.conv3", batch, width, inner, inner, out, 1, 1, residual=True)]
            if stride != 1 or channels != out:
                body.append(ConvLayer(f"{at}.downsample.0", batch, channels, size, size, out, 1, 1, stride,
                                      relu=False))
            layers += [replace(layer, dtype=dtype) for layer in body]
            channels, size = out, inner
    return layers
