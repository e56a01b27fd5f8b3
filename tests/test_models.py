"""FLOP and parameter counts against torchvision's published metadata for the ResNet family."""

import pytest
import torch
import torchvision

from rbench.run import models


@pytest.mark.parametrize("name", models.RESNET_FAMILY)
def test_flops_and_params_equal_torchvision_metadata(name):
    weights = torchvision.models.get_model_weights(name).DEFAULT
    with torch.device("meta"):
        model = torchvision.models.get_model(name)
    gmacs = models.count_flops(model, 224) / 2 / 1e9
    assert round(gmacs, 3) == pytest.approx(weights.meta["_ops"], abs=5e-4)
    assert models.count_params(model) == weights.meta["num_params"]


def test_flops_scale_with_image_area():
    with torch.device("meta"):
        model = torchvision.models.get_model("resnet50")
    assert models.count_flops(model, 112) < models.count_flops(model, 224) / 3.5


def test_model_names_put_the_resnet_family_first():
    names = models.names()
    assert names[: len(models.RESNET_FAMILY)] == models.RESNET_FAMILY
    assert "vit_b_16" in names and "mobilenet_v3_large" in names


def test_inputs_rotate_and_are_seeded():
    from rbench.spec import Case

    case = Case("resnet18", 2, 32, "fp32", "eager", "inference", "channels_last", "cpu")
    a = models.input_buffers(case, torch.device("cpu"), torch.float32)
    b = models.input_buffers(case, torch.device("cpu"), torch.float32)
    assert len(a) == 2 and not torch.equal(a[0], a[1])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[0].is_contiguous(memory_format=torch.channels_last)
