"""rbench_kernels.roofline against figures computed by hand, and its layer lists against torchvision."""

from __future__ import annotations

import pytest
import torch
import torchvision

from rbench_kernels import roofline

H100 = dict(flops=989e12, bandwidth=3.35e12)


def _layer(model: str, batch: int, name: str) -> roofline.ConvLayer:
    return next(layer for layer in roofline.resnet_layers(model, batch) if layer.name == name)


# ResNet-50 at 224x224, fp16.  FLOPs = 2·N·P·Q·K·C·R·S; bytes = input + weights + 2·K·4 (scale,
# shift) + residual + output, 2 bytes an element.
HAND = [
    # stem 7x7/2, 3 -> 64, 112x112 out: 2·256·12544·64·147 FLOPs; 256·3·224²·2 + 64·147·2 + 512
    # + 256·64·112²·2 bytes -> memory-bound on an H100
    ("conv1", 256, 60_423_143_424, 77_070_336 + 18_816 + 512 + 411_041_792, "memory"),
    # layer1 reduce 1x1, 64 -> 64 at 56x56: 2·256·3136·64·64; in and out 256·64·3136·2 each
    ("layer1.0.conv1", 256, 6_576_668_672, 2 * 102_760_448 + 8_192 + 512, "memory"),
    # layer1 expand 1x1, 64 -> 256, + residual: 2·256·3136·64·256; residual and output 411,041,792 each
    ("layer1.0.conv3", 256, 26_306_674_688, 102_760_448 + 32_768 + 2_048 + 2 * 411_041_792, "memory"),
    # layer4 3x3/2, 512 -> 512, 14x14 -> 7x7: 2·256·49·512·512·9 -> compute-bound
    ("layer4.0.conv2", 256, 59_190_018_048, 51_380_224 + 4_718_592 + 4_096 + 12_845_056, "compute"),
    # the same layer's stride-1 sibling at batch 1: the weights (4.7 MB) dominate
    ("layer4.1.conv2", 1, 231_211_008, 50_176 + 4_718_592 + 4_096 + 50_176, "memory"),
]


@pytest.mark.parametrize("name, batch, flops, nbytes, limit", HAND, ids=[f"{h[0]}-b{h[1]}" for h in HAND])
def test_layer_figures(name: str, batch: int, flops: int, nbytes: int, limit: str) -> None:
    layer = _layer("resnet50", batch, name)
    b = roofline.layer_bound(layer, **H100)
    assert (b.flops, b.bytes, b.limit) == (flops, nbytes, limit)
    assert b.compute_s == pytest.approx(flops / 989e12) and b.memory_s == pytest.approx(nbytes / 3.35e12)
    assert b.seconds == max(b.compute_s, b.memory_s)
    assert b.intensity == pytest.approx(flops / nbytes)
    assert roofline.layer_bound(layer, device="h100-sxm") == b


def test_stem_bound_in_microseconds() -> None:
    """488,131,456 bytes at 3.35 TB/s: 145.7 us; on an H200 (4.8 TB/s) 101.7 us; fp32 doubles the bytes."""
    stem = _layer("resnet50", 256, "conv1")
    assert roofline.layer_bound(stem, device="h100-sxm").seconds == pytest.approx(145.71e-6, rel=1e-4)
    assert roofline.layer_bound(stem, device="h200").seconds == pytest.approx(101.69e-6, rel=1e-4)
    fp32 = roofline.resnet_layers("resnet50", 256, dtype="fp32")[0]
    assert fp32.bytes == 2 * (stem.bytes - 512) + 512


def test_network_bound_is_the_sum_of_layer_bounds() -> None:
    layers = roofline.resnet_layers("resnet50", 256)
    net = roofline.network_bound(layers, device="a100")
    assert len(layers) == 53 and net.batch == 256
    assert net.seconds == pytest.approx(sum(roofline.layer_bound(x, device="a100").seconds for x in layers))
    assert net.seconds >= max(net.total.compute_s, net.total.memory_s)
    # 4.087 GMACs per image in ResNet-50's convolutions (torchvision's 4.09 GFLOPS includes the fc)
    assert net.total.flops == 2 * 256 * 4_087_136_256
    assert net.images_per_s == pytest.approx(256 / net.seconds)


def test_network_summary_figures() -> None:
    """ResNet-50 fp16 on an H100 as the README states it, and its batch-1 bytes taken apart by hand.

    At batch 1 the weights and the BatchNorm scale/shift are read once per layer: 2 bytes per conv weight
    and 4 bytes for each BN weight and bias, so weights / 2 + affine / 4 must be torchvision's 25,557,032
    parameters less the classifier's 2048·1000 + 1000 = 2,049,000.
    """
    big = roofline.network_bound(roofline.resnet_layers("resnet50", 256), device="h100-sxm")
    assert big.seconds == pytest.approx(4.682e-3, rel=1e-3) and big.images_per_s == pytest.approx(54_675, rel=1e-4)
    assert sum(b.limit == "memory" for _, b in big.layers) == 37
    small = roofline.network_bound(roofline.resnet_layers("resnet50", 1), device="h100-sxm")
    assert small.seconds == pytest.approx(30.44e-6, rel=1e-3) and sum(b.limit == "memory" for _, b in small.layers) == 50
    parts = {k: sum(x.bytes_moved()[k] for x, _ in small.layers) for k in ("weights", "affine")}
    assert parts["weights"] / 2 + parts["affine"] / 4 == 25_557_032 - 2_049_000
    assert small.total.bytes == sum(x.bytes for x, _ in small.layers)
    assert small.seconds >= small.total.bytes / 3.35e12  # no layer is faster than its own traffic


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100", "h100-sxm"), ("NVIDIA H100 PCIe", None),
    ("NVIDIA H100 NVL", None), ("NVIDIA H200", "h200"), ("NVIDIA H200 NVL", None), ("NVIDIA GH200 480GB", None),
    ("NVIDIA A100-SXM4-80GB", "a100"), ("NVIDIA A100 80GB PCIe", "a100"), ("AMD Instinct MI300X", "mi300x"),
    ("AMD Instinct MI300X VF", "mi300x"), ("AMD Instinct MI250X", None), ("NVIDIA GeForce RTX 4090", None),
    ("", None), (None, None),
])
def test_device_for_gpu_names(name: str | None, key: str | None) -> None:
    """torch.cuda.get_device_name's spellings -> a DEVICES key; another form factor of a chip gets none."""
    assert roofline.device_for(name) == key
    assert roofline.device_for(name.lower() if name else name) == key


def test_every_gpu_name_rule_has_its_device() -> None:
    assert {key for _, _, key in roofline.GPU_NAMES} == set(roofline.DEVICES)


def test_peaks_are_checked() -> None:
    layer = _layer("resnet50", 1, "conv1")
    with pytest.raises(ValueError, match="unknown device 'h300'"):
        roofline.layer_bound(layer, device="h300")
    with pytest.raises(ValueError, match="positive flops"):
        roofline.layer_bound(layer, flops=989e12)
    with pytest.raises(ValueError, match="unknown model"):
        roofline.resnet_layers("vgg16", 1)
    # explicit peaks override the table's
    assert roofline.layer_bound(layer, device="mi300x", bandwidth=1e12).memory_s == pytest.approx(layer.bytes / 1e12)


@pytest.mark.parametrize("model", ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2"])
def test_layer_list_matches_torchvision(model: str) -> None:
    """Names, shapes and input sizes of every Conv2d, from forward hooks on a meta-device model."""
    net = getattr(torchvision.models, model)(weights=None).eval().to("meta")
    seen = {}

    def hook(name):
        def record(mod, inp, out):
            seen[name] = (mod, inp[0].shape)
        return record

    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook(name))
    with torch.no_grad():
        net(torch.empty(2, 3, 224, 224, device="meta"))
    ours = roofline.resnet_layers(model, 2)
    assert [x.name for x in ours] == list(seen)
    for x in ours:
        m, shape = seen[x.name]
        assert (x.c, x.k, x.r, x.s, x.stride, x.padding, x.groups) == (
            m.in_channels, m.out_channels, *m.kernel_size, m.stride[0], m.padding[0], m.groups), x.name
        assert (x.n, x.c, x.h, x.w) == tuple(shape), x.name
    assert all(x.residual == (x.name.endswith("conv3" if "18" not in model else "conv2")) for x in ours)
    assert all(x.relu != x.name.endswith("downsample.0") for x in ours)
