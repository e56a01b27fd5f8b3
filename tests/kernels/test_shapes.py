"""The shared shape list really holds every distinct convolution of ResNet-18 and ResNet-50."""

import pytest
import torch
import torchvision
from kernel_cases import AWKWARD_SHAPES, RESNET_SHAPES


def _geometries(model: torch.nn.Module) -> set[tuple]:
    out = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.kernel_size[0] == m.kernel_size[1] and m.stride[0] == m.stride[1]
            out.add((m.in_channels, m.out_channels, *m.kernel_size, m.stride[0], m.padding[0], m.dilation[0], m.groups))
    return out


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_every_resnet_conv_is_in_the_list(name: str) -> None:
    model = getattr(torchvision.models, name)(weights=None)
    listed = {s.geometry() for s in RESNET_SHAPES}
    missing = _geometries(model) - listed
    assert not missing, f"{name} convolutions missing from RESNET_SHAPES: {sorted(missing)}"


def test_list_has_no_strangers_and_covers_the_awkward_cases() -> None:
    real = _geometries(torchvision.models.resnet18(weights=None)) | _geometries(torchvision.models.resnet50(weights=None))
    assert {s.geometry() for s in RESNET_SHAPES} <= real
    names = {s.name for s in RESNET_SHAPES + AWKWARD_SHAPES}
    assert len(names) == len(RESNET_SHAPES) + len(AWKWARD_SHAPES), "shape names must be unique"
    shapes = AWKWARD_SHAPES + RESNET_SHAPES
    assert any(s.c % 16 and s.k % 16 for s in shapes), "channels and K not multiples of a block"
    assert any(s.h == s.w == 1 for s in shapes), "1x1 images"
    assert any(s.stride == 2 and s.h % 2 for s in shapes), "odd sizes with stride 2"
    assert any(s.padding == 3 and s.r == 7 for s in shapes), "the 7x7 stem, padding 3"
    assert any(s.dilation == 2 for s in shapes), "dilation 2"
    assert {s.c // s.groups for s in shapes if s.groups == 32} >= {4, 8, 16, 32}, "ResNeXt groups=32 widths"
