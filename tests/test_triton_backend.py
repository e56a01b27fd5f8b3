"""The triton backend: ResNets converted to rbench_kernels calls, their logits against eager, and the gate.

Three kinds of test, cheapest first:
- structure and wiring: every ResNet-family model converted on the meta device (one kernel per
  convolution); then, with `rbench_kernels`' functions swapped for `rbench_kernels.reference` (plain
  PyTorch, fast), what is fused, in which order and layout, for each structural variant of the
  family, with BatchNorm statistics randomised so that a wrong fold shows;
- the gate: a deliberately wrong kernel result becomes `incorrect`, with the figure and no timing;
- whole networks on the Triton kernels (the interpreter on a CPU, the GPU when there is one):
  ResNet-18, ResNet-50 and ResNeXt-50 at 32 px, batch 2, in fp32 and fp16 against eager fp32, and
  one complete `runner.execute` of a triton case that ends `ok`. These are the slow ones.
"""

import gc
import sys
import types
import weakref
from pathlib import Path

import pytest
import torch
import torchvision

import rbench_kernels
from rbench import spec
from rbench.hw import detect, host
from rbench.run import backends, isolation, models, runner, triton_backend
from rbench.spec import Case, Policy

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# One warm-up pass and one timed pass: under the interpreter every pass of a network is slow.
ONE_PASS = Policy(warmup_iters=1, warmup_s=0.0, min_iters=1, min_s=0.0, max_s=600.0, timeout_s=1800)


def case(model="resnet18", precision="fp32", backend="triton", mode="inference", batch_size=2, image_size=32):
    return Case(model, batch_size, image_size, precision, backend, mode, "channels_last", DEVICE)


def executor():
    return isolation.InProcess(DEVICE)


class Recorder:
    """Stands in for the kernels: records each call, then computes it with `rbench_kernels.reference`."""

    def __init__(self, monkeypatch, wrong_conv1x1=None):
        self.calls = []
        self.wrong_conv1x1 = wrong_conv1x1
        for name in ("conv_bn_act", "conv1x1_bn_act"):
            monkeypatch.setattr(rbench_kernels, name, self._wrap(name))
        monkeypatch.setattr(rbench_kernels, "add_act", self._add_act)

    def _wrap(self, name):
        truth = getattr(rbench_kernels.reference, name)

        def kernel(x, weight, scale, shift, **kw):
            call = dict(kernel=name, x=x, weight=weight, scale=scale, shift=shift, **kw)
            if name == "conv1x1_bn_act" and self.wrong_conv1x1:
                call["out"] = self.wrong_conv1x1(truth, x, weight, scale, shift, **kw)
            else:
                call["out"] = truth(x, weight, scale, shift, **kw)
            self.calls.append(call)
            return call["out"]

        return kernel

    @staticmethod
    def _add_act(*args, **kwargs):
        raise AssertionError("add_act must not be called: residual adds are fused into the last conv of a block")


def randomise_batchnorm(model, seed=0):
    """Non-trivial running statistics and affine parameters (fresh models have mean 0, var 1, gamma 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            k = bn.num_features
            bn.running_mean.copy_(torch.randn(k, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(k, generator=g) + 0.5)
            bn.weight.copy_(torch.rand(k, generator=g) * 0.5 + 0.5)
            bn.bias.copy_(torch.randn(k, generator=g) * 0.1)
    return model


def eval_model(name, dtype=torch.float32):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    return model.eval().to(device=DEVICE, dtype=dtype, memory_format=torch.channels_last)


def images(dtype=torch.float32, batch_size=2, image_size=32):
    x = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    return x.to(device=DEVICE, dtype=dtype, memory_format=torch.channels_last)


# What the backend accepts.


def test_resnet_family_is_supported_and_other_models_get_a_reason():
    assert all(triton_backend.unsupported_model(m) is None for m in models.RESNET_FAMILY)
    reason = triton_backend.unsupported_model("vgg16")
    assert "vgg16" in reason and "resnet50" in reason


def test_training_mode_is_recorded_unsupported_not_faked():
    record = executor().run(case(mode="training"), ONE_PASS)
    assert record["status"] == "unsupported"
    assert "inference only" in record["reason"]
    assert record["throughput_ips"] is None


@pytest.mark.parametrize("precision", ["amp_fp16", "amp_bf16"])
def test_autocast_precisions_are_unsupported_with_the_supported_list(precision):
    record = executor().run(case(precision=precision), ONE_PASS)
    assert record["status"] == "unsupported"
    assert all(p in record["reason"] for p in triton_backend.PRECISIONS)


def test_without_a_gpu_triton_cases_need_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = backends.REGISTRY["triton"].unsupported(case(), host.CpuDevice())
    assert "TRITON_INTERPRET=1" in reason


@pytest.mark.parametrize("kind, props, reason", [
    ("rocm", {"gcnArchName": "gfx942:sramecc+:xnack-"}, None),
    ("rocm", {"gcnArchName": "gfx90a:sramecc+:xnack-"}, "no Triton configs for gfx90a"),  # an MI250X
    ("rocm", {"gcnArchName": "gfx1100"}, "no Triton configs for gfx1100"),  # a Radeon RX 7900
    ("cuda", {"major": 9, "minor": 0}, None),
    ("cuda", {"major": 8, "minor": 6}, None),
    ("cuda", {"major": 7, "minor": 0}, "compute capability 8.0 or newer; Test GPU is 7.0"),  # a V100
])
def test_the_gpus_own_target_decides_whether_triton_cases_run(monkeypatch, kind, props, reason):
    """Every ROCm GPU used to count as gfx942, whose configs Triton rejects elsewhere (issue 18, item 8)."""
    from rbench.hw import amd, base, nvidia

    monkeypatch.setattr(base, "cuda_properties", lambda index: types.SimpleNamespace(**props))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Test GPU")
    device = {"rocm": amd.RocmDevice, "cuda": nvidia.CudaDevice}[kind](0)
    got = backends.REGISTRY["triton"].unsupported(case(precision="fp16"), device)
    if reason is None:
        assert got is None
    else:
        assert reason in got and ("gfx942" in got or kind == "cuda")


def test_a_gpu_family_without_configs_is_unsupported_with_the_reason():
    from rbench.hw import intel

    reason = backends.REGISTRY["triton"].unsupported(case(precision="fp16"), type("Xpu", (intel.XpuDevice,), {
        "name": "Intel Data Center GPU Max 1550"})())
    assert "no Triton configs for xpu (Intel Data Center GPU Max 1550)" in reason


def test_without_the_kernel_library_triton_cases_are_unsupported_with_the_reason(monkeypatch):
    from rbench.hw import base, nvidia

    monkeypatch.setitem(sys.modules, "rbench_kernels._common", None)  # importing it raises ImportError
    monkeypatch.setattr(base, "cuda_properties", lambda index: types.SimpleNamespace(major=9, minor=0))
    reason = backends.REGISTRY["triton"].unsupported(case(precision="fp16"), nvidia.CudaDevice(0))
    assert reason.startswith("rbench_kernels cannot be imported here")


def test_convert_refuses_a_model_in_training_mode():
    model = eval_model("resnet18").train()
    with pytest.raises(triton_backend.ConversionError, match="training mode"):
        triton_backend.convert(model)


def test_convert_refuses_unexpected_structure():
    with pytest.raises(triton_backend.ConversionError, match="expected a torchvision ResNet"):
        triton_backend.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)).eval())
    model = eval_model("resnet18")
    model.layer2[0].relu = torch.nn.GELU()
    with pytest.raises(triton_backend.ConversionError, match=r"model\.layer2\.0\.relu: expected nn\.ReLU"):
        triton_backend.convert(model)
    model = eval_model("resnet18")
    model.layer1[1].extra = torch.nn.Dropout()
    with pytest.raises(triton_backend.ConversionError, match=r"model\.layer1\.1.*extra"):
        triton_backend.convert(model)


# Structure and wiring.


def test_converted_model_keeps_no_reference_to_the_original():
    model = eval_model("resnet50")
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    stem_weight, layer1_weight = model.conv1.weight, model.layer1[0].conv2.weight
    converted = triton_backend.convert(model)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None, "the converted model must not keep the original alive"

    kinds = {type(m) for m in converted.modules()}
    assert not kinds & {torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.Linear, torch.nn.MaxPool2d}
    fused = [m for m in converted.modules() if isinstance(m, triton_backend.FusedConv)]
    assert len(fused) == convs == 53  # one kernel per convolution, BatchNorm and ReLU folded in
    assert len(converted.blocks) == 16 and sum(b.downsample is not None for b in converted.blocks) == 4
    assert list(converted.parameters()) == []
    for f in fused:
        assert f.scale.dtype == f.shift.dtype == torch.float32
        assert f.weight.dtype == torch.float32
        if f.pointwise:
            assert f.weight.dim() == 2 and f.weight.is_contiguous()
        else:
            assert f.weight.is_contiguous(memory_format=torch.channels_last)
    # A channels_last model's weights already have the kernels' layout: shared, not copied; only the stem's
    # 3-channel weight is copied, padded with a zero channel to the 4 its input is padded to.
    assert converted.blocks[0].convs[1].weight.data_ptr() == layer1_weight.data_ptr()
    assert converted.stem.pad_to == 4 and converted.stem.weight.shape == (64, 4, 7, 7)
    assert torch.equal(converted.stem.weight[:, :3], stem_weight) and not converted.stem.weight[:, 3].any()


@pytest.mark.parametrize("name", models.RESNET_FAMILY)
def test_every_resnet_converts_to_one_kernel_per_convolution(name):
    """On the meta device: no memory, no arithmetic, only the structure of each family member."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None)
    model = model.eval().to(memory_format=torch.channels_last)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    stages = [b for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for b in stage]
    converted = triton_backend.convert(model)
    fused = [m for m in converted.modules() if isinstance(m, triton_backend.FusedConv)]
    assert len(fused) == len(convs) and len(converted.blocks) == len(stages)
    assert [f.groups for f in fused if not f.pointwise] == [c.groups for c in convs if c.kernel_size != (1, 1)]
    assert sum(f.pointwise for f in fused) == sum(c.kernel_size == (1, 1) for c in convs)


# The structural variants of the family: basic blocks, bottlenecks, wide bottlenecks, grouped 3x3.
@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "wide_resnet50_2", "resnext50_32x4d"])
def test_every_resnet_is_fused_per_block_in_channels_last(name, monkeypatch):
    """Reference kernels stand in for the Triton ones: this checks the conversion, not the kernels."""
    models.set_precision_flags("fp32")
    model = randomise_batchnorm(eval_model(name))
    x = images()
    with torch.inference_mode():
        expected = model(x)
    blocks = [b for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for b in stage]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    converted = triton_backend.convert(model)
    del model

    kernels = Recorder(monkeypatch)
    with torch.inference_mode():
        got = converted(x)
    error = runner.relative_error(got, expected)
    assert error < 1e-5, f"{name}: converted logits differ from eager by {error:.3g} (relative norm)"

    calls = kernels.calls
    assert len(calls) == len(convs)
    for c in calls:  # activations go from kernel to kernel in NHWC: no layout round trips
        assert c["x"].is_contiguous(memory_format=torch.channels_last), f"{name}: NCHW input to {c['kernel']}"
        if c.get("residual") is not None:
            assert c["residual"].is_contiguous(memory_format=torch.channels_last)
    assert calls[0]["kernel"] == "conv_bn_act" and calls[0]["stride"] == (2, 2) and calls[0]["padding"] == (3, 3)
    pointwise = [c for c in calls if c["kernel"] == "conv1x1_bn_act"]
    assert len(pointwise) == sum(m.kernel_size == (1, 1) for m in convs)
    grouped = [c for c in calls if c.get("groups", 1) > 1]
    assert len(grouped) == sum(m.groups > 1 for m in convs)

    # Each block: [downsample (no ReLU)], its convs with ReLU, the last one with residual + ReLU.
    i = 1
    for block in blocks:
        n_convs = 3 if isinstance(block, torchvision.models.resnet.Bottleneck) else 2
        block_input = shortcut = calls[i]["x"]
        if block.downsample is not None:
            ds = calls[i]
            assert ds["kernel"] == "conv1x1_bn_act" and ds["relu"] is False and ds.get("residual") is None
            assert ds["stride"] == block.downsample[0].stride[0]
            shortcut = ds["out"]
            i += 1
            assert calls[i]["x"] is block_input, "the shortcut is computed first, from the block's input"
        main = calls[i:i + n_convs]
        assert [c["relu"] for c in main] == [True] * n_convs
        assert [c.get("residual") is not None for c in main] == [False] * (n_convs - 1) + [True]
        assert main[-1]["residual"] is shortcut, "the block's last conv adds the shortcut in its epilogue"
        i += n_convs
    assert i == len(calls)


def test_tf32_reaches_every_kernel_call(monkeypatch):
    converted = triton_backend.convert(eval_model("resnet18"), allow_tf32=True)
    kernels = Recorder(monkeypatch)
    with torch.inference_mode():
        converted(images())
    assert kernels.calls and all(c["allow_tf32"] is True for c in kernels.calls)


# The correctness gate.


def test_gate_turns_a_wrong_kernel_result_into_incorrect_and_does_not_time(monkeypatch):
    """A conv1x1 kernel that forgets the residual: the case is `incorrect`, with the figure, untimed.

    The 3x3 convolutions run on the reference kernels here to keep the test fast; only the gate is
    under test.
    """

    def forgets_residual(truth, x, weight, scale, shift, residual=None, **kw):
        return truth(x, weight, scale, shift, **kw)

    kernels = Recorder(monkeypatch, wrong_conv1x1=forgets_residual)
    record = executor().run(case("resnet50"), ONE_PASS)
    assert record["status"] == "incorrect", record["reason"]
    assert record["gate_tolerance"] == runner.GATE_TOLERANCE["fp32"]
    assert record["gate_error"] > record["gate_tolerance"]
    assert f"{record['gate_error']:.3g}" in record["reason"] and "eager fp32" in record["reason"]
    assert record["throughput_ips"] is None and record["samples_ms"] == [] and record["latency_ms"] is None
    assert len(kernels.calls) == 53, "only the gate's one forward pass may run: an incorrect case is not timed"


# Whole networks on the Triton kernels.


@pytest.mark.interpreter
@pytest.mark.parametrize("name, precision", [
    ("resnet18", "fp16"),
    ("resnet50", "fp32"), ("resnet50", "fp16"),
    ("resnext50_32x4d", "fp32"), ("resnext50_32x4d", "fp16"),
])  # resnet18 fp32 is proven by test_triton_case_runs_end_to_end_and_records_its_gate_figure
def test_whole_network_on_the_kernels_matches_eager_fp32(name, precision):
    c = case(name, precision)
    device = detect.detect(DEVICE)
    workload = models.build(c, device.torch_device)
    module = triton_backend.convert(workload.model, allow_tf32=False)
    error = runner.gate(module, workload, c, device)
    assert error <= runner.GATE_TOLERANCE[precision], (
        f"{c.id}: logits differ from eager fp32 by {error:.3g} (relative norm), "
        f"tolerance {runner.GATE_TOLERANCE[precision]:g}")


@pytest.mark.interpreter
def test_triton_case_runs_end_to_end_and_records_its_gate_figure():
    record = executor().run(case("resnet18", "fp32"), ONE_PASS)
    assert record["status"] == "ok", record["reason"]
    assert record["gate_tolerance"] == runner.GATE_TOLERANCE["fp32"]
    assert 0 < record["gate_error"] <= record["gate_tolerance"]
    assert record["throughput_ips"] > 0 and record["iters"] == 1
    # No CUDA graph on a CPU: the record says so and why; the host's time per forward is there as on a GPU.
    assert record["cuda_graph"] is False and "no CUDA graphs on cpu" in record["cuda_graph_reason"]
    assert record["host_ms_per_iter"] > 0


# The suite.


def test_triton_vs_torch_suite():
    suite = spec.load(Path(__file__).parents[1] / "suites" / "triton_vs_torch.yaml", models.names())
    gpu = suite.for_device("cuda").cases("cuda")
    assert {c.model for c in gpu} == set(models.RESNET_FAMILY)
    assert {c.batch_size for c in gpu} == {1, 32, 256} and {c.precision for c in gpu} == {"fp16", "bf16"}
    assert {c.backend for c in gpu} == {"eager", "compile:max-autotune", "triton", "triton:no-graph"}
    assert {c.batch_size for c in gpu if c.backend == "triton:no-graph"} == {1, 32}
    assert {c.mode for c in gpu} == {"inference"} and len(gpu) == 180 + 40

    cpu = suite.for_device("cpu")
    assert "compile" not in {c.backend_name for c in cpu.cases("cpu")}
    assert cpu.image_size <= 64 and cpu.batch_sizes == (1,)
