"""int8 / fp8 inference: rbench's quantization (scales, calibration), the quantized network, whole ResNets through the gate.

The whole-network tests run ResNet-18 and ResNet-50 at 32 px, batch 1, on the quantized Triton kernels
(the interpreter on a CPU) through `runner.execute`: the gate against eager fp32 and `top1_agreement`.
"""

import pytest
import torch
import torchvision

import rbench_kernels
from rbench.hw import host
from rbench.run import backends, isolation, models, quantize, runner, triton_quant
from rbench.spec import PRECISIONS, Case, Policy

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ONE_PASS = Policy(warmup_iters=1, warmup_s=0.0, min_iters=1, min_s=0.0, max_s=600.0, timeout_s=1800)
INT8, FP8 = torch.int8, torch.float8_e4m3fn


def case(model="resnet18", precision="int8", backend="triton", batch_size=1):
    return Case(model, batch_size, 32, precision, backend, "inference", "channels_last", DEVICE)


def test_weight_scales_are_per_output_channel_and_symmetric():
    w = torch.randn(6, 4, 3, 3)
    w[2] = 0.0
    w[3, 0, 0, 0] = -10.0
    q, s_w = quantize.quantize_weight(w, INT8)
    assert q.dtype == INT8 and s_w.shape == (6,)
    assert s_w[2] == 1.0 and (q[2] == 0).all()  # an all-zero channel
    assert s_w[3] == pytest.approx(10.0 / 127) and q[3, 0, 0, 0] == -127
    assert q.abs().amax(dim=(1, 2, 3))[[0, 1, 3, 4, 5]].eq(127).all()  # every channel uses its full range
    # the quantization error is at most half a step of the channel's own scale
    assert ((q.float() * s_w.view(-1, 1, 1, 1) - w).abs() <= s_w.view(-1, 1, 1, 1) / 2 + 1e-7).all()
    q8, s8 = quantize.quantize_weight(w, FP8)
    assert q8.dtype == FP8 and s8[3] == pytest.approx(10.0 / 448) and q8[3, 0, 0, 0].float() == -448


def test_activation_quantization_rounds_half_to_even_and_saturates():
    t = torch.tensor([0.5, 1.5, 2.5, -2.5, 300.0, -300.0, 0.0])
    assert quantize.quantize_tensor(t, 1.0, INT8).tolist() == [0, 2, 2, -2, 127, -127, 0]
    assert quantize.quantize_tensor(t, 1.0, FP8).float().tolist() == [0.5, 1.5, 2.5, -2.5, 288.0, -288.0, 0.0]
    assert quantize.quantize_tensor(torch.tensor([1e4]), 1.0, FP8).float().item() == 448.0
    assert quantize.activation_scale(254.0, INT8) == 2.0 and quantize.activation_scale(0.0, FP8) == 1.0


def test_calibration_observes_every_quantized_tensor_with_the_max_rule():
    model = models.calibrate_batchnorm(torchvision.models.resnet18(), "resnet18", 32).eval()
    observed = triton_quant.observed_tensors(model)
    # the pooled stem, 8 blocks x (conv1 + output), 3 downsamples
    assert len(observed) == 1 + 8 * 2 + 3 and observed["layer1.0.conv1"] == (model.layer1[0].bn1, True)
    amax = quantize.observe_ranges(model, observed, 32)
    assert amax == quantize.observe_ranges(model, observed, 32)  # seeded: the same scales every time
    with torch.no_grad():
        stem = [model.maxpool(model.relu(model.bn1(model.conv1(x)))) for x in quantize.calibration_batches(32, "cpu")]
    assert amax["stem"] == pytest.approx(max(float(s.abs().max()) for s in stem), rel=1e-5)
    assert all(v > 0 for v in amax.values())
    # the calibration data is not the gate's: its own seed
    gate_input = models.input_buffers(case(), torch.device("cpu"), torch.float32)[0]
    assert not torch.equal(quantize.calibration_batches(32, "cpu")[0][:1], gate_input)


def test_the_quantized_network_folds_dequantization_into_the_epilogue_scale():
    model = models.calibrate_batchnorm(torchvision.models.resnet18(), "resnet18", 32).eval().half()
    net = triton_quant.convert(model.to(memory_format=torch.channels_last), "int8", 32)
    first = net.blocks[0].convs[0]
    assert first.weight.dtype == INT8 and first.out_scale == net.scales["layer1.0.conv1"]
    _, s_w = quantize.quantize_weight(model.layer1[0].conv1.weight, INT8)
    bn_scale, _ = rbench_kernels.fold_bn(model.layer1[0].bn1)
    assert torch.allclose(first.scale, net.scales["stem"] * s_w * bn_scale, rtol=1e-6)
    assert net.blocks[0].residual_scale == net.scales["stem"]  # the identity shortcut keeps its input's scale
    assert net.blocks[2].residual_scale == net.scales["layer2.0.downsample"]
    assert net.blocks[-1].convs[-1].out_scale is None  # the last block writes fp32 for the pool
    assert net.stem.weight.dtype == torch.float16 and net.fc_weight.dtype == torch.float16  # documented fp16


def test_precisions_and_who_can_run_them(monkeypatch):
    assert {"int8", "fp8"} <= set(PRECISIONS) and set(triton_quant.PRECISIONS) <= set(runner.GATE_TOLERANCE)
    cpu = host.CpuDevice()
    for backend in ("eager", "compile"):
        reason = backends.REGISTRY[backend].unsupported(case(backend=backend), cpu)
        assert reason and "PyTorch has no int8 convolution" in reason and "torch._int_mm" in reason
    assert backends.REGISTRY["eager"].unsupported(case(precision="fp16", backend="eager"), cpu) is None
    assert "resnext50_32x4d is not one" in backends.REGISTRY["triton"].unsupported(case("resnext50_32x4d"), cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in backends.REGISTRY["triton"].unsupported(case(), cpu)


@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
def test_a_whole_resnet_in_int8_passes_the_gate(model):
    record = isolation.InProcess(DEVICE).run(case(model), ONE_PASS)
    assert record["status"] == "ok", record["reason"]
    assert record["gate_tolerance"] == runner.GATE_TOLERANCE["int8"]
    # measured 3.1 % (ResNet-18) and 4.6 % (ResNet-50): real quantization error, not a pass by zero
    assert 0.005 < record["gate_error"] <= record["gate_tolerance"]
    assert record["top1_agreement"] == 1.0 and record["throughput_ips"] > 0


def test_fp8_takes_the_encoding_of_the_gpus_tensor_cores():
    """MI300's fp8 MFMAs take e4m3 in the fnuz encoding only; everywhere else fp8 is OCP's e4m3fn."""
    assert quantize.quant_dtype("fp8", "gfx942") == torch.float8_e4m3fnuz
    assert quantize.quant_dtype("fp8", "sm_90") == quantize.quant_dtype("fp8", None) == FP8
    assert quantize.quant_dtype("int8", "gfx942") == INT8
    assert quantize.QMAX[torch.float8_e4m3fnuz] == float(torch.finfo(torch.float8_e4m3fnuz).max) == 240.0
    with pytest.raises(ValueError, match="does not encode precision 'int8'"):
        triton_quant.convert(torchvision.models.resnet18().eval(), "int8", 32, dtype=torch.float8_e4m3fnuz)


def test_a_whole_resnet_in_fp8_fnuz_passes_the_gate_and_the_record_names_its_encoding(monkeypatch):
    """On a device that says it is gfx942 (the CPU standing in, under the interpreter): fnuz operands end to end."""
    monkeypatch.setattr(host.CpuDevice, "gpu_target", lambda self: "gfx942")
    record = isolation.InProcess("cpu").run(Case("resnet18", 1, 32, "fp8", "triton", "inference", "channels_last",
                                                 "cpu"), ONE_PASS)
    assert record["status"] == "ok", record["reason"]
    assert record["quant_dtype"] == "float8_e4m3fnuz"
    # 3 mantissa bits as e4m3fn (measured here: e4m3fn 10.3 %, fnuz 9.2 %): real quantization error, within tolerance
    assert 0.01 < record["gate_error"] <= runner.GATE_TOLERANCE["fp8"] and record["top1_agreement"] == 1.0
