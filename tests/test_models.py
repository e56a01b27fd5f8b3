"""FLOP and parameter counts against torchvision's published metadata for the ResNet family; realistic
activation statistics (calibrated BatchNorm) in fp16 and bf16; the rotated input memory."""

import dataclasses

import pytest
import torch
import torchvision

from rbench.run import models, runner
from rbench.spec import Case


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
    case = Case("resnet18", 2, 32, "fp32", "eager", "inference", "channels_last", "cpu")
    a = models.input_buffers(case, torch.device("cpu"), torch.float32)
    b = models.input_buffers(case, torch.device("cpu"), torch.float32)
    assert len(a) >= 2 and not torch.equal(a[0], a[1])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(x.is_contiguous(memory_format=torch.channels_last) and x.shape == (2, 3, 32, 32) for x in a)


@pytest.mark.parametrize("batch", [1, 8, 32, 64, 128, 256])
def test_a_gpu_rotates_at_least_256_mib_of_distinct_inputs_at_every_batch(batch):
    """At batch 1 in fp16 sixteen buffers were 4.7 MiB, all of it in a 50 MB L2 (issue 18, item 5)."""
    batch_bytes = batch * 3 * 224 * 224 * 2
    count = models.rotation_count(batch_bytes, "cuda")
    assert count >= 2 and count * batch_bytes >= 256 * 2**20
    assert (count - 1) * batch_bytes < 256 * 2**20 or count == 2  # no more than it takes


def test_rotated_inputs_are_distinct_aligned_slices_of_one_bounded_buffer():
    case = Case("resnet18", 1, 75, "fp16", "eager", "inference", "channels_last", "cpu")  # an odd size
    inputs = models.input_buffers(case, torch.device("cpu"), torch.float16)
    batch_bytes, aligned = 3 * 75 * 75 * 2, -(-3 * 75 * 75 * 2 // 256) * 256
    assert len(inputs) == models.rotation_count(aligned, "cpu")
    starts = [x.data_ptr() for x in inputs]
    buffers = {x.untyped_storage().data_ptr() for x in inputs}
    base, total = inputs[0].untyped_storage().data_ptr(), inputs[0].untyped_storage().nbytes()
    assert len(buffers) == 1  # one buffer ...
    assert all(b - a >= batch_bytes for a, b in zip(starts, starts[1:]))  # ... batches that do not overlap
    assert all((p - base) % models.ALIGN_BYTES == 0 for p in starts)  # the allocator aligns the base
    assert models.HOST_ROTATION_BYTES <= total <= models.HOST_ROTATION_BYTES + aligned  # bounded host memory
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in inputs)
    nchw = models.input_buffers(dataclasses.replace(case, memory_format="nchw"), torch.device("cpu"), torch.float16)
    assert nchw[0].is_contiguous() and torch.equal(nchw[0].flatten(), inputs[0].permute(0, 2, 3, 1).flatten())


def _last_stage_peak(model):
    peak = []
    model.avgpool.register_forward_hook(lambda m, args, out: peak.append(float(args[0].abs().max())))
    return peak


@pytest.fixture
def one_thread():
    """Small tensors on a shared 2-core machine: a second thread contending costs up to 20x, not half."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", models.RESNET_FAMILY)
def test_every_resnet_is_finite_and_near_fp32_in_fp16_and_bf16(name, one_thread):
    """Random-weight ResNets in eval mode with fresh BatchNorm statistics overflow fp16 (resnet152) or come
    near it; calibrated, every family member's fp16 and bf16 output is finite and within half the gate's
    tolerance of fp32, so a correct backend passes the gate (issue 18, item 4)."""
    case = Case(name, 2, 32, "fp32", "eager", "inference", "channels_last", "cpu")
    model = models.reference_model(case, torch.device("cpu")).eval()  # the gate's truth, built like the case's
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    peak = _last_stage_peak(model)
    errors = {}
    with torch.inference_mode():
        expected = model(x)
        for precision in ("fp16", "bf16"):  # fp16 first: bf16 of the fp16 weights is bf16 of the fp32 ones
            dtype = models.DTYPES[precision]
            errors[precision] = runner.relative_error(model.to(dtype)(x.to(dtype)), expected)
    assert peak[0] < 100, f"{name}: the last stage's largest activation is {peak[0]:.3g}"
    for precision, error in errors.items():
        assert error <= runner.GATE_TOLERANCE[precision] / 2, f"{name} {precision}: {error:.3g} from fp32"


def test_the_case_and_the_gates_reference_share_the_calibration():
    case = Case("resnet18", 1, 32, "fp16", "compile", "inference", "channels_last", "cpu")
    built = models.build(case, torch.device("cpu")).model
    reference = models.reference_model(case, torch.device("cpu"))
    pairs = [(a, b) for a, b in zip(built.modules(), reference.modules()) if isinstance(a, torch.nn.BatchNorm2d)]
    assert len(pairs) == 20
    for a, b in pairs:
        assert torch.equal(a.running_var.float(), b.running_var.float().to(a.running_var.dtype).float())
        assert torch.equal(b.running_mean, torch.zeros_like(b.running_mean))
        assert b.running_var.unique().numel() == 1 and float(b.running_var[0]) != 1.0  # one scale per layer
