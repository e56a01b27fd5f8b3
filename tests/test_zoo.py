"""The papers' networks (rbench.run.zoo): their cost against the papers, eager and compiled runs, and the
triton backend's conversion of every one of them.

- cost: every network's parameters and FLOPs equal its registry metadata (what `rbench list` shows),
  and the papers' figures within the papers' rounding;
- every network runs eager and, converted for the triton backend with the kernels swapped for
  `rbench_kernels.reference` (plain PyTorch, fast), gives eager's logits with one kernel call per
  convolution; BatchNorm statistics are calibrated on the input first, as a trained network's
  would be (at random init the 1202-layer network's eval output overflows);
- the real Triton kernels (the interpreter on a CPU) on one small network per conversion path:
  option A, option B, plain, pre-activation (CIFAR and ImageNet stems), Wide, ResNeXt; fp32 and fp16;
- one network through torch.compile, and one triton case through `runner.execute` to `ok`.
"""

import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import rbench_kernels
from rbench.hw import host
from rbench.run import backends, isolation, models, runner, triton_zoo, zoo
from rbench.run.zoo import blocks, cifar, preact, resnext_cifar, wide
from rbench.spec import Case, Policy

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ONE_PASS = Policy(warmup_iters=1, warmup_s=0.0, min_iters=1, min_s=0.0, max_s=600.0, timeout_s=1800)

# The papers' parameter counts, in millions as printed. He et al. 2015 (Table 6) count every parameter;
# the Identity Mappings and ResNeXt papers count the convolutions' and the classifier's weights (their
# 10.2M and 68.1M are 10.18M and 68.06M so; with BatchNorm's scale and shift they would be 10.33M and 68.16M).
ALL, WEIGHTS = "all parameters", "conv and fc weights"
PAPER_PARAMS = {
    "cifar_resnet20": ("0.27", ALL), "cifar_resnet32": ("0.46", ALL), "cifar_resnet44": ("0.66", ALL),
    "cifar_resnet56": ("0.85", ALL), "cifar_resnet110": ("1.7", ALL), "cifar_resnet1202": ("19.4", ALL),
    "resnet50_v1": ("25.6", ALL), "resnet101_v1": ("44.5", ALL), "resnet152_v1": ("60.2", ALL),
    "preact_resnet164": ("1.7", WEIGHTS), "preact_resnet1001": ("10.2", WEIGHTS),
    "wrn_16_8": ("11.0", ALL), "wrn_28_10": ("36.5", ALL), "wrn_40_4": ("8.9", ALL),
    "resnext29_8x64d": ("34.4", WEIGHTS), "resnext29_16x64d": ("68.1", WEIGHTS),
}
# He et al. 2015, Table 1: 10^9 multiply-adds at 224 px, one decimal (their 3.8 is our 3.858 cut, not rounded).
PAPER_GMACS = {"resnet50_v1": 3.8, "resnet101_v1": 7.6, "resnet152_v1": 11.3, "plain18": 1.8, "plain34": 3.6}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Thousands of tiny convolutions on a small shared machine: two OpenMP threads spin against the load
    (measured: 12 ms per 16-channel 8x8 conv on 2 threads at load 10, 0.8 ms on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights(model):
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def cheaply_built(name):
    """ImageNet networks on the meta device (no weights); CIFAR ones on the CPU (faster to build than on meta)."""
    if zoo.REGISTRY[name].image_size == 32:
        return zoo.build(name)
    with torch.device("meta"):
        return zoo.build(name)


# The registry's metadata is held to the counters, for every network, in
# test_every_network_costs_its_metadata_runs_eager_and_converts; here it meets the papers.


@pytest.mark.parametrize("name", PAPER_PARAMS)
def test_parameters_are_the_papers(name):
    printed, counted = PAPER_PARAMS[name]
    count = zoo.REGISTRY[name].params if counted == ALL else weights(cheaply_built(name))
    decimals = len(printed.partition(".")[2])
    assert round(count / 1e6, decimals) == float(printed), f"{name}: {count / 1e6:.3f}M ({counted}), paper {printed}M"


@pytest.mark.parametrize("name", PAPER_GMACS)
def test_multiply_adds_are_the_papers(name):
    gmacs = zoo.REGISTRY[name].gmacs
    assert abs(gmacs - PAPER_GMACS[name]) < 0.06, f"{name}: {gmacs:.3f} GMACs, paper {PAPER_GMACS[name]}"


def test_v1_moves_the_stride_and_costs_less_than_torchvision_v1_5():
    first = cheaply_built("resnet50_v1").layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
    v15 = torchvision.models.get_model_weights("resnet50").DEFAULT.meta
    assert zoo.REGISTRY["resnet50_v1"].params == v15["num_params"]
    assert zoo.REGISTRY["resnet50_v1"].gmacs < v15["_ops"] * 0.95


def test_plain_nets_are_the_residual_nets_without_shortcut_weights():
    with torch.device("meta"):
        resnet18 = torchvision.models.resnet18(weights=None)
    projections = sum(p.numel() for m in resnet18.modules() if isinstance(m, torchvision.models.resnet.BasicBlock)
                      and m.downsample is not None for p in m.downsample.parameters())
    assert models.count_params(cheaply_built("plain18")) == models.count_params(resnet18) - projections
    # Option A shortcuts have no parameters: the CIFAR ResNet and its plain twin weigh the same.
    assert models.count_params(cheaply_built("cifar_plain56")) == models.count_params(cheaply_built("cifar_resnet56"))
    assert models.count_params(cheaply_built("cifar_resnet56_b")) > models.count_params(cheaply_built("cifar_resnet56"))


def test_registry_entries_are_listed_after_the_resnet_family_with_size_and_classes():
    names = models.names()
    zoo_names = tuple(zoo.REGISTRY)
    assert names[len(models.RESNET_FAMILY): len(models.RESNET_FAMILY) + len(zoo_names)] == zoo_names
    assert len(set(names)) == len(names)
    for name, entry in zoo.REGISTRY.items():
        cifar = entry.image_size == 32
        assert entry.num_classes == (10 if cifar else 1000) and entry.family.paper
        assert models.default_image_size(name) == entry.image_size and models.num_classes(name) == entry.num_classes
    with pytest.raises(ValueError, match="unknown model 'resnet21'.*cifar_resnet20"):
        zoo.build("resnet21")


def calibrated(name, image_size, seed=0):
    """The network with BatchNorm running statistics of this input (momentum None: exactly the batch's), eval."""
    torch.manual_seed(seed)
    model = zoo.build(name).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    x = x.to(memory_format=torch.channels_last)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.momentum = None
        bn.reset_running_stats()
    with torch.no_grad():
        model.train()(x)
    return model.eval(), x


@pytest.fixture
def reference_kernels(monkeypatch):
    """The kernels swapped for rbench_kernels.reference; returns the list of calls (kernel names)."""
    calls = []
    for name in ("conv_bn_act", "conv1x1_bn_act"):
        def kernel(*args, _truth=getattr(rbench_kernels.reference, name), _name=name, **kw):
            calls.append(_name)
            return _truth(*args, **kw)
        monkeypatch.setattr(rbench_kernels, name, kernel)
    monkeypatch.setattr(rbench_kernels, "add_act", lambda *a, **k: pytest.fail("add_act: adds are fused into convs"))
    return calls


@pytest.mark.parametrize("name", zoo.REGISTRY)
def test_every_network_costs_its_metadata_runs_eager_and_converts(name, reference_kernels):
    entry = zoo.REGISTRY[name]
    model, x = calibrated(name, 8 if entry.image_size == 32 else 32)
    assert models.count_params(model) == entry.params
    cifar = entry.image_size == 32  # a real pass is cheap at 32 px; at 224 px the meta device is
    flops = counted_flops(model, 32) if cifar else models.count_flops(model, entry.image_size)
    assert round(flops / 2e9, 3) == entry.gmacs
    with torch.no_grad():
        eager = model(x)
        got = triton_zoo.convert(model)(x)
        assert got.shape == (2, entry.num_classes) and torch.isfinite(eager).all()
        if runner.relative_error(got, eager) > 1e-5:
            # As close to float64 as eager fp32 is: deep random networks amplify rounding (eager's own error
            # is 3e-4 for resnet101_v1 and 9e-3 for preact_resnet1001 here); wrong wiring is O(1).
            truth = copy.deepcopy(model).double()(x.double())
            own = runner.relative_error(eager, truth)
            assert runner.relative_error(got, truth) <= 3 * own + 1e-6, f"eager fp32 is off by {own:.2g}"
    assert len(reference_kernels) == sum(isinstance(m, nn.Conv2d) for m in model.modules())


def counted_flops(model, image_size):
    """`models.count_flops`' counter on a real forward pass on the CPU: the same total (the counter reads
    shapes), in a tenth of the time for the 1000-layer networks, whose meta-device BatchNorm is slow."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["cifar_resnet20_b", "preact_resnet18", "wrn_16_8", "resnext29_8x64d"])
def test_the_counter_on_a_real_pass_is_count_flops(name):
    model = zoo.build(name)
    assert counted_flops(model, 32) == models.count_flops(model, 32)


def tiny_nets():
    """One small network per conversion path, from the registry's builders and blocks, one block per stage."""
    first = [True]

    def preact_imagenet_block(cin, cout, stride):
        is_first, first[0] = first[0], False
        return blocks.PreActBlock(cin, cout, stride, preact=not is_first)

    def cifar_like(block, widths):
        return blocks.ZooNet(blocks.cifar_stem(16), blocks.stages(block, 16, widths, (1,) * len(widths),
                                                                  (1, 2, 2)[: len(widths)]), widths[-1], 10)

    return {
        "option A (CIFAR ResNet-8)": cifar.cifar_net(8, cifar.basic("A")),
        "option B (CIFAR ResNet-8)": cifar.cifar_net(8, cifar.basic("B")),
        "plain (CIFAR plain-8)": cifar.cifar_net(8, blocks.PlainBlock),
        "preact bottleneck, CIFAR, 11 layers": preact.preact_cifar(11),
        "preact basic, ImageNet stem": blocks.ZooNet(blocks.imagenet_stem(8), blocks.stages(
            preact_imagenet_block, 8, (8, 16), (2, 1), (1, 2)), 16, 10, final_norm=True),
        "WRN-10-1": wide.wrn(10, 1),
        "ResNeXt 4x4d, grouped 3x3": cifar_like(resnext_cifar.block(4, 4), (64, 128)),
    }


PATHS = [(label, torch.float32, 5e-5) for label in tiny_nets()] + [
    ("option A (CIFAR ResNet-8)", torch.float16, 1e-2), ("preact bottleneck, CIFAR, 11 layers", torch.float16, 1e-2)]


@pytest.mark.interpreter
@pytest.mark.parametrize("label, dtype, tolerance", PATHS)
def test_each_conversion_path_on_the_triton_kernels(label, dtype, tolerance):
    """The real kernels (interpreter on a CPU) against eager fp32, batch 1 at 8 px (16 px for the max-pool stem)."""
    torch.manual_seed(0)
    model = tiny_nets()[label].eval().to(device=DEVICE, memory_format=torch.channels_last)
    size = 16 if "ImageNet" in label else 8
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        got = triton_zoo.convert(model.to(dtype))(x.to(dtype))
    error = runner.relative_error(got, expected)
    assert error < tolerance, f"{label} in {dtype}: relative error {error:.3g}"


def test_a_triton_case_of_a_papers_network_ends_ok_through_the_gate(reference_kernels):
    case = Case("cifar_resnet20", 1, 32, "fp32", "triton", "inference", "channels_last", DEVICE)
    record = isolation.InProcess(DEVICE).run(case, ONE_PASS)
    assert record["status"] == "ok", record["reason"]
    assert record["gate_error"] < 5e-5 and record["params"] == zoo.REGISTRY["cifar_resnet20"].params
    assert reference_kernels  # the backend ran the network on the (reference) kernels


def test_the_triton_backend_names_what_it_runs(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for name in zoo.REGISTRY:
        case = Case(name, 1, 32, "fp16", "triton", "inference", "channels_last", "cpu")
        assert backends.REGISTRY["triton"].unsupported(case, host.CpuDevice()) is None
    reason = triton_zoo.unsupported_model("vgg16")
    assert "vgg16" in reason and "papers' networks" in reason
    with pytest.raises(triton_zoo.ConversionError, match="no triton conversion for Sequential"):
        net = blocks.ZooNet(blocks.cifar_stem(4), nn.Sequential(nn.Sequential(nn.Sequential(nn.Identity()))), 4, 10)
        triton_zoo.convert(net.eval())


def test_one_small_network_compiles():
    model, x = calibrated("cifar_resnet20", 16)
    with torch.no_grad():
        expected = model(x)
        got = torch.compile(model)(x)
    assert runner.relative_error(got, expected) < 1e-5
